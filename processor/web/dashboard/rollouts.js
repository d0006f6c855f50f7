"use strict";
// Rollouts by config_version (SPEC 11.2): the newest version of the fleet or of the group
// the page shows (`?label=`, from compliance.js), the share of active envoys on it,
// converged among them, the stuck count, and the versions. Versions are envoy data: text
// nodes only.

function rolloutShare(part, whole) {
  return whole ? `${(100 * part / whole).toFixed(1)}%` : "—";
}

function rolloutBar(part, whole, tone) {
  const width = whole ? 100 * part / whole : 0;
  return el("div", {class: "bar"},
    el("span", {style: `width:${width.toFixed(1)}%;background:${colour(tone)}`}));
}

function drawRollout(doc) {
  const active = doc.versions.reduce((sum, v) => sum + v.envoys, 0);
  const newest = doc.newest;
  const facts = document.getElementById("rollout-facts");
  const card = document.getElementById("rollout-card");
  card.dataset.stuck = String(doc.stuck);
  if (newest === null) {
    card.dataset.newest = "";
    facts.replaceChildren(el("dt", {}, "Newest"),
      el("dd", {class: "empty"}, "no envoy reports a config_version yet"));
  } else {
    card.dataset.newest = newest.version;
    const reached = (at) => at ? `${when(at)} (${ago(at)})` : "not yet";
    facts.replaceChildren(
      el("dt", {}, "Newest"),
      el("dd", {}, el("code", {id: "rollout-newest"}, newest.version),
        el("span", {class: "muted"}, ` · first seen ${ago(newest.first_seen)}`)),
      el("dt", {}, "On it"),
      el("dd", {id: "rollout-share"}, `${newest.envoys} of ${active} active envoys `,
        el("strong", {}, rolloutShare(newest.envoys, active)),
        rolloutBar(newest.envoys, active, "intentional")),
      el("dt", {}, "Converged"),
      el("dd", {id: "rollout-converged"}, `${newest.converged} of them `,
        el("strong", {}, rolloutShare(newest.converged, newest.envoys)),
        rolloutBar(newest.converged, active, "converged")),
      el("dt", {}, "50% / 90%"),
      el("dd", {class: "muted"}, `${reached(newest.reached_50_at)} / ${reached(newest.reached_90_at)}`),
      el("dt", {}, "Stuck"),
      el("dd", {id: "rollout-stuck", class: doc.stuck ? "error" : ""},
        doc.stuck ? `${doc.stuck} envoys still on an older version` : "none"));
  }
  const body = document.querySelector("#rollout-versions tbody");
  body.replaceChildren(...doc.versions.map((v) => el("tr", {"data-version": v.version},
    el("td", {}, el("code", {}, v.version)),
    el("td", {}, rolloutBar(v.envoys, active,
      newest !== null && v.version === newest.version ? "intentional" : "muted")),
    el("td", {class: "count"}, v.envoys),
    el("td", {class: "muted"}, v.first_seen ? ago(v.first_seen) : "—"))));
}

async function refreshRollout() {
  const label = LABEL === null ? "" : `?label=${encodeURIComponent(LABEL)}`;
  try {
    drawRollout(await api(`/api/rollouts${label}`));
  } catch (error) {
    const text = error.status === 404 ? error.message : `cannot load: ${error.message}`;
    document.getElementById("rollout-facts").replaceChildren(el("dd", {class: "empty"}, text));
  }
}

refreshRollout();
setInterval(refreshRollout, 10000);
