"use strict";
// The envoy page's "Why this status" card (SPEC 11.1), from /api/envoys/{id}/explain: the
// rule that gave the status, exactly the runs it looked at and where each was read, the
// liveness deadlines and the config versions. Text nodes only (el), never HTML from data.

const STREAK_STATUSES = ["drifted", "relapsed", "diverged"];

function runsWord(n) {
  return n === 1 ? "its last run" : `its last ${n} runs`;
}

// One clause, by the status's rule: what the CLI's first sentence says.
function whyReason(x) {
  const live = x.liveness;
  const heard = live.last_seen ? `its last check-in or run at ${when(live.last_seen)}`
    : `its enrollment at ${when(live.enrolled_at)} (it never checked in)`;
  const last = x.evidence[0];
  switch (x.status) {
    case "drifted": case "relapsed": case "diverged":
      return `${runsWord(x.consecutive_changed_runs)} changed resources`;
    case "converged":
      return last && last.intentional
        ? `its last run's changes came with a new config version (${last.config_version}): a rollout, not drift`
        : "its last run changed nothing and failed nothing";
    case "degraded": return "its last run was partial: some modules errored, the others succeeded";
    case "failed": return "every module of its last run errored";
    case "offline":
      return `nothing was heard from it after ${heard}; the deadline of 2 × ${live.interval_s} s expired at ${when(live.offline_at)}`;
    case "inactive":
      return `nothing was heard from it after ${heard}; lifecycle.deactivate_after ran out at ${when(live.inactive_at || x.since)}`;
    case "no_data": return `it was enrolled at ${when(live.enrolled_at)} and no run has been applied since`;
    case "revoked": return "an enrollment event revoked it";
    default: return x.rule.text;
  }
}

function sourceText(source) {
  const offset = source.offset === null ? "offset not kept" : `offset ${source.offset}`;
  return `read from ${source.topic} · partition ${source.partition} · ${offset}`;
}

function evidenceItem(r) {
  const src = r.source;
  return el("li", {
    style: `--outcome:${colour(r.outcome)}`, "data-evidence-run": r.run_id,
    "data-source": `${src.topic}/${src.partition}/${src.offset === null ? "" : src.offset}`,
    class: r.intentional ? "intentional" : null},
    el("div", {}, el("span", {class: "when"}, when(r.finished_at)), " · ", badge(r.outcome), " ",
      el("code", {class: "muted"}, r.run_id),
      r.config_version === null ? null
        : el("span", {class: "muted"}, " · config ", el("code", {}, r.config_version))),
    resourceList("changed", r.changed, "muted", r.changed_count),
    resourceList("failed", r.failed, "error", r.failed_count),
    resourceList("errored modules", r.module_errors, "error", r.module_errors_count),
    el("div", {class: "source muted"}, sourceText(src)));
}

function deadlineFacts(x) {
  const live = x.liveness;
  const facts = [["Last seen", live.last_seen ? `${when(live.last_seen)} (${ago(live.last_seen)})` : "never"],
    ["Enrolled", when(live.enrolled_at)]];
  if (live.offline_at !== null) {
    const past = x.status === "offline" || x.status === "inactive";
    facts.push([past ? "Went offline at" : "Goes offline at",
      `${when(live.offline_at)} (2 × ${live.interval_s} s after ${when(live.counted_from)})`]);
  }
  if (live.inactive_at !== null) {
    facts.push([x.status === "inactive" ? "Inactive since" : "Goes inactive at", when(live.inactive_at)]);
  }
  const versions = x.config_version;
  facts.push(["Config version", versions.applied === null
    ? el("span", {class: "muted"}, "none applied") : el("code", {id: "why-applied"}, versions.applied),
    versions.last_run !== null && versions.last_run !== versions.applied
      ? el("span", {class: "muted"}, " (its last run came with ", el("code", {}, versions.last_run), ")")
      : null]);
  facts.push(["Newest in the fleet", versions.newest_in_fleet === null
    ? el("span", {class: "muted"}, "not known")
    : el("code", {id: "why-newest"}, versions.newest_in_fleet)]);
  return el("dl", {class: "facts", id: "why-facts"},
    ...facts.flatMap(([term, ...values]) => [el("dt", {}, term), el("dd", {}, ...values)]));
}

function drawWhy(x) {
  const parts = [
    el("p", {id: "why-reason", class: "why-reason"}, badge(x.status), " since ", when(x.since),
      " because ", whyReason(x), "."),
    el("p", {class: "muted"}, `Rule (SPEC section ${x.rule.section}): `,
      el("span", {id: "why-rule"}, x.rule.text)),
  ];
  if (x.evidence.length) {
    const n = x.evidence.length;
    const caption = STREAK_STATUSES.includes(x.status)
      ? `The ${n} run${n === 1 ? "" : "s"} of the streak, newest first`
      : "The last applied run";
    parts.push(el("div", {class: "strip-caption muted"}, caption));
    parts.push(el("ol", {class: "timeline evidence", id: "why-evidence"}, ...x.evidence.map(evidenceItem)));
  } else {
    parts.push(el("p", {class: "muted", id: "why-no-runs"},
      "No run is evidence for this status: it comes from the enrollment and liveness below."));
  }
  if (x.streak_truncated) {
    parts.push(el("p", {class: "muted", id: "why-truncated"},
      `The streak is ${x.consecutive_changed_runs} runs long; the history holds the newest ${x.evidence.length}.`));
  }
  parts.push(deadlineFacts(x));
  replace("why", ...parts);
}

async function refreshWhy() {
  try {
    drawWhy(await api(`/api/envoys/${encodeURIComponent(envoyId)}/explain`));
  } catch (error) {
    replace("why", el("span", {class: error.status === 404 ? "muted" : "error"},
      error.status === 404 ? "No such envoy." : `cannot load: ${error.message}`));
  }
}

refreshWhy();
setInterval(refreshWhy, 10000);
