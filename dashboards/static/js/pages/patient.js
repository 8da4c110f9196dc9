// Patient page: SpO2 and pulse over 24 h / 7 d / 30 d with the patient's bands, baseline and
// trend, the timeline, editable thresholds and schedule, notes, and the personal reading link.
"use strict";

import { timeChart } from "../charts.js";
import { ago, fmtDateTime, fmtNumber, kindLabel, t } from "../i18n.js";
import { api, ApiError, badge, h, say, table, td } from "../util.js";
import { level } from "./overview.js";

const RANGES = { "24h": { hours: 24, bucket: "10m" }, "7d": { hours: 168, bucket: "1h" }, "30d": { hours: 720, bucket: "6h" } };
let chosenRange = "24h";

function spo2Bands(p) {
  const bands = [
    { from: 0, to: p.spo2_red_max_pct + 0.5, cls: "red" },
    { from: p.spo2_red_max_pct + 0.5, to: p.spo2_amber_max_pct + 0.5, cls: "amber" },
  ];
  if (p.spo2_target_min_pct !== undefined) bands.push({ from: p.spo2_target_min_pct - 0.5, to: p.spo2_target_max_pct + 0.5, cls: "target" });
  return bands;
}

async function charts(p, box) {
  const range = RANGES[chosenRange];
  const until = new Date(Date.now() + 5 * 60e3);
  const since = new Date(until.getTime() - range.hours * 3600e3);
  const data = await api(`/api/v1/patients/${p.id}/readings?since=${since.toISOString()}&until=${until.toISOString()}&bucket=${range.bucket}`);
  const rows = data.readings;
  const label = t(`r${chosenRange}`);
  const spo2 = rows.map((r) => ({ time: r.time, min: r.spo2_min, mean: r.spo2_mean, max: r.spo2_max }));
  const pulse = rows.map((r) => ({ time: r.time, min: r.pulse_min, mean: r.pulse_mean, max: r.pulse_max }));
  const stat = (xs, k, f) => (xs.length ? Math.round(f(...xs.map((x) => x[k]))) : "–");
  const baseline = box._trend?.baseline_pct;
  const spo2Chart = timeChart({
    rows: spo2, since, until, yMin: Math.min(80, stat(spo2, "min", Math.min) - 2 || 80), yMax: 100, unit: "%",
    bands: spo2Bands(p),
    lines: baseline ? [{ at: baseline, cls: "baseline", label: `${t("baseline")} ${fmtNumber(baseline, 1)}%` }] : [],
    label: t("chart_label_spo2", { range: label, n: rows.length, min: stat(spo2, "min", Math.min), max: stat(spo2, "max", Math.max) }),
  });
  const pulseChart = timeChart({
    rows: pulse, since, until, yMin: 30, yMax: 160,
    bands: [{ from: 0, to: p.pulse_red_min_bpm + 0.5, cls: "red" }, { from: p.pulse_red_max_bpm - 0.5, to: 300, cls: "red" }],
    label: t("chart_label_pulse", { range: label, n: rows.length, min: stat(pulse, "min", Math.min), max: stat(pulse, "max", Math.max) }),
  });
  const tableRows = rows.slice(-200).reverse().map((r) => h("tr", {}, td(fmtDateTime(r.time)),
    td(`${fmtNumber(r.spo2_mean, 1)} (${r.spo2_min}–${r.spo2_max})`), td(`${fmtNumber(r.pulse_mean, 0)} (${r.pulse_min}–${r.pulse_max})`)));
  box.replaceChildren(
    h("figure", {}, h("figcaption", {}, t("chart_spo2"), " — ", h("small", {}, t("bands"), ": ",
      t("band_red", { n: p.spo2_red_max_pct }), "; ", t("band_amber", { n: p.spo2_amber_max_pct }), "; ",
      t("band_target", { a: p.spo2_target_min_pct, b: p.spo2_target_max_pct }))), spo2Chart),
    h("figure", {}, h("figcaption", {}, t("chart_pulse"), " — ", h("small", {}, t("bands"), ": ",
      t("band_pulse", { a: p.pulse_red_min_bpm, b: p.pulse_red_max_bpm }))), pulseChart),
    ...(rows.length ? [] : [h("p", {}, t("chart_empty"))]),
    h("details", {}, h("summary", {}, t("show_table")),
      table(`${t("chart_spo2")} / ${t("chart_pulse")}, ${label}`, [t("time"), `${t("chart_spo2")} ${t("mean")} (${t("min")}–${t("max")})`, `${t("chart_pulse")} ${t("mean")} (${t("min")}–${t("max")})`], tableRows)),
  );
}

async function trendBox(p, box) {
  let tr = null;
  try { tr = await api(`/api/v1/dashboard/patients/${p.id}/trend`); } catch (err) { console.warn(err); }
  const dl = h("dl", { className: "facts" },
    h("dt", {}, t("baseline")), h("dd", {}, tr?.baseline_pct ? `${fmtNumber(tr.baseline_pct, 1)}%` : t("baseline_none")),
    h("dt", {}, t("trend")), h("dd", {}, tr?.slope_pct_per_day !== null && tr?.slope_pct_per_day !== undefined
      ? [t("trend_value", { s: fmtNumber(tr.slope_pct_per_day, 1) }), tr.hours_to_red ? ` — ${t("trend_red", { h: fmtNumber(tr.hours_to_red, 0) })}` : ""]
      : t("trend_none")));
  box.replaceChildren(dl);
  return tr;
}

async function timeline(p, box) {
  let data = null;
  try {
    data = await api(`/api/v1/patients/${p.id}/timeline?order=desc&limit=100`);
  } catch (err) {
    if (err.status !== 404 && err.status !== 405) throw err;
  }
  if (data) {
    const items = (Array.isArray(data) ? data : data.items || []).slice().sort((a, b) => b.time.localeCompare(a.time));
    box.replaceChildren(items.length
      ? h("ol", { className: "timeline" }, items.slice(0, 100).map((e) => h("li", { className: `tl-${e.type}` },
        h("time", { datetime: e.time }, fmtDateTime(e.time)), " ", timelineText(e))))
      : h("p", {}, t("timeline_none")));
    return;
  }
  // Until the timeline endpoint exists: this patient's alerts, newest first.
  const alerts = await api(`/api/v1/alerts?patient_id=${p.id}&limit=50`);
  box.replaceChildren(h("p", { className: "note" }, t("not_available")),
    alerts.length ? h("ol", { className: "timeline" }, alerts.map((a) => h("li", {},
      h("time", { datetime: a.opened_at }, fmtDateTime(a.opened_at)), " ", badge(a.severity), " ", h("strong", {}, kindLabel(a.kind)), " — ", a.reason, ` (${t(`st_${a.status}`)})`)))
      : h("p", {}, t("timeline_none")));
}

function timelineText(e) {
  const by = (x) => (x ? x.username : t("system"));
  switch (e.type) {
    case "readings":
      return [h("strong", {}, t("tl_readings", { n: e.n })), " ", `SpO2 ${e.spo2_min}–${e.spo2_max}% (${t("mean")} ${fmtNumber(e.spo2_mean, 1)}), ${t("col_pulse")} ${e.pulse_min}–${e.pulse_max}`,
        e.by_sms ? ` · ${t("tl_by_sms", { n: e.by_sms })}` : ""];
    case "alert":
      return [badge(e.severity), " ", h("strong", {}, t("who_when", { a: e.action, u: by(e.by), t: "" }).replace(/, $/, "")), " — ", e.reason];
    case "message_out":
      return [h("strong", {}, t("tl_sms_out", { to: e.to_user ? e.to_user.username : t("patient").toLowerCase() })), ` [${e.state}] `, h("span", { className: "sms-body" }, e.body)];
    case "message_in":
      return [h("strong", {}, t("tl_sms_in")), " ", h("span", { className: "sms-body" }, e.body), ` (${e.outcome})`];
    case "note":
      return [h("strong", {}, t("tl_note", { u: by(e.by) })), " ", e.body];
    default:
      return [h("strong", {}, e.type || ""), " ", e.body || e.reason || ""];
  }
}

function field(id, labelKey, attrs) {
  return h("div", {}, h("label", { for: id }, t(labelKey)), h("input", { id, name: id, ...attrs }));
}

function settingsForm(ctx, p, onSaved) {
  const msg = h("p", { role: "status", className: "msg" });
  const sched = p.schedule || { kind: "spot", times: [], grace_min: 60 };
  const kind = h("select", { id: "schedule_kind", name: "schedule_kind" },
    ["spot", "continuous"].map((k) => h("option", { value: k, selected: sched.kind === k }, t(`sched_${k}`))));
  const language = h("select", { id: "language", name: "language" },
    ["nb", "en"].map((k) => h("option", { value: k, selected: p.language === k }, t(`lang_${k}`))));
  const form = h("form", { className: "grid-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const num = (k) => Number(f.get(k));
    const body = {
      spo2_target_min_pct: num("spo2_target_min_pct"), spo2_target_max_pct: num("spo2_target_max_pct"),
      spo2_amber_max_pct: num("spo2_amber_max_pct"), spo2_red_max_pct: num("spo2_red_max_pct"),
      pulse_red_min_bpm: num("pulse_red_min_bpm"), pulse_red_max_bpm: num("pulse_red_max_bpm"),
      schedule: f.get("schedule_kind") === "continuous"
        ? { kind: "continuous", ...(sched.max_gap_min ? { max_gap_min: sched.max_gap_min } : {}) }
        : { kind: "spot", times: String(f.get("schedule_times")).split(",").map((x) => x.trim()).filter(Boolean), grace_min: num("grace_min") },
      language: f.get("language"),
    };
    const phone = String(f.get("phone") || "").replace(/\s/g, "");
    if (phone !== (p.phone || "")) body.phone = phone || null;
    try {
      await api(`/api/v1/patients/${p.id}`, { method: "PATCH", body });
      say(msg, t("saved"));
      onSaved();
    } catch (err) {
      say(msg, err.status === 405 || err.status === 404 ? t("not_available") : err.message, true);
    }
  } },
  field("spo2_target_min_pct", "target_min", { type: "number", min: 50, max: 100, value: p.spo2_target_min_pct, required: true }),
  field("spo2_target_max_pct", "target_max", { type: "number", min: 50, max: 100, value: p.spo2_target_max_pct, required: true }),
  field("spo2_amber_max_pct", "amber_max", { type: "number", min: 50, max: 100, value: p.spo2_amber_max_pct, required: true }),
  field("spo2_red_max_pct", "red_max", { type: "number", min: 50, max: 100, value: p.spo2_red_max_pct, required: true }),
  field("pulse_red_min_bpm", "pulse_min", { type: "number", min: 20, max: 120, value: p.pulse_red_min_bpm, required: true }),
  field("pulse_red_max_bpm", "pulse_max", { type: "number", min: 60, max: 250, value: p.pulse_red_max_bpm, required: true }),
  h("div", {}, h("label", { for: "schedule_kind" }, t("schedule")), kind),
  field("schedule_times", "sched_times", { value: (sched.times || []).join(", "), pattern: "^\\s*(\\d{2}:\\d{2}\\s*(,\\s*\\d{2}:\\d{2}\\s*)*)?$" }),
  field("grace_min", "grace", { type: "number", min: 5, max: 720, value: sched.grace_min ?? 60 }),
  field("phone", "phone", { type: "tel", value: p.phone || "", autocomplete: "off", pattern: "^\\+[1-9][0-9 ]{6,18}$" }),
  h("div", {}, h("label", { for: "language" }, t("language")), language),
  h("div", { className: "form-end" }, h("button", { type: "submit", className: "primary" }, t("save")), msg));
  return form;
}

async function notes(p, box) {
  const msg = h("p", { role: "status", className: "msg" });
  const text = h("textarea", { id: "note-text", rows: 3, maxlength: 4000, required: true });
  const list = h("ul", { className: "notes" });
  const load = async () => {
    try {
      const rows = await api(`/api/v1/patients/${p.id}/notes`);
      list.replaceChildren(...(Array.isArray(rows) ? rows : rows.items || []).map((n) =>
        h("li", {}, h("p", {}, n.body), h("small", {}, `${n.author_name || n.author_username}, ${fmtDateTime(n.at)}`))));
    } catch (err) {
      console.warn("notes", err);
      list.replaceChildren();
      if (err.status === 404 || err.status === 405) say(msg, t("not_available"), true);
    }
  };
  const form = h("form", { className: "stack", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await api(`/api/v1/patients/${p.id}/notes`, { method: "POST", body: { body: text.value } });
      text.value = "";
      say(msg, t("saved"));
      load();
    } catch (err) { say(msg, err.status === 404 || err.status === 405 ? t("not_available") : err.message, true); }
  } }, h("label", { for: "note-text" }, t("note_text")), text, h("button", { type: "submit" }, t("add_note")), msg);
  box.replaceChildren(form, list);
  await load();
}

function devicesText(p) {
  const list = p.devices || [];
  if (!list.length) return t("no_device");
  return list.map((d) => [d.id, d.online === true ? t("online") : d.online === false ? t("offline") : t("status_unknown"),
    d.battery_pct !== null && d.battery_pct !== undefined ? t("battery", { n: d.battery_pct }) : null,
    d.last_seen_at ? `${t("col_measured").toLowerCase()} ${ago(d.last_seen_at)}` : null].filter(Boolean).join(", ")).join("; ");
}

function dischargeBox(ctx, p) {
  const msg = h("p", { role: "status", className: "msg" });
  const reason = h("input", { id: "discharge-reason", maxlength: 500 });
  const confirm = h("input", { id: "discharge-confirm", type: "checkbox", required: true });
  return h("form", { className: "stack", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await api(`/api/v1/patients/${p.id}/discharge`, { method: "POST", body: { reason: reason.value || null } });
      await ctx.refresh();
      location.hash = "#/";
    } catch (err) { say(msg, err.message, true); }
  } },
  h("label", { for: reason.id }, t("discharge_reason")), reason,
  h("div", { className: "check" }, confirm, h("label", { for: confirm.id }, t("discharge_confirm"))),
  h("div", { className: "row" }, h("button", { type: "submit" }, t("discharge")), msg));
}

function linkBox(p) {
  const msg = h("p", { role: "status", className: "msg" });
  const send = h("button", { type: "button", onclick: async () => {
    try {
      const res = await api(`/api/v1/patients/${p.id}/link`, { method: "POST", body: { send_sms: true } });
      msg.replaceChildren(t("link_sent", { t: fmtDateTime(res.expires_at) }), " ", h("a", { href: res.url, target: "_blank", rel: "noopener" }, t("link_url")));
      msg.classList.remove("error");
    } catch (err) { say(msg, err.message, true); }
  } }, t("send_link"));
  const revoke = h("button", { type: "button", onclick: async () => {
    try {
      const res = await api(`/api/v1/patients/${p.id}/links/revoke`, { method: "POST" });
      say(msg, t("links_revoked", { n: res.revoked }));
    } catch (err) { say(msg, err.message, true); }
  } }, t("revoke_links"));
  return h("div", { className: "row" }, send, revoke, msg);
}

export async function render(ctx, root, { id }) {
  let p;
  try { p = await api(`/api/v1/patients/${id}`); } catch (err) {
    root.append(h("h1", {}, t("patient")), h("p", { className: "error" }, err instanceof ApiError ? err.message : String(err)));
    return null;
  }
  const summary = h("div", { className: "facts-row" });
  const drawSummary = () => {
    const row = ctx.patient(id) || {};
    summary.replaceChildren(badge(level(row)),
      h("span", {}, `${t("col_spo2")}: ${row.last_spo2 ?? t("none")}%`),
      h("span", {}, `${t("col_pulse")}: ${row.last_pulse ?? t("none")}/min`),
      h("span", {}, `${t("col_measured")}: ${ago(row.last_time)}`),
      h("span", {}, `${t("device")}: ${devicesText(p)}`),
      ...(row.alert_id ? [h("span", {}, `${t("alert")}: ${row.alert_reason} (${t(`st_${row.alert_status}`)})`)] : []));
  };
  const chartBox = h("div", { id: "charts" }, h("p", {}, t("loading")));
  const rangeButtons = Object.keys(RANGES).map((r) => h("button", {
    type: "button", "aria-pressed": String(r === chosenRange), dataset: { range: r },
    onclick: async () => {
      chosenRange = r;
      for (const b of rangeButtons) b.setAttribute("aria-pressed", String(b.dataset.range === r));
      await charts(p, chartBox);
    },
  }, t(`r${r}`)));
  const trend = h("div");
  const tl = h("div", {}, h("p", {}, t("loading")));
  const notesBox = h("div");
  root.append(...[
    h("p", {}, h("a", { href: "#/" }, `← ${t("back")}`)),
    h("h1", {}, `#${p.id} ${p.display_name}`),
    summary,
    h("section", { "aria-labelledby": "charts-title", className: "card" },
      h("h2", { id: "charts-title" }, `${t("chart_spo2")} · ${t("chart_pulse")}`),
      h("div", { role: "group", "aria-label": t("range"), className: "segmented" }, rangeButtons),
      trend, chartBox),
    h("div", { className: "two-col" },
      h("section", { "aria-labelledby": "timeline-title", className: "card" }, h("h2", { id: "timeline-title" }, t("timeline")), tl),
      h("section", { "aria-labelledby": "notes-title", className: "card" }, h("h2", { id: "notes-title" }, t("notes")), notesBox,
        h("h2", {}, t("link")), linkBox(p))),
    h("section", { "aria-labelledby": "settings-title", className: "card" },
      h("h2", { id: "settings-title" }, t("settings")),
      settingsForm(ctx, p, async () => { p = await api(`/api/v1/patients/${id}`); charts(p, chartBox); })),
    p.status === "active" && ctx.me.role !== "doctor" ? h("section", { "aria-labelledby": "discharge-title", className: "card" },
      h("h2", { id: "discharge-title" }, t("discharge")), dischargeBox(ctx, p)) : null,
  ].filter(Boolean));
  drawSummary();
  ctx.store.listeners.add(drawSummary);
  chartBox._trend = await trendBox(p, trend);
  await Promise.all([
    charts(p, chartBox).catch((err) => chartBox.replaceChildren(h("p", { className: "error" }, err.message))),
    timeline(p, tl).catch((err) => tl.replaceChildren(h("p", { className: "error" }, err.message))),
    notes(p, notesBox),
  ]);
  return () => ctx.store.listeners.delete(drawSummary);
}
