// The API client (bearer token, refresh, errors that name the field) and small DOM helpers.
"use strict";

import { t } from "./i18n.js";

const session = {
  token: sessionStorage.getItem("oximon-token"),
  refresh: sessionStorage.getItem("oximon-refresh"),
  onExpired: () => {},
};

export function setSession(token, refresh, onExpired) {
  session.token = token;
  session.refresh = refresh || null;
  if (token) sessionStorage.setItem("oximon-token", token); else sessionStorage.removeItem("oximon-token");
  if (refresh) sessionStorage.setItem("oximon-refresh", refresh); else sessionStorage.removeItem("oximon-refresh");
  if (onExpired) session.onExpired = onExpired;
}
export function token() { return session.token; }

export class ApiError extends Error {
  constructor(status, detail) {
    super(describe(detail) || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

/** A FastAPI error detail in words: "spo2: must be at most 100" rather than a JSON dump. */
function describe(detail) {
  if (!detail) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => t("field_error", { f: (d.loc || []).filter((x) => x !== "body").join("."), m: d.msg })).join("; ");
  }
  if (typeof detail === "object") return detail[document.documentElement.lang] || detail.en || JSON.stringify(detail);
  return String(detail);
}

async function tryRefresh() {
  if (!session.refresh) return false;
  const res = await fetch("/api/v1/auth/refresh", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: session.refresh }),
  }).catch(() => null);
  if (!res || !res.ok) return false;
  const body = await res.json();
  setSession(body.access_token, body.refresh_token || session.refresh);
  return true;
}

export async function api(path, { method = "GET", body, raw = false, retry = true } = {}) {
  const headers = { Authorization: `Bearer ${session.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401) {
    if (retry && (await tryRefresh())) return api(path, { method, body, raw, retry: false });
    session.onExpired();
    throw new ApiError(401, t("session_expired"));
  }
  if (!res.ok) {
    let detail = null;
    try { detail = (await res.json()).detail; } catch { detail = await res.text().catch(() => ""); }
    throw new ApiError(res.status, detail);
  }
  if (raw) return res;
  if (res.status === 204) return null;
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res.text();
}

/** h("button", {type: "button", onclick}, "text", child…) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "className") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** Replace a container's children without losing keyboard focus on an element that has a
 *  `data-focus-key` (live updates redraw tables under a keyboard user's cursor). */
export function redraw(container, ...children) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.focusKey : null;
  container.replaceChildren(...children.flat());
  if (key) container.querySelector(`[data-focus-key="${CSS.escape(key)}"]`)?.focus();
}

const ICONS = { red: "▲", amber: "●", missed: "◷", ok: "✓" };
/** A severity in words and a shape, so colour is never the only signal. */
export function badge(level) {
  return h("span", { className: `badge ${level}` }, h("span", { "aria-hidden": "true" }, ICONS[level] || ""), ` ${t(`sev_${level}`)}`);
}

/** A message for screen readers and sighted users alike (role=status), e.g. "Saved." */
export function say(el, text, isError = false) {
  el.textContent = text;
  el.classList.toggle("error", isError);
}

export function table(caption, headers, rows, className = "") {
  return h("table", { className },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows));
}

export function td(...children) { return h("td", {}, ...children); }

export function patientName(p) { return p ? `#${p.id} ${p.display_name}` : ""; }
