"use strict";
// Resources that drift (SPEC 11.3): the top resources of one kind over resources.window,
// for the fleet or the group the page shows (`?label=`, from compliance.js). Resource ids
// and modules are envoy data: text nodes only. `runs` never under-counts and over-counts
// by at most `error`.
const RESOURCE_KINDS = [
  ["changed", "changed"],
  ["failed", "failed"],
  ["non_idempotent", "non-idempotent"],
];
let resourceKind = "changed";

function drawResourceKinds() {
  const buttons = RESOURCE_KINDS.map(([kind, text]) => {
    const button = el("button", {type: "button", "data-kind": kind,
      class: kind === resourceKind ? "kind selected" : "kind",
      "aria-pressed": String(kind === resourceKind)}, text);
    button.addEventListener("click", () => {
      resourceKind = kind;
      drawResourceKinds();
      refreshResources();
    });
    return button;
  });
  document.getElementById("resource-kinds").replaceChildren(...buttons);
}

function drawResources(doc) {
  const body = document.querySelector("#resources tbody");
  const hours = Math.round(doc.window_s / 3600);
  replace("resources-window", `· last ${hours}h`);
  if (!doc.resources.length) {
    body.replaceChildren(el("tr", {}, el("td", {colspan: 5, class: "empty"},
      "No resource of this kind in the window.")));
    return;
  }
  body.replaceChildren(...doc.resources.map((r) => el("tr", {"data-resource": r.id},
    el("td", {class: "resource-id"}, r.id),
    el("td", {class: "muted"}, r.module),
    el("td", {class: "count", "data-runs": r.runs}, r.runs),
    el("td", {class: "count muted"}, r.error ? `±${r.error}` : "exact"),
    el("td", {class: "count", "data-envoys": r.envoys}, r.envoys))));
}

async function refreshResources() {
  const label = LABEL === null ? "" : `&label=${encodeURIComponent(LABEL)}`;
  try {
    drawResources(await api(`/api/resources/top?kind=${resourceKind}&limit=10${label}`));
  } catch (error) {
    const body = document.querySelector("#resources tbody");
    const text = error.status === 404 ? error.message : `cannot load: ${error.message}`;
    body.replaceChildren(el("tr", {}, el("td", {colspan: 5, class: "empty"}, text)));
  }
}

drawResourceKinds();
refreshResources();
setInterval(refreshResources, 10000);
