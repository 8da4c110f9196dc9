// Overview: every patient, most urgent first (open red, amber, missed readings, the rest).
"use strict";

import { sparkline } from "../charts.js";
import { ago, kindLabel, t } from "../i18n.js";
import { badge, h, redraw, td } from "../util.js";

const filters = { q: "", show: "all", device: false }; // kept while the nurse moves around

/** 0 red, 1 amber, 2 missed readings, 3 the rest. */
export function urgency(p) {
  if (p.alert_severity === "red") return 0;
  if (p.alert_kind === "missed_reading") return 2;
  if (p.alert_severity === "amber") return 1;
  if (p.missed_reading) return 2;
  return 3;
}
export function level(p) { return ["red", "amber", "missed", "ok"][urgency(p)]; }

function deviceProblem(p) {
  return p.device_online === false || (p.device_battery_pct !== null && p.device_battery_pct <= 20);
}

function matches(p) {
  const q = filters.q.trim().toLowerCase();
  if (q && !`#${p.id} ${p.display_name}`.toLowerCase().includes(q) && String(p.id) !== q.replace("#", "")) return false;
  const u = urgency(p);
  if (filters.show === "red" && u !== 0) return false;
  if (filters.show === "amber" && u !== 1) return false;
  if (filters.show === "missed" && u !== 2) return false;
  if (filters.show === "attention" && u === 3) return false;
  if (filters.show === "quiet" && u !== 3) return false;
  if (filters.device && !deviceProblem(p)) return false;
  return true;
}

function order(a, b) {
  return urgency(a) - urgency(b)
    || (a.alert_opened_at || "9").localeCompare(b.alert_opened_at || "9") // longest waiting first
    || a.id - b.id;
}

function alertStatus(p, alerts) {
  const a = alerts.find((x) => x.id === p.alert_id);
  if (a && a.status === "acknowledged" && a.acknowledged_by_username) return t("taken_by", { u: a.acknowledged_by_username });
  return t(`st_${p.alert_status}`);
}

function row(p, spark, alerts) {
  const lv = level(p);
  const points = (spark.patients[String(p.id)] || []).map(([time, spo2]) => [time, spo2]);
  const values = points.map(([, v]) => v);
  const label = values.length
    ? t("spark_label", { min: Math.round(Math.min(...values)), max: Math.round(Math.max(...values)), last: Math.round(values[values.length - 1]) })
    : t("spark_none");
  const known = (v) => v !== null && v !== undefined;
  const device = !known(p.device_online) && !known(p.device_battery_pct)
    ? t("no_device")
    : [known(p.device_online) ? (p.device_online ? t("online") : t("offline")) : t("status_unknown"),
      known(p.device_battery_pct) ? t("battery", { n: p.device_battery_pct }) : null].filter(Boolean).join(", ");
  return h("tr", { className: lv, dataset: { patientId: p.id } },
    td(badge(lv)),
    h("th", { scope: "row" }, h("a", { href: `#/patients/${p.id}`, dataset: { focusKey: `p${p.id}` } }, `#${p.id} ${p.display_name}`)),
    td(p.last_spo2 === null ? t("none")
      : p.last_spo2 <= p.spo2_red_max_pct ? h("span", { className: "low", title: t("below_red") }, h("span", { "aria-hidden": "true" }, "▼ "), `${p.last_spo2}%`, h("span", { className: "visually-hidden" }, ` (${t("below_red")})`))
        : p.last_spo2 <= p.spo2_amber_max_pct ? h("span", { className: "lowish", title: t("below_amber") }, `${p.last_spo2}%`, h("span", { className: "visually-hidden" }, ` (${t("below_amber")})`))
          : `${p.last_spo2}%`),
    td(p.last_pulse === null ? t("none") : `${p.last_pulse}/min`),
    td(h("span", { title: p.last_time || "" }, ago(p.last_time))),
    td(sparkline(points, { since: spark.since || new Date(Date.now() - 864e5).toISOString(), hours: spark.hours || 24, redAt: p.spo2_red_max_pct, label })),
    td(h("span", { className: deviceProblem(p) ? "warn" : "" }, deviceProblem(p) ? h("span", { "aria-hidden": "true" }, "⚠ ") : null, device)),
    td(p.alert_id ? [h("strong", {}, kindLabel(p.alert_kind)), h("br"), h("span", {}, p.alert_reason || ""), h("br"), h("small", {}, `${alertStatus(p, alerts)}, ${t("opened_ago", { t: ago(p.alert_opened_at) })}`)] : t("none")),
  );
}

export async function render(ctx, root) {
  const search = h("input", { id: "search", type: "search", value: filters.q, autocomplete: "off" });
  const show = h("select", { id: "show" }, ["all", "attention", "red", "amber", "missed", "quiet"].map((v) =>
    h("option", { value: v, selected: filters.show === v }, t(`f_${v}`))));
  const device = h("input", { id: "device-only", type: "checkbox", checked: filters.device });
  const count = h("p", { id: "patient-count", className: "count", role: "status" });
  const body = h("tbody");
  const empty = h("p", { hidden: true }, t("no_patients"));
  const draw = () => {
    const all = ctx.store.patients;
    const shown = all.filter(matches).sort(order);
    redraw(body, shown.map((p) => row(p, ctx.store.sparklines, ctx.store.alerts)));
    count.textContent = t("n_patients", { n: shown.length, m: all.length });
    empty.hidden = shown.length > 0;
  };
  search.addEventListener("input", () => { filters.q = search.value; draw(); });
  show.addEventListener("change", () => { filters.show = show.value; draw(); });
  device.addEventListener("change", () => { filters.device = device.checked; draw(); });
  root.append(
    h("h1", { id: "overview-title" }, t("overview_title")),
    h("div", { className: "filters", role: "search" },
      h("div", {}, h("label", { for: "search" }, t("search")), search),
      h("div", {}, h("label", { for: "show" }, t("filter_severity")), show),
      h("div", { className: "check" }, device, h("label", { for: "device-only" }, t("f_device")))),
    count,
    h("div", { className: "scroll" },
      h("table", { id: "patients", "aria-labelledby": "overview-title" },
        h("thead", {}, h("tr", {}, ["col_status", "col_patient", "col_spo2", "col_pulse", "col_measured", "col_trend", "col_device", "col_alert"].map((k) => h("th", { scope: "col" }, t(k))))),
        body)),
    empty,
  );
  draw();
  ctx.store.listeners.add(draw);
  return () => ctx.store.listeners.delete(draw);
}
