"use strict";
// Shared helpers of the dashboard pages: DOM building (text only, never HTML from data),
// status colours, time formatting and the JSON API.

const STATUS_ORDER = ["converged", "drifted", "relapsed", "diverged", "degraded", "failed",
  "offline", "no_data"];
const SVG_NS = "http://www.w3.org/2000/svg";

// Styles go through the CSSOM (node.style), never a style attribute: the pages' CSP
// (default-src 'self', SPEC 11.4) blocks inline style attributes, not the CSSOM.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  return node;
}

// decodeURIComponent throws on a malformed escape (`%E0%A4%A`): the text as it is then.
function decoded(text) {
  try {
    return decodeURIComponent(text);
  } catch (error) {
    return text;
  }
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

// The API's bearer token (SPEC 10.7), kept for this tab only. The pages carry no data
// and need none; a link may bring it in its fragment (#token=...), which never reaches
// a server or a log, and is removed from the address bar at once. A malformed one
// stops nothing: it is kept as written, and refused like any wrong token.
const TOKEN_KEY = "vigo-token";
(function tokenFromFragment() {
  const match = /^#(?:.*&)?token=([^&]*)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decoded(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
})();

// A header value is Latin-1 without controls: fetch() throws on anything else, so such
// a token is not sent (the API's 401 then asks for another one).
function sendable(token) {
  return /^[\x20-\x7e\x80-\xff]+$/.test(token);
}

function askForToken(wasWrong) {
  if (document.getElementById("token-form")) return;
  const input = el("input", {id: "token-input", type: "password", autocomplete: "off",
                             placeholder: "API token", "aria-label": "API token"});
  const form = el("form", {id: "token-form", class: "token-form"},
    el("span", {}, wasWrong ? "That token was refused. " : "This processor's API needs a token. "),
    input, " ", el("button", {type: "submit"}, "Use token"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    location.reload();
  });
  document.body.prepend(form);
}

async function api(path) {
  const headers = {Accept: "application/json"};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token && sendable(token)) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, {headers});
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (response.status === 401) askForToken(Boolean(token));
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
