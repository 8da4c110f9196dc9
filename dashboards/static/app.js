// oximon dashboard: log in, then poll the API and render patients, alerts and the SMS log.
"use strict";
const $ = (sel) => document.querySelector(sel);
let token = sessionStorage.getItem("oximon-token");
let timer = null;

async function api(path, options = {}) {
  const res = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${token}` },
  });
  if (res.status === 401) { logout(); throw new Error("session expired"); }
  if (!res.ok) throw new Error(`${res.status} ${await res.text()}`);
  return res.json();
}

function text(value) { return value === null || value === undefined ? "–" : String(value); }
function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}
function cell(row, content) { const td = document.createElement("td"); td.textContent = content; row.appendChild(td); return td; }
function badge(severity) {
  const span = document.createElement("span");
  span.className = `badge ${severity}`;
  span.textContent = severity === "red" ? "▲ RED" : "● AMBER";  // never colour alone
  return span;
}

function renderPatients(patients) {
  const body = $("#patients tbody");
  body.replaceChildren();
  for (const p of patients) {
    const tr = document.createElement("tr");
    tr.dataset.patientId = p.id;
    if (p.alert_severity) tr.className = p.alert_severity;
    cell(tr, `#${p.id} ${p.display_name}`);
    cell(tr, p.last_spo2 === null ? "–" : `${p.last_spo2}%`);
    cell(tr, p.last_pulse === null ? "–" : `${p.last_pulse}/min`);
    cell(tr, ago(p.last_time));
    cell(tr, p.device_online === null ? "–" :
      `${p.device_online ? "online" : "offline"}${p.device_battery_pct !== null ? `, ${p.device_battery_pct}%` : ""}`);
    const td = cell(tr, "");
    if (p.alert_severity) { td.appendChild(badge(p.alert_severity)); td.append(` ${p.alert_kind}`); }
    body.appendChild(tr);
  }
  $("#patient-count").textContent = `(${patients.length})`;
}

function renderAlerts(alerts, patients) {
  // An alert names the patient, not only an id a nurse would have to look up.
  const names = new Map(patients.map((p) => [p.id, p.display_name]));
  const body = $("#alerts tbody");
  // Redrawing every poll would drop keyboard focus from an Acknowledge button: put it back.
  const focusedAlertId = body.contains(document.activeElement)
    ? document.activeElement.closest("tr").dataset.alertId : null;
  body.replaceChildren();
  for (const a of alerts) {
    const tr = document.createElement("tr");
    tr.className = a.severity;
    tr.dataset.alertId = a.id;
    cell(tr, "").appendChild(badge(a.severity));
    cell(tr, names.has(a.patient_id) ? `#${a.patient_id} ${names.get(a.patient_id)}` : `#${a.patient_id}`);
    cell(tr, a.reason);
    cell(tr, ago(a.opened_at));
    cell(tr, a.status === "acknowledged" ? `taken by ${a.acknowledged_by_username}` : a.status);
    const td = cell(tr, "");
    if (a.status !== "acknowledged") {
      const btn = document.createElement("button");
      btn.type = "button";
      btn.textContent = "Acknowledge";
      btn.setAttribute("aria-label", `Acknowledge alert ${a.id} for patient ${a.patient_id}`);
      btn.addEventListener("click", async () => {
        btn.disabled = true;
        await api(`/api/v1/alerts/${a.id}/acknowledge`, { method: "POST" });
        refresh();
      });
      td.appendChild(btn);
    }
    body.appendChild(tr);
    if (String(a.id) === focusedAlertId) tr.querySelector("button")?.focus();
  }
  const red = alerts.filter((a) => a.severity === "red" && a.status !== "acknowledged").length;
  $("#alert-count").textContent = `(${alerts.length})`;
  $("#no-alerts").hidden = alerts.length > 0;
  document.title = red ? `(${red}) RED – oximon` : "oximon";
}

function renderSms(messages) {
  const list = $("#sms-log");
  list.replaceChildren();
  for (const m of messages.slice(0, 20)) {
    const li = document.createElement("li");
    li.textContent = `${new Date(m.created_at).toLocaleTimeString()} → ${m.recipient} [${m.state}] ${m.body}`;
    list.appendChild(li);
  }
}

async function refresh() {
  try {
    const [patients, alerts, sms] = await Promise.all([
      api("/api/v1/patients"),
      api("/api/v1/alerts?status=unresolved"),
      api("/api/v1/notifications?channel=sms&limit=20"),
    ]);
    renderPatients(patients);
    renderAlerts(alerts, patients);
    renderSms(sms);
    $("#updated").textContent = new Date().toLocaleTimeString();
  } catch (err) {
    console.error(err);
  }
}

async function showApp() {
  const me = await api("/api/v1/me");
  $("#whoami").textContent = `${me.username} (${me.role})`;
  $("#login-section").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  await refresh();
  timer = setInterval(refresh, 3000);
}

function logout() {
  sessionStorage.removeItem("oximon-token");
  token = null;
  clearInterval(timer);
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#login-section").hidden = false;
  $("#whoami").textContent = "";
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#login-error").textContent = "";
  const res = await fetch("/api/v1/auth/token", { method: "POST", body: new URLSearchParams(new FormData(ev.target)) });
  if (!res.ok) { $("#login-error").textContent = "Wrong username or password."; return; }
  token = (await res.json()).access_token;
  sessionStorage.setItem("oximon-token", token);
  showApp();
});
$("#logout").addEventListener("click", logout);
if (token) showApp().catch(logout);
