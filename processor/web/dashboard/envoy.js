"use strict";
const envoyId = decoded(location.pathname.replace(/^\/envoys\//, ""));

function drawFacts(e) {
  document.title = `Vigo · ${e.envoy_id}`;
  replace("envoy-title", e.envoy_id);
  const labels = Object.entries(e.labels);
  const facts = [
    ["Envoy", el("code", {id: "envoy-id"}, e.envoy_id)],
    ["Status", el("span", {id: "envoy-status"}, badge(e.status), " since ", when(e.since))],
    ["Last seen", e.last_seen ? `${when(e.last_seen)} (${ago(e.last_seen)})` : "never"],
    ["Check-in interval", `${e.interval_s} s`],
    ["Consecutive changed runs", el("span", {id: "consecutive"}, e.consecutive_changed_runs)],
    ["Config version", e.config_version === null
      ? el("span", {id: "config-version", class: "muted"}, "none reported")
      : el("code", {id: "config-version"}, e.config_version)],
    ["Stale", e.stale ? el("strong", {class: "error"}, "yes") : "no"],
    ["Labels", labels.length
      ? el("span", {}, ...labels.map(([k, v]) => el("span", {class: "label"}, `${k}=${v}`)))
      : el("span", {class: "muted"}, "none")],
  ];
  replace("facts", el("dl", {class: "facts"},
    ...facts.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)])));
}

function resourceList(title, items, cls, count) {
  const total = count ?? items.length;
  if (!total) return null;
  const more = total - items.length;
  return el("div", {class: "resources"}, el("span", {class: cls}, `${title} (${total}): `),
    ...items.map((id, i) => el("span", {}, i ? ", " : "", el("code", {}, id))),
    more > 0 ? el("span", {class: "muted"}, `${items.length ? ", " : ""}and ${more} more`) : null);
}

// Intentional runs (SPEC 10.1: changes under a new config_version) get a mark of their
// own, so a rollout is not read as drift.
function outcomeClass(r) {
  return r.outcome === "intentional" ? "intentional" : null;
}

function drawHistory(e) {
  const runs = e.history;
  replace("strip", ...[...runs].reverse().map((r) => el("span", {
    title: `${when(r.finished_at)}: ${r.outcome}`, "data-outcome": r.outcome,
    class: outcomeClass(r), style: `background:${colour(r.outcome)}`,
  })));
  if (!runs.length) {
    replace("timeline", el("li", {class: "empty"}, "No runs recorded yet."));
    return;
  }
  replace("timeline", ...runs.map((r) => el("li", {
    style: `--outcome:${colour(r.outcome)}`, "data-run": r.run_id, "data-outcome": r.outcome,
    class: outcomeClass(r)},
    el("div", {}, el("span", {class: "when"}, when(r.finished_at)), " · ",
      badge(r.outcome), " ",
      r.outcome === "intentional"
        ? el("span", {class: "rollout muted"}, "config rollout, not drift ")
        : null,
      el("code", {class: "muted"}, r.run_id)),
    resourceList("changed", r.changed, "muted", r.changed_count),
    resourceList("failed", r.failed, "error", r.failed_count),
    resourceList("errored modules", r.errored_modules, "error", r.errored_modules_count))));
}

async function refresh() {
  try {
    const e = await api(`/api/envoys/${encodeURIComponent(envoyId)}`);
    drawFacts(e);
    drawHistory(e);
    stamp();
  } catch (error) {
    replace("facts", el("span", {class: "error"},
      error.status === 404 ? `No envoy named “${envoyId}”.` : `cannot load: ${error.message}`));
  }
}

refresh();
setInterval(refresh, 10000);
