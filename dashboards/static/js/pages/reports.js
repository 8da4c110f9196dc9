// Reports for a period: alerts by kind and severity, outcomes, time to acknowledge and resolve.
// Uses the API's report when it has one; until then counts in the browser from the alert list.
"use strict";

import { duration, fmtNumber, t } from "../i18n.js";
import { api, h, table, td } from "../util.js";

function quantile(xs, q) {
  if (!xs.length) return null;
  const s = xs.slice().sort((a, b) => a - b);
  const i = (s.length - 1) * q, lo = Math.floor(i), hi = Math.ceil(i);
  return s[lo] + (s[hi] - s[lo]) * (i - lo);
}

/** A bar chart that is also a table: the numbers are text, the bars only illustrate them. */
function bars(caption, rows) {
  const max = Math.max(1, ...rows.map((r) => r.value));
  return table(caption, [caption, t("count")], rows.map((r) => h("tr", {},
    h("th", { scope: "row" }, r.label),
    td(h("span", { className: `bar ${r.cls || ""}`, style: `width:${Math.round((r.value / max) * 100)}%`, "aria-hidden": "true" }), ` ${fmtNumber(r.value)}`))), "bars");
}

function fromAlerts(alerts, since, until) {
  const inRange = alerts.filter((a) => a.opened_at >= since && a.opened_at < until);
  const byKind = new Map(), outcomes = new Map();
  const toAck = [], toResolve = [];
  for (const a of inRange) {
    const k = `${a.kind} · ${t(`sev_${a.severity}`)}`;
    byKind.set(k, { label: k, value: (byKind.get(k)?.value || 0) + 1, cls: a.severity });
    if (a.outcome) outcomes.set(a.outcome, (outcomes.get(a.outcome) || 0) + 1);
    if (a.acknowledged_at) toAck.push((new Date(a.acknowledged_at) - new Date(a.opened_at)) / 1000);
    if (a.resolved_at) toResolve.push((new Date(a.resolved_at) - new Date(a.opened_at)) / 1000);
  }
  return {
    total: inRange.length,
    byKind: [...byKind.values()].sort((a, b) => b.value - a.value),
    outcomes: [...outcomes].map(([o, n]) => ({ label: t(`out_${o}`), value: n })),
    toAck, toResolve,
  };
}

export async function render(ctx, root) {
  const today = new Date();
  const iso = (d) => d.toISOString().slice(0, 10);
  const since = h("input", { id: "report-since", type: "date", value: iso(new Date(today - 30 * 864e5)) });
  const until = h("input", { id: "report-until", type: "date", value: iso(new Date(+today + 864e5)) });
  const out = h("div");
  const csv = h("p");
  const times = (caption, rows) => table(caption, [t("severity"), t("median"), t("p90"), t("count")], rows);
  const load = async () => {
    const s = new Date(`${since.value}T00:00:00`).toISOString(), u = new Date(`${until.value}T00:00:00`).toISOString();
    const q = `since=${encodeURIComponent(s)}&until=${encodeURIComponent(u)}`;
    let r = null;
    try {
      r = await api(`/api/v1/reports/summary?${q}`);
    } catch (err) {
      if (err.status !== 404 && err.status !== 405) throw err;
    }
    if (r) {
      const min = (m) => (m === null || m === undefined ? null : m * 60);
      const sev = (x) => (x === "all" ? t("f_all") : t(`sev_${x}`));
      out.replaceChildren(
        h("div", { className: "two-col" },
          h("section", { className: "card" }, h("h2", {}, t("by_kind")),
            bars(t("by_kind"), r.alerts.map((a) => ({ label: `${a.kind} · ${t(`sev_${a.severity}`)}`, value: a.opened, cls: a.severity })))),
          h("section", { className: "card" }, h("h2", {}, t("outcomes")),
            h("p", {}, t("actionable_pct", { a: fmtNumber(r.outcomes.actionable_pct, 1), f: fmtNumber(r.outcomes.false_alarm_pct, 1), n: r.outcomes.resolved })),
            bars(t("outcomes"), r.outcomes.by_outcome.map((o) => ({ label: t(`out_${o.outcome}`), value: o.count }))))),
        h("div", { className: "two-col" },
          h("section", { className: "card" }, h("h2", {}, t("to_ack")),
            times(t("to_ack"), r.response_times.map((x) => h("tr", {}, td(sev(x.severity)), td(duration(min(x.ack_median_min))), td(duration(min(x.ack_p90_min))), td(String(x.acknowledged)))))),
          h("section", { className: "card" }, h("h2", {}, t("to_resolve")),
            times(t("to_resolve"), r.response_times.map((x) => h("tr", {}, td(sev(x.severity)), td(duration(min(x.resolve_median_min))), td(duration(min(x.resolve_p90_min))), td(String(x.resolved))))))),
        h("div", { className: "two-col" },
          h("section", { className: "card scroll" }, h("h2", {}, t("adherence")),
            bars(t("adherence"), r.adherence.map((a) => ({ label: `#${a.patient_id} ${a.display_name} (${a.met ?? "–"}/${a.expected ?? "–"})`, value: a.readings })))),
          h("section", { className: "card scroll" }, h("h2", {}, t("workload")),
            table(t("workload"), [t("person"), t("acknowledge"), t("resolve"), t("notes")],
              r.workload.map((w) => h("tr", {}, td(w.username), td(String(w.acknowledged)), td(String(w.resolved)), td(String(w.notes))))))));
      csv.replaceChildren(h("button", { type: "button", onclick: async () => {
        const res = await api(`/api/v1/reports/summary?${q}&format=csv`, { raw: true });
        const url = URL.createObjectURL(await res.blob());
        h("a", { href: url, download: `oximon-report-${since.value}-${until.value}.csv` }).click();
      } }, t("download_csv")));
      return;
    }
    const alerts = await api("/api/v1/alerts?limit=1000");
    const c = fromAlerts(alerts, s, u);
    const row = (xs) => [h("tr", {}, td(t("f_all")), td(duration(quantile(xs, 0.5))), td(duration(quantile(xs, 0.9))), td(String(xs.length)))];
    out.replaceChildren(
      h("p", { className: "note" }, t("report_source_client")),
      h("div", { className: "two-col" },
        h("section", { className: "card" }, h("h2", {}, t("by_kind")), bars(t("by_kind"), c.byKind)),
        h("section", { className: "card" }, h("h2", {}, t("outcomes")), bars(t("outcomes"), c.outcomes))),
      h("div", { className: "two-col" },
        h("section", { className: "card" }, h("h2", {}, t("to_ack")), times(t("to_ack"), row(c.toAck))),
        h("section", { className: "card" }, h("h2", {}, t("to_resolve")), times(t("to_resolve"), row(c.toResolve)))));
  };
  root.append(h("h1", {}, t("reports_title")),
    h("form", { className: "filters", onsubmit: (ev) => { ev.preventDefault(); load(); } },
      h("div", {}, h("label", { for: since.id }, t("since")), since),
      h("div", {}, h("label", { for: until.id }, t("until")), until),
      h("div", { className: "form-end" }, h("button", { type: "submit", className: "primary" }, t("show")))),
    csv, out);
  await load();
  return null;
}
