// oximon dashboard: log in, keep patients and alerts live (server-sent events, polling as the
// fallback), raise a new red alert so nobody can miss it, and route between the pages.
"use strict";

import { ago, browserLanguage, language, setLanguage, t } from "./i18n.js";
import { api, h, setSession, token } from "./util.js";

const $ = (sel) => document.querySelector(sel);
const POLL_MS = 5000; // without the stream
const POLL_WITH_STREAM_MS = 30000; // a safety net while the stream is up
const SPARK_MS = 5 * 60000;
const ALARM_REPEAT_MS = 20000;

const PAGES = {
  overview: () => import("./pages/overview.js"),
  alerts: () => import("./pages/alerts.js"),
  patient: () => import("./pages/patient.js"),
  rota: () => import("./pages/rota.js"),
  sms: () => import("./pages/sms.js"),
  "dead-letters": () => import("./pages/deadletters.js"),
  reports: () => import("./pages/reports.js"),
  enrol: () => import("./pages/enrol.js"),
};

// --- the live store ---------------------------------------------------------------------------

const store = {
  patients: [], alerts: [], sparklines: { patients: {}, since: null, hours: 24 },
  loaded: false, listeners: new Set(), newest: "", sparkAt: 0,
  changed() { for (const fn of this.listeners) fn(); },
};

const ctx = {
  store, me: null, prefs: { language: null, alert_sound: true },
  isAdmin: () => ctx.me?.role === "admin",
  refresh: () => refresh(),
  patient: (id) => store.patients.find((p) => p.id === Number(id)),
};

let pollTimer = null, sparkTimer = null, stream = null, streamUp = false, refreshing = null;

async function refresh() {
  if (refreshing) return refreshing;
  refreshing = (async () => {
    try {
      const [patients, alerts] = await Promise.all([
        api("/api/v1/patients?limit=1000"),
        api("/api/v1/alerts?status=unresolved&limit=1000"),
      ]);
      // New readings since the last look: the sparklines follow, at most once a minute.
      const newest = patients.reduce((m, p) => (p.last_time && p.last_time > m ? p.last_time : m), "");
      if (newest > store.newest && Date.now() - store.sparkAt > 60000) refreshSparklines();
      store.newest = newest;
      store.patients = patients;
      store.alerts = alerts;
      store.loaded = true;
      $("#updated").textContent = t("updated", { t: new Date().toLocaleTimeString(language() === "nb" ? "nb-NO" : "en-GB") });
      setLive(streamUp ? "stream" : "polling");
      alarm(alerts);
      store.changed();
    } catch (err) {
      if (err.status !== 401) setLive("offline");
      console.warn(err);
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

async function refreshSparklines() {
  store.sparkAt = Date.now();
  try {
    store.sparklines = await api("/api/v1/dashboard/sparklines?hours=24");
    store.changed();
  } catch (err) { console.warn(err); }
}

function setLive(mode) {
  $("#live").textContent = mode === "stream" ? t("live_stream")
    : mode === "polling" ? t("live_polling", { s: POLL_MS / 1000 }) : t("live_offline");
  $("#live").dataset.mode = mode;
}

function schedulePolling() {
  clearInterval(pollTimer);
  pollTimer = setInterval(refresh, streamUp ? POLL_WITH_STREAM_MS : POLL_MS);
}

// Server-sent events when the API has them; each event asks for a (throttled) refresh.
let pending = null;
function soon(ms) {
  if (pending) return;
  pending = setTimeout(() => { pending = null; refresh(); }, ms);
}

let streamRetry = null;
async function openStream() {
  clearTimeout(streamRetry);
  if (!ctx.me) return;
  let url;
  try {
    // EventSource cannot send a header: a one-minute stream token goes in the address.
    url = (await api("/api/v1/stream/token", { method: "POST" })).url;
  } catch (err) {
    if (err.status === 404 || err.status === 405) return; // an API without the stream: poll
    console.warn(err);
    streamRetry = setTimeout(openStream, 10000);
    return;
  }
  const es = new EventSource(url);
  stream = es;
  const up = () => {
    if (!streamUp) { streamUp = true; schedulePolling(); refresh(); }
    setLive("stream");
  };
  es.addEventListener("ready", up);
  es.addEventListener("reading", (ev) => {
    up();
    // Shown at once; the row's other columns follow with the next refresh.
    const r = JSON.parse(ev.data);
    const p = ctx.patient(r.patient_id);
    if (p && !r.late && (!p.last_time || r.time > p.last_time)) {
      Object.assign(p, { last_time: r.time, last_spo2: r.spo2, last_pulse: r.pulse, last_quality: r.quality });
      store.changed();
    }
    soon(5000);
  });
  es.addEventListener("alert", () => { up(); soon(100); });
  es.addEventListener("resync", () => soon(100));
  es.addEventListener("error", () => {
    // Polling carries the page while the stream is away; a new token, then a new stream.
    es.close();
    if (stream !== es) return;
    stream = null;
    streamUp = false;
    setLive("polling");
    schedulePolling();
    streamRetry = setTimeout(openStream, 5000);
  });
}

// --- a new red alert: banner, sound, tab title -----------------------------------------------

let knownRed = null; // ids of red alerts already announced
let unseen = [];
let alarmRepeat = null;
let audio = null;

function beep() {
  document.body.dataset.alarms = String(Number(document.body.dataset.alarms || 0) + 1);
  if (!ctx.prefs.alert_sound) return;
  try {
    audio = audio || new AudioContext();
    const now = audio.currentTime;
    for (const [i, f] of [880, 660, 880].entries()) {
      const o = audio.createOscillator(), g = audio.createGain();
      o.frequency.value = f;
      g.gain.setValueAtTime(0.0001, now + i * 0.25);
      g.gain.exponentialRampToValueAtTime(0.3, now + i * 0.25 + 0.02);
      g.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.25 + 0.22);
      o.connect(g).connect(audio.destination);
      o.start(now + i * 0.25);
      o.stop(now + i * 0.25 + 0.24);
    }
  } catch (err) { console.warn("no sound", err); }
}

function alarm(alerts) {
  const red = alerts.filter((a) => a.severity === "red" && a.status !== "acknowledged");
  const redIds = new Set(red.map((a) => a.id));
  const fresh = knownRed === null ? [] : red.filter((a) => !knownRed.has(a.id));
  knownRed = new Set([...(knownRed || []), ...redIds]);
  unseen = unseen.filter((a) => redIds.has(a.id)).concat(fresh);
  document.title = red.length ? `(${red.length}) ${t("sev_red")} – oximon` : "oximon";
  const pill = $("#nav-alert-count");
  pill.textContent = red.length ? t("open_alerts_n", { n: red.length }) : "";
  pill.hidden = !red.length;
  if (fresh.length) beep();
  drawAlarm();
  clearInterval(alarmRepeat);
  if (unseen.length) alarmRepeat = setInterval(beep, ALARM_REPEAT_MS);
}

function drawAlarm() {
  const box = $("#alarm");
  box.hidden = !unseen.length;
  if (!unseen.length) { box.replaceChildren(); return; }
  const items = unseen.slice(0, 3).map((a) => {
    const p = ctx.patient(a.patient_id);
    const who = p ? `#${p.id} ${p.display_name}` : `#${a.patient_id}`;
    return h("li", {}, h("a", { href: `#/patients/${a.patient_id}` }, t("new_red_for", { p: who, r: a.reason })), ` (${ago(a.opened_at)})`);
  });
  box.replaceChildren(
    h("span", { className: "alarm-icon", "aria-hidden": "true" }, "▲"),
    h("div", {}, h("strong", {}, t("new_red")), h("ul", {}, items)),
    h("a", { className: "button", href: "#/alerts" }, t("nav_alerts")),
    h("button", { type: "button", onclick: () => { unseen = []; clearInterval(alarmRepeat); drawAlarm(); } }, t("seen")),
  );
}

// --- routing --------------------------------------------------------------------------------

let current = null; // {name, module, cleanup}

function parseRoute() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [first, second] = hash.split("/");
  if (first === "patients" && second) return { name: "patient", params: { id: Number(second) } };
  if (PAGES[first]) return { name: first, params: {} };
  return { name: "overview", params: {} };
}

async function route() {
  if (!ctx.me) return;
  const { name, params } = parseRoute();
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.route === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (current?.cleanup) current.cleanup();
  const page = $("#page");
  page.replaceChildren(h("p", {}, t("loading")));
  const module = await PAGES[name]();
  const container = h("div", { className: `page page-${name}` });
  const cleanup = await module.render(ctx, container, params);
  page.replaceChildren(container);
  current = { name, cleanup };
  // Keyboard and screen-reader users land on the new page's heading.
  const heading = container.querySelector("h1");
  if (heading && document.activeElement?.closest?.("#nav, #page, body") && !container.contains(document.activeElement)) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: false });
  }
}

// --- login, language, sound -----------------------------------------------------------------

async function savePreferences(change) {
  Object.assign(ctx.prefs, change);
  try { ctx.prefs = await api("/api/v1/me/preferences", { method: "PUT", body: change }); } catch (err) { console.warn(err); }
}

function drawSound() {
  const b = $("#sound-toggle");
  b.textContent = ctx.prefs.alert_sound ? t("sound_on") : t("sound_off");
  b.setAttribute("aria-pressed", String(Boolean(ctx.prefs.alert_sound)));
}

function applyLanguage(lang) {
  setLanguage(lang);
  $("#lang-select").value = language();
  drawSound();
  if (ctx.me) {
    alarm(store.alerts);
    route();
  }
}

async function showApp() {
  ctx.me = await api("/api/v1/me");
  try { ctx.prefs = await api("/api/v1/me/preferences"); } catch { /* older API: defaults */ }
  const lang = ctx.prefs.language || localStorage.getItem("oximon-language") || browserLanguage();
  setLanguage(lang);
  $("#lang-select").value = language();
  $("#whoami").textContent = `${ctx.me.username} (${ctx.me.role})`;
  $("#login-section").hidden = true;
  for (const el of [$("#page"), $("#nav"), $("#logout"), $("#sound-toggle"), $("#status-bar")]) el.hidden = false;
  for (const el of document.querySelectorAll(".admin-only")) el.hidden = !ctx.isAdmin();
  drawSound();
  await Promise.all([refresh(), refreshSparklines()]);
  schedulePolling();
  sparkTimer = setInterval(refreshSparklines, SPARK_MS);
  openStream();
  await route();
}

function logout() {
  const refreshToken = sessionStorage.getItem("oximon-refresh");
  if (refreshToken) {
    fetch("/api/v1/auth/logout", {
      method: "POST", keepalive: true, headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: refreshToken }),
    }).catch(() => {});
  }
  setSession(null, null);
  clearInterval(pollTimer); clearInterval(sparkTimer); clearInterval(alarmRepeat);
  clearTimeout(streamRetry);
  if (stream) stream.close();
  stream = null; streamUp = false; ctx.me = null; knownRed = null; unseen = [];
  if (current?.cleanup) current.cleanup();
  current = null;
  for (const el of [$("#page"), $("#nav"), $("#logout"), $("#sound-toggle"), $("#status-bar"), $("#alarm")]) el.hidden = true;
  $("#page").replaceChildren();
  $("#login-section").hidden = false;
  $("#whoami").textContent = "";
  document.title = "oximon";
}

async function showLogin() {
  setLanguage(localStorage.getItem("oximon-language") || browserLanguage());
  $("#lang-select").value = language();
  try {
    const res = await fetch("/api/v1/auth/config");
    if (res.ok) {
      const cfg = await res.json();
      const oidc = cfg.oidc === true || cfg.oidc_enabled === true || cfg.oidc?.enabled === true;
      $("#oidc").hidden = !oidc;
      if (oidc && (cfg.oidc_login_url || cfg.oidc?.login_url)) $("#oidc-login").href = cfg.oidc_login_url || cfg.oidc.login_url;
    }
  } catch (err) { console.warn(err); }
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#login-error").textContent = "";
  if (!audio) { try { audio = new AudioContext(); } catch { /* no audio */ } } // unlocked by this click
  const res = await fetch("/api/v1/auth/token", { method: "POST", body: new URLSearchParams(new FormData(ev.target)) });
  if (!res.ok) { $("#login-error").textContent = t("wrong_password"); return; }
  const body = await res.json();
  setSession(body.access_token, body.refresh_token, logout);
  ev.target.reset();
  showApp().catch((err) => { console.error(err); logout(); });
});
$("#logout").addEventListener("click", logout);
$("#lang-select").addEventListener("change", (ev) => {
  localStorage.setItem("oximon-language", ev.target.value);
  applyLanguage(ev.target.value);
  if (ctx.me) savePreferences({ language: ev.target.value });
});
$("#sound-toggle").addEventListener("click", () => {
  savePreferences({ alert_sound: !ctx.prefs.alert_sound }).then(drawSound);
  drawSound();
});
window.addEventListener("hashchange", route);

// An OpenID Connect login comes back with the token in the address fragment.
const fragment = new URLSearchParams(location.hash.startsWith("#access_token=") ? location.hash.slice(1) : "");
if (fragment.get("access_token")) {
  setSession(fragment.get("access_token"), fragment.get("refresh_token"), logout);
  history.replaceState(null, "", location.pathname);
}
setSession(token(), sessionStorage.getItem("oximon-refresh"), logout);
showLogin();
if (token()) showApp().catch(logout);
