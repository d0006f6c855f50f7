"use strict";
// Shared helpers of the dashboard pages: DOM building (text only, never HTML from data),
// status colours, time formatting and the JSON API.

const STATUS_ORDER = ["converged", "drifted", "relapsed", "diverged", "degraded", "failed",
  "offline", "no_data"];
const SVG_NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

function colour(name) {
  return `var(--${name}, var(--muted))`;
}

function badge(status) {
  return el("span", {class: "badge", "data-status": status, style: `background:${colour(status)}`},
    status.replace("_", " "));
}

function when(iso) {
  if (!iso) return "never";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function ago(iso) {
  if (!iso) return "";
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 0) return "";
  if (seconds < 90) return `${seconds}s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)}m ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)}h ago`;
  return `${Math.round(seconds / 86400)}d ago`;
}

function percentText(percent) {
  return percent === null || percent === undefined ? "—" : `${percent.toFixed(2)}%`;
}

async function api(path) {
  const response = await fetch(path, {headers: {Accept: "application/json"}});
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const reason = body && body.error ? body.error : `HTTP ${response.status}`;
    const error = new Error(reason);
    error.status = response.status;
    throw error;
  }
  return body;
}

function replace(id, ...children) {
  const node = document.getElementById(id);
  node.replaceChildren(...children);
  return node;
}

function stamp() {
  replace("updated", `updated ${new Date().toISOString().replace("T", " ").slice(0, 19)} UTC`);
}
