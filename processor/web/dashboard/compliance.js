"use strict";
const ATTENTION = "failed,degraded,diverged,relapsed,offline";
// `?label=KEY=VALUE` shows one group (SPEC 10.2). Label values are data: shown as text,
// put into URLs only through encodeURIComponent.
const PARAMS = new URLSearchParams(location.search);
const LABEL = PARAMS.get("label");
const IN_GROUP = LABEL === null ? "" : `&label=${encodeURIComponent(LABEL)}`;
// `?status=S[,S...]` (the breakdown's links) lists the envoys with those statuses in
// place of "Needs attention", `&cursor=` paging on: links stay on the dashboard, never
// on the API, which wants the token the browser keeps (SPEC 10.7).
const LISTED = PARAMS.get("status");
const CURSOR = PARAMS.get("cursor");

function listLink(status, cursor) {
  const params = new URLSearchParams({status});
  if (LABEL !== null) params.set("label", LABEL);
  if (cursor) params.set("cursor", cursor);
  return `/compliance?${params}`;
}

function groupLink(key, value) {
  return `/compliance?label=${encodeURIComponent(`${key}=${value}`)}`;
}

function drawGroups(data) {
  const container = document.getElementById("groups");
  const groups = data.groups || {};
  container.replaceChildren(...Object.entries(groups).map(([key, values]) => {
    const rows = Object.entries(values).map(([value, numbers]) => {
      const percent = numbers.percent;
      const below = percent !== null && data.threshold !== null && percent < data.threshold;
      const width = percent === null ? 0 : percent;
      return el("tr", {"data-group-key": key, "data-group-value": value,
                       "data-active": numbers.active, class: below ? "below" : null},
        el("td", {class: "group-value"}, el("a", {href: groupLink(key, value)}, value)),
        el("td", {}, el("div", {class: "bar"}, el("span", {style:
          `width:${width.toFixed(1)}%;background:${below ? colour("failed") : colour("converged")}`}))),
        el("td", {class: "count"}, percentText(percent)),
        el("td", {class: "count muted"}, `${numbers.compliant} / ${numbers.active}`));
    });
    const title = el("h2", {}, "By ", el("span", {class: "group-key"}, key));
    return el("section", {class: "card", "data-group-card": key}, title,
      el("table", {class: "group-table"},
        el("thead", {}, el("tr", {}, el("th", {}, "Value"), el("th", {}),
          el("th", {class: "count"}, "Convergence"), el("th", {class: "count"}, "Compliant"))),
        el("tbody", {}, ...rows)));
  }));
}

function drawGauge(data) {
  const gauge = document.getElementById("gauge");
  const point = (fraction, radius) => {
    const angle = Math.PI * (1 - fraction);
    return [100 + radius * Math.cos(angle), 100 - radius * Math.sin(angle)];
  };
  const arc = (fraction) => {
    const [x, y] = point(fraction, 80);
    return `M 20 100 A 80 80 0 0 1 ${x.toFixed(2)} ${y.toFixed(2)}`;
  };
  const parts = [svg("path", {d: arc(1), fill: "none", stroke: "#eef1f4", "stroke-width": 18})];
  if (data.percent !== null) {
    const good = data.threshold === null || data.percent >= data.threshold;
    parts.push(svg("path", {
      d: arc(Math.max(0.002, data.percent / 100)), fill: "none", "stroke-width": 18,
      stroke: good ? "var(--converged)" : "var(--failed)", id: "gauge-value",
    }));
  }
  if (data.threshold !== null) {
    const [x1, y1] = point(data.threshold / 100, 66);
    const [x2, y2] = point(data.threshold / 100, 96);
    parts.push(svg("line", {x1, y1, x2, y2, stroke: "var(--ink)", "stroke-width": 2}));
  }
  gauge.replaceChildren(...parts);
  replace("gauge-percent", percentText(data.percent));
  replace("gauge-detail", data.percent === null
    ? "no active envoys"
    : `${data.compliant} of ${data.active} active envoys compliant`);
  const verdict = document.getElementById("verdict");
  if (data.threshold === null) {
    verdict.className = "verdict none";
    verdict.textContent = "no threshold configured";
  } else if (data.breached) {
    verdict.className = "verdict breached";
    verdict.textContent = `below the ${data.threshold}% threshold`;
  } else {
    verdict.className = "verdict";
    verdict.textContent = `at or above the ${data.threshold}% threshold`;
  }
}

function drawBreakdown(data) {
  const rows = STATUS_ORDER.map((status) => {
    const count = data.by_status[status] || 0;
    const width = data.active ? (100 * count / data.active) : 0;
    return el("tr", {"data-status": status},
      el("td", {}, el("span", {class: "dot", style: `background:${colour(status)}`}),
        el("a", {href: listLink(status)}, status.replace("_", " "))),
      el("td", {}, el("div", {class: "bar"},
        el("span", {style: `width:${width.toFixed(1)}%;background:${colour(status)}`}))),
      el("td", {class: "count", "data-count": count}, count));
  });
  rows.push(el("tr", {"data-status": "active"},
    el("td", {}, el("strong", {}, "active")), el("td", {}),
    el("td", {class: "count", "data-count": data.active}, el("strong", {}, data.active))));
  // SPEC 10.3: beside active, not in it (absent from a worker before the lifecycle).
  for (const outside of ["inactive", "revoked"]) {
    const count = data[outside] || 0;
    rows.push(el("tr", {"data-status": outside},
      el("td", {}, el("a", {href: listLink(outside)}, outside)), el("td", {}),
      el("td", {class: "count", "data-count": count}, count)));
  }
  document.querySelector("#breakdown tbody").replaceChildren(...rows);
}

function drawSparkline(data) {
  const chart = document.getElementById("sparkline");
  // Drawn in the element's own pixel width, so circles stay round and text unstretched.
  const width = Math.max(300, Math.round(chart.getBoundingClientRect().width) || 1000);
  chart.setAttribute("viewBox", `0 0 ${width} 170`);
  const left = 48, right = width - 10, top = 10, bottom = 140;
  const y = (p) => bottom - (p / 100) * (bottom - top);
  const points = data.history.map((p) => ({t: new Date(p.at).getTime(), p: p.percent}));
  const parts = [];
  for (const level of [0, 50, 100]) {
    parts.push(svg("line", {x1: left, x2: right, y1: y(level), y2: y(level), stroke: "#eef1f4"}));
    const label = svg("text", {x: left - 8, y: y(level) + 4, "text-anchor": "end", class: "axis"});
    label.textContent = `${level}%`;
    parts.push(label);
  }
  if (data.threshold !== null) {
    parts.push(svg("line", {x1: left, x2: right, y1: y(data.threshold), y2: y(data.threshold),
      stroke: "var(--failed)", "stroke-dasharray": "6 5", "stroke-width": 1.5}));
    const label = svg("text", {x: right, y: y(data.threshold) - 5, "text-anchor": "end",
      class: "axis"});
    label.textContent = `threshold ${data.threshold}%`;
    parts.push(label);
  }
  if (!points.length) {
    const empty = svg("text", {x: (left + right) / 2, y: 80, "text-anchor": "middle", class: "axis"});
    empty.textContent = "no history yet";
    parts.push(empty);
    chart.replaceChildren(...parts);
    return;
  }
  const t0 = points[0].t, t1 = points[points.length - 1].t;
  const x = (t) => t1 === t0 ? (left + right) / 2 : left + (t - t0) / (t1 - t0) * (right - left);
  let segment = [];
  const flush = () => {
    if (segment.length > 1) {
      parts.push(svg("polyline", {points: segment.join(" "), fill: "none",
        stroke: "var(--accent)", "stroke-width": 2.5, "stroke-linejoin": "round"}));
    }
    segment = [];
  };
  for (const point of points) {
    if (point.p === null) { flush(); continue; }
    segment.push(`${x(point.t).toFixed(1)},${y(point.p).toFixed(1)}`);
  }
  flush();
  const last = [...points].reverse().find((p) => p.p !== null);
  if (last) {
    parts.push(svg("circle", {cx: x(last.t), cy: y(last.p), r: 4, fill: "var(--accent)"}));
    const value = svg("text", {x: Math.min(x(last.t) + 8, right - 40), y: y(last.p) - 8,
      class: "axis"});
    value.textContent = percentText(last.p);
    parts.push(value);
  }
  const ends = t1 === t0 ? [[t0, "middle", (left + right) / 2]]
    : [[t0, "start", left], [t1, "end", right]];
  for (const [t, anchor, at] of ends) {
    const label = svg("text", {x: at, y: 162, "text-anchor": anchor, class: "axis"});
    label.textContent = when(new Date(t).toISOString());
    parts.push(label);
  }
  chart.setAttribute("data-points", String(points.length));
  chart.replaceChildren(...parts);
}

function drawAttention(list) {
  const body = document.querySelector("#attention tbody");
  if (!list.envoys.length) {
    body.replaceChildren(el("tr", {}, el("td", {colspan: 5, class: "empty"},
      LISTED === null ? "Nothing needs attention." : "No envoys with that status.")));
    return;
  }
  body.replaceChildren(...list.envoys.map((e) => el("tr", {},
    el("td", {}, el("a", {href: `/envoys/${encodeURIComponent(e.envoy_id)}`}, e.envoy_id)),
    el("td", {}, badge(e.status)),
    el("td", {title: when(e.since)}, ago(e.since) || when(e.since)),
    el("td", {title: when(e.last_seen)}, e.last_seen ? (ago(e.last_seen) || when(e.last_seen)) : "never"),
    el("td", {}, ...Object.entries(e.labels).map(([k, v]) => el("span", {class: "label"}, `${k}=${v}`))))));
  if (list.next_cursor) {
    body.append(el("tr", {}, el("td", {colspan: 5, class: "muted"},
      el("a", {href: listLink(LISTED ?? ATTENTION, list.next_cursor)}, "more…"))));
  }
}

function listQuery() {
  if (LISTED === null) return `/api/envoys?status=${ATTENTION}&limit=20${IN_GROUP}`;
  replace("attention-title", "Envoys: ", el("span", {id: "listed"}, LISTED));
  const after = CURSOR ? `&cursor=${encodeURIComponent(CURSOR)}` : "";
  return `/api/envoys?status=${encodeURIComponent(LISTED)}&limit=100${IN_GROUP}${after}`;
}

async function refresh() {
  try {
    if (LABEL === null) {
      const data = await api("/api/compliance");
      drawGauge(data);
      drawBreakdown(data);
      drawGroups(data);
      drawSparkline(data);
    } else {
      // One group: its numbers in the fleet's shape, no history.
      replace("scope", "group ", el("span", {id: "group-label", class: "label"}, LABEL), " · ",
        el("a", {href: "/compliance"}, "whole fleet"));
      document.getElementById("sparkline-card").hidden = true;
      const data = await api(`/api/compliance?label=${encodeURIComponent(LABEL)}`);
      drawGauge(data);
      drawBreakdown(data);
    }
    drawAttention(await api(listQuery()));
    stamp();
  } catch (error) {
    replace("gauge-detail", el("span", {class: "error"}, `cannot load: ${error.message}`));
  }
}

refresh();
setInterval(refresh, 10000);
