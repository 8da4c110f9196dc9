// Dead letters (administrators): payloads that could not be stored as readings, with the reason.
"use strict";

import { fmtDateTime, t } from "../i18n.js";
import { api, h, table, td } from "../util.js";

export async function render(ctx, root) {
  root.append(h("h1", {}, t("dead_title")));
  if (!ctx.isAdmin()) { root.append(h("p", {}, t("admin_only"))); return null; }
  const rows = await api("/api/v1/dead-letters?limit=500");
  root.append(h("section", { className: "card scroll" }, table(t("dead_title"), [t("received"), t("topic"), t("device"), t("reason"), t("payload")],
    rows.map((d) => h("tr", {}, td(fmtDateTime(d.received_at)), td(h("code", {}, d.topic)), td(d.device_id || ""),
      td(d.reason), td(h("code", { className: "payload" }, (d.payload_text || "").slice(0, 300))))))));
  return null;
}
