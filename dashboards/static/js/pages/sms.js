// The SMS log: the outbox (sent, or only logged in the demo) and the texts received.
"use strict";

import { fmtDateTime, t } from "../i18n.js";
import { api, h, redraw, table, td } from "../util.js";

export async function render(ctx, root) {
  const out = h("div"), inn = h("div");
  const load = async () => {
    const [sent, received] = await Promise.all([
      api("/api/v1/notifications?channel=sms&limit=200"),
      api("/api/v1/sms/inbound?limit=200"),
    ]);
    const patient = (id) => (id ? `#${id}` : "");
    redraw(out, table(t("outbox"), [t("time"), t("to"), t("patient"), t("alert"), t("state"), t("body")],
      sent.map((m) => h("tr", {}, td(fmtDateTime(m.created_at)), td(m.recipient), td(patient(m.patient_id)),
        td(m.alert_id ? `#${m.alert_id}` : ""), td(m.state), td(h("span", { className: "sms-body" }, m.body))))));
    redraw(inn, table(t("inbound"), [t("time"), t("from"), t("body"), t("outcome_col"), t("reply")],
      received.map((m) => h("tr", {}, td(fmtDateTime(m.received_at)),
        td(m.patient_id ? `${t("patient")} #${m.patient_id}` : m.user_id ? `#${m.user_id}` : ""),
        td(h("span", { className: "sms-body" }, m.body)), td(m.outcome), td(h("span", { className: "sms-body" }, m.reply || ""))))));
  };
  root.append(h("h1", {}, t("sms_title")),
    h("section", { className: "card scroll" }, out), h("section", { className: "card scroll" }, inn));
  await load();
  const timer = setInterval(() => load().catch(console.warn), 15000);
  return () => clearInterval(timer);
}
