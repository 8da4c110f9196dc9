// Enrolment: add a patient, then register their oximeter and show its broker credentials once.
"use strict";

import { t } from "../i18n.js";
import { api, h, say } from "../util.js";

const field = (id, key, attrs = {}) => h("div", {}, h("label", { for: id }, t(key)), h("input", { id, name: id, ...attrs }));

export async function render(ctx, root) {
  const pmsg = h("p", { role: "status", className: "msg" });
  const dmsg = h("p", { role: "status", className: "msg" });
  const creds = h("div", { "aria-live": "polite" });
  const patientId = h("input", { id: "device_patient", name: "device_patient", type: "number", min: 1, required: true });
  const teams = ctx.me.care_teams || [];
  const patientForm = h("form", { className: "grid-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(patientForm);
    const body = { display_name: f.get("display_name"), language: f.get("enrol_language"), schedule: f.get("enrol_schedule") === "continuous"
      ? { kind: "continuous" } : { kind: "spot", times: ["08:00", "14:00", "20:00"], grace_min: 60 } };
    if (f.get("enrol_phone")) body.phone = String(f.get("enrol_phone")).replace(/\s/g, "");
    if (f.get("care_team_id")) body.care_team_id = Number(f.get("care_team_id"));
    try {
      const p = await api("/api/v1/patients", { method: "POST", body });
      say(pmsg, t("enrolled", { id: p.id }));
      patientId.value = p.id;
      patientForm.reset();
      ctx.refresh();
    } catch (err) { say(pmsg, err.status === 405 ? t("not_available") : err.message, true); }
  } },
  field("display_name", "display_name", { required: true, maxlength: 120, autocomplete: "off" }),
  field("enrol_phone", "phone", { type: "tel", autocomplete: "off" }),
  h("div", {}, h("label", { for: "enrol_language" }, t("language")), h("select", { id: "enrol_language", name: "enrol_language" },
    h("option", { value: "nb" }, t("lang_nb")), h("option", { value: "en" }, t("lang_en")))),
  h("div", {}, h("label", { for: "enrol_schedule" }, t("schedule")), h("select", { id: "enrol_schedule", name: "enrol_schedule" },
    h("option", { value: "spot" }, t("sched_spot")), h("option", { value: "continuous" }, t("sched_continuous")))),
  teams.length > 1 ? h("div", {}, h("label", { for: "care_team_id" }, t("care_team")), h("select", { id: "care_team_id", name: "care_team_id" },
    teams.map((tm) => h("option", { value: tm.id }, tm.name)))) : null,
  h("div", { className: "form-end" }, h("button", { type: "submit", className: "primary" }, t("enrol")), pmsg));

  const deviceForm = h("form", { className: "grid-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(deviceForm);
    try {
      const c = await api("/api/v1/devices", { method: "POST", body: {
        patient_id: Number(f.get("device_patient")), serial: f.get("serial") || null, model: f.get("model") || null,
      } });
      say(dmsg, "");
      creds.replaceChildren(h("section", { className: "credentials", "aria-labelledby": "creds-title" },
        h("h3", { id: "creds-title" }, t("creds_title")),
        h("p", { className: "warn" }, h("span", { "aria-hidden": "true" }, "⚠ "), t("creds_warn")),
        h("dl", { className: "facts" },
          h("dt", {}, t("device")), h("dd", {}, h("code", {}, c.device_id)),
          h("dt", {}, t("mqtt_username")), h("dd", {}, h("code", {}, c.mqtt_username)),
          h("dt", {}, t("mqtt_password")), h("dd", {}, h("code", { id: "mqtt-password" }, c.mqtt_password)),
          h("dt", {}, t("topic_readings")), h("dd", {}, h("code", {}, c.readings_topic)))));
      deviceForm.reset();
    } catch (err) { say(dmsg, err.message, true); }
  } },
  h("div", {}, h("label", { for: "device_patient" }, t("patient_id")), patientId),
  field("serial", "serial", { maxlength: 64, autocomplete: "off" }),
  field("model", "model", { maxlength: 64, autocomplete: "off" }),
  h("div", { className: "form-end" }, h("button", { type: "submit", className: "primary" }, t("register")), dmsg));

  root.append(h("h1", {}, t("enrol_title")),
    h("section", { className: "card", "aria-labelledby": "enrol-p" }, h("h2", { id: "enrol-p" }, t("enrol_title")), patientForm),
    h("section", { className: "card", "aria-labelledby": "enrol-d" }, h("h2", { id: "enrol-d" }, t("device_title")),
      ctx.isAdmin() ? deviceForm : h("p", { className: "note" }, t("admin_only")), creds));
  return null;
}
