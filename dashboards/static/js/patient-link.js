// The patient's reading page, opened from a personal link in an SMS: enter SpO2 and pulse, read
// the same confirmation (or safety advice) an SMS reply would give, see the last readings.
"use strict";

const TEXT = {
  nb: {
    intro: "Mål oksygenmetning og puls med oksymeteret, og skriv inn tallene her.",
    spo2: "Oksygenmetning (SpO2), %", spo2_hint: "Et tall mellom 50 og 100, for eksempel 95.",
    pulse: "Puls, slag per minutt", pulse_hint: "Et tall mellom 25 og 250, for eksempel 72.",
    send: "Send målingen", sending: "Sender …", last: "Dine siste målinger", time: "Tid", pulse_col: "Puls",
    caption: "Dine siste målinger, nyeste først", none: "Ingen målinger ennå.",
    emergency: "Ved akutt sykdom: ring 113.", gone: "Lenken er utløpt eller trukket tilbake. Be hjemmesykepleien om en ny.",
    failed: "Målingen kunne ikke sendes. Prøv igjen om litt. Ved akutt sykdom ring 113.",
    pending: "(på vei)", invalid_spo2: "Skriv oksygenmetningen som et tall mellom 50 og 100.",
    invalid_pulse: "Skriv pulsen som et tall mellom 25 og 250.",
  },
  en: {
    intro: "Measure your oxygen level and pulse with the oximeter, and enter the numbers here.",
    spo2: "Oxygen level (SpO2), %", spo2_hint: "A number from 50 to 100, for example 95.",
    pulse: "Pulse, beats per minute", pulse_hint: "A number from 25 to 250, for example 72.",
    send: "Send reading", sending: "Sending…", last: "Your last readings", time: "Time", pulse_col: "Pulse",
    caption: "Your last readings, newest first", none: "No readings yet.",
    emergency: "In an emergency call 113.", gone: "This link has expired or was withdrawn. Ask your home-care nurses for a new one.",
    failed: "Your reading could not be sent. Please try again in a moment. In an emergency call 113.",
    pending: "(on its way)", invalid_spo2: "Enter your oxygen level as a number from 50 to 100.",
    invalid_pulse: "Enter your pulse as a number from 25 to 250.",
  },
};

const $ = (id) => document.getElementById(id);
const token = decodeURIComponent(location.pathname.split("/").pop());
const base = `/api/v1/patient-link/${encodeURIComponent(token)}`;
let lang = (navigator.language || "nb").toLowerCase().startsWith("en") ? "en" : "nb";
let tx = TEXT[lang];

function apply() {
  tx = TEXT[lang];
  document.documentElement.lang = lang;
  $("intro").textContent = tx.intro;
  $("spo2-label").textContent = tx.spo2;
  $("spo2-hint").textContent = tx.spo2_hint;
  $("pulse-label").textContent = tx.pulse;
  $("pulse-hint").textContent = tx.pulse_hint;
  $("send").textContent = tx.send;
  $("last-title").textContent = tx.last;
  $("last-caption").textContent = tx.caption;
  $("col-time").textContent = tx.time;
  $("col-pulse").textContent = tx.pulse_col;
  $("emergency").textContent = tx.emergency;
}

function when(iso) {
  return new Date(iso).toLocaleString(lang === "nb" ? "nb-NO" : "en-GB", { dateStyle: "short", timeStyle: "short", timeZone: "Europe/Oslo" });
}

function drawReadings(readings, pending = null) {
  const body = $("last-body");
  body.replaceChildren();
  const rows = pending ? [{ ...pending, pending: true }, ...readings] : readings;
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const v of [`${when(r.time)}${r.pending ? ` ${tx.pending}` : ""}`, `${r.spo2} %`, String(r.pulse)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 3;
    td.textContent = tx.none;
    tr.appendChild(td);
    body.appendChild(tr);
  }
  $("last").hidden = false;
}

function gone() {
  $("reading-form").hidden = true;
  $("last").hidden = true;
  const p = document.createElement("p");
  p.className = "error";
  p.textContent = tx.gone;
  $("reply").replaceChildren(p);
}

async function load() {
  const res = await fetch(base, { cache: "no-store" });
  if (res.status === 404 || res.status === 410 || res.status === 422) { gone(); return null; }
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  const data = await res.json();
  return data;
}

function check(input, min, max, message, hint) {
  const n = Number(input.value);
  const ok = input.value.trim() !== "" && Number.isInteger(n) && n >= min && n <= max;
  input.setAttribute("aria-invalid", String(!ok));
  $(hint).textContent = ok ? tx[hint.replace("-hint", "_hint")] : message;
  $(hint).classList.toggle("error", !ok);
  return ok;
}

$("reading-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const okSpo2 = check($("spo2"), 50, 100, tx.invalid_spo2, "spo2-hint");
  const okPulse = check($("pulse"), 25, 250, tx.invalid_pulse, "pulse-hint");
  if (!okSpo2 || !okPulse) { (okSpo2 ? $("pulse") : $("spo2")).focus(); return; }
  const button = $("send");
  button.disabled = true;
  button.textContent = tx.sending;
  try {
    const res = await fetch(`${base}/readings`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ spo2: Number($("spo2").value), pulse: Number($("pulse").value) }),
    });
    if (res.status === 404 || res.status === 410) { gone(); return; }
    const body = await res.json();
    const p = document.createElement("p");
    if (!res.ok) {
      p.className = "error";
      p.textContent = typeof body.detail === "string" ? body.detail : body.detail?.[lang] || tx.failed;
    } else {
      p.className = body.severity;
      p.textContent = body.reply;
      $("reading-form").reset();
      // The ingest worker stores it a moment later: show it as on its way until it is there.
      const sent = body;
      const data = await load();
      if (data) drawReadings(data.readings, data.readings.some((r) => r.time === sent.time) ? null : sent);
      waitStored(sent);
    }
    $("reply").replaceChildren(p);
  } catch (err) {
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = tx.failed;
    $("reply").replaceChildren(p);
  } finally {
    button.disabled = false;
    button.textContent = tx.send;
  }
});

async function waitStored(sent, tries = 10) {
  for (let i = 0; i < tries; i += 1) {
    await new Promise((r) => setTimeout(r, 1000));
    const data = await load().catch(() => null);
    if (!data) return;
    const there = data.readings.some((r) => new Date(r.time).getTime() === new Date(sent.time).getTime());
    drawReadings(data.readings, there ? null : sent);
    if (there) return;
  }
}

(async () => {
  apply();
  try {
    const data = await load();
    if (!data) return;
    lang = data.language === "en" ? "en" : "nb";
    apply();
    $("reading-form").hidden = false;
    drawReadings(data.readings);
  } catch (err) {
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = tx.failed;
    $("reply").replaceChildren(p);
  }
})();
