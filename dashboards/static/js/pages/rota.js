// On-call rota (who is on duty now, shifts) and escalation policies per severity.
"use strict";

import { fmtDateTime, t } from "../i18n.js";
import { api, h, say, table, td } from "../util.js";

async function onDuty(ctx, box) {
  // Each care team has its own rota: someone in several teams sees each team's.
  const teams = ctx.me.care_teams || [];
  const several = teams.length > 1;
  const who = (x) => (x ? `#${x.user_id} ${x.phone || ""}` : t("nobody"));
  const lists = await Promise.all((several ? teams : [null]).map(async (tm) => {
    const now = await api(tm ? `/api/v1/rota/now?care_team_id=${tm.id}` : "/api/v1/rota/now");
    return [several ? h("h3", {}, tm.name) : "", h("dl", { className: "facts" },
      h("dt", {}, t("nurse")), h("dd", {}, who(now.nurse)),
      h("dt", {}, t("doctor")), h("dd", {}, who(now.doctor)))];
  }));
  box.replaceChildren(...lists.flat().filter(Boolean));
}

async function shifts(ctx, box) {
  const rows = await api("/api/v1/rota/shifts");
  // Administrators pick a person by name (the user list is theirs to read).
  const users = ctx.isAdmin() ? await api("/api/v1/users?active=true&limit=1000").catch(() => null) : null;
  const teams = ctx.me.care_teams || [];
  const msg = h("p", { role: "status", className: "msg" });
  const body = rows.map((s) => h("tr", {},
    td(`${s.full_name || s.username} (#${s.user_id})`), td(t(s.role)), td(s.phone), td(fmtDateTime(s.starts_at)), td(fmtDateTime(s.ends_at)), td(String(s.priority)),
    td(ctx.isAdmin() ? h("button", { type: "button", "aria-label": `${t("delete")} ${s.username} ${fmtDateTime(s.starts_at)}`, onclick: async () => {
      try { await api(`/api/v1/rota/shifts/${s.id}`, { method: "DELETE" }); shifts(ctx, box); } catch (err) { say(msg, err.message, true); }
    } }, t("delete")) : "")));
  const parts = [table(t("shifts"), [t("person"), t("role"), t("phone"), t("starts"), t("ends"), t("priority"), t("action")], body), msg];
  if (ctx.isAdmin()) {
    const f = (id, key, attrs) => h("div", {}, h("label", { for: id }, t(key)), h("input", { id, name: id, ...attrs }));
    const form = h("form", { className: "grid-form", onsubmit: async (ev) => {
      ev.preventDefault();
      const d = new FormData(form);
      try {
        await api("/api/v1/rota/shifts", { method: "POST", body: {
          user_id: Number(d.get("shift_user")), starts_at: d.get("shift_start"), ends_at: d.get("shift_end"),
          role: d.get("shift_role") || null, phone: d.get("shift_phone") || null, priority: Number(d.get("shift_priority") || 1),
          ...(d.get("shift_team") ? { care_team_id: Number(d.get("shift_team")) } : {}),
        } });
        shifts(ctx, box);
      } catch (err) { say(msg, err.message, true); }
    } },
    teams.length > 1 ? h("div", {}, h("label", { for: "shift_team" }, t("care_team")), h("select", { id: "shift_team", name: "shift_team" },
      teams.map((tm) => h("option", { value: tm.id }, tm.name)))) : null,
    users
      ? h("div", {}, h("label", { for: "shift_user" }, t("person")), h("select", { id: "shift_user", name: "shift_user", required: true },
        users.filter((u) => u.role !== "admin").map((u) => h("option", { value: u.id }, `${u.full_name || u.username} (${u.username}, ${t(u.role)})`))))
      : f("shift_user", "user_id", { type: "number", min: 1, required: true }),
    h("div", {}, h("label", { for: "shift_role" }, t("role")), h("select", { id: "shift_role", name: "shift_role" },
      h("option", { value: "nurse" }, t("nurse")), h("option", { value: "doctor" }, t("doctor")))),
    f("shift_start", "starts", { type: "datetime-local", required: true }),
    f("shift_end", "ends", { type: "datetime-local", required: true }),
    f("shift_phone", "phone", { type: "tel" }),
    f("shift_priority", "priority", { type: "number", min: 1, max: 9, value: 1 }),
    h("div", { className: "form-end" }, h("button", { type: "submit", className: "primary" }, t("add_shift"))));
    parts.push(h("h3", {}, t("add_shift")), form);
  }
  box.replaceChildren(...parts);
}

function policyEditor(ctx, policy, reload) {
  const msg = h("p", { role: "status", className: "msg" });
  const sev = policy.severity;
  const steps = policy.steps.map((s) => ({ ...s }));
  const admin = ctx.isAdmin();
  const body = h("tbody");
  const draw = () => body.replaceChildren(...steps.map((s, i) => {
    const id = `${sev}-${i}`;
    const wait = h("input", { id: `wait-${id}`, type: "number", min: 0, max: 1440, value: s.wait_min, disabled: !admin, "aria-label": `${t("step")} ${i + 1}: ${t("wait_min")}`, onchange: () => { s.wait_min = Number(wait.value); } });
    const who = ["nurse", "doctor", "next"].map((n) => {
      const box = h("input", { type: "checkbox", id: `n-${id}-${n}`, checked: s.notify.includes(n), disabled: !admin, onchange: () => {
        s.notify = box.checked ? [...s.notify, n] : s.notify.filter((x) => x !== n);
      } });
      return h("span", { className: "check" }, box, h("label", { for: box.id }, n === "next" ? t("next_person") : t(n)));
    });
    const repeat = h("input", { type: "checkbox", id: `r-${id}`, checked: Boolean(s.repeat), disabled: !admin, onchange: () => { s.repeat = repeat.checked; } });
    return h("tr", {}, td(String(i + 1)), td(wait), td(who), td(h("span", { className: "check" }, repeat, h("label", { for: repeat.id }, t("repeat")))),
      td(admin ? h("button", { type: "button", onclick: () => { steps.splice(i, 1); draw(); } }, `${t("remove")} ${i + 1}`) : ""));
  }));
  draw();
  const parts = [
    h("h3", {}, `${t("policy_for", { s: t(`sev_${sev}`) })} (${t(`source_${policy.source}`)})`),
    h("table", {}, h("caption", { className: "visually-hidden" }, t("policy_for", { s: t(`sev_${sev}`) })),
      h("thead", {}, h("tr", {}, [t("step"), t("wait_min"), t("notify"), t("repeat"), t("action")].map((x) => h("th", { scope: "col" }, x)))), body),
  ];
  if (admin) {
    parts.push(h("div", { className: "row" },
      h("button", { type: "button", onclick: () => { steps.push({ wait_min: 10, notify: ["nurse"], repeat: false }); draw(); } }, t("add_step")),
      h("button", { type: "button", className: "primary", onclick: async () => {
        try { await api(`/api/v1/escalation/policies/${sev}`, { method: "PUT", body: { steps } }); say(msg, t("saved")); reload(); } catch (err) { say(msg, err.message, true); }
      } }, t("save")),
      h("button", { type: "button", onclick: async () => {
        try { await api(`/api/v1/escalation/policies/${sev}`, { method: "DELETE" }); reload(); } catch (err) { say(msg, err.message, true); }
      } }, t("reset_default"))), msg);
  }
  return h("div", { className: "policy" }, parts);
}

async function policies(ctx, box) {
  const rows = await api("/api/v1/escalation/policies");
  box.replaceChildren(ctx.isAdmin() ? "" : h("p", { className: "note" }, t("admin_only")),
    ...rows.map((p) => policyEditor(ctx, p, () => policies(ctx, box))));
}

export async function render(ctx, root) {
  const duty = h("div"), shiftBox = h("div"), policyBox = h("div");
  root.append(h("h1", {}, t("rota_title")),
    h("section", { className: "card", "aria-labelledby": "duty-title" }, h("h2", { id: "duty-title" }, t("now_on_duty")), duty),
    h("section", { className: "card", "aria-labelledby": "shifts-title" }, h("h2", { id: "shifts-title" }, t("shifts")), shiftBox),
    h("section", { className: "card", "aria-labelledby": "policies-title" }, h("h2", { id: "policies-title" }, t("policies")), policyBox));
  await Promise.all([onDuty(ctx, duty), shifts(ctx, shiftBox), policies(ctx, policyBox)]);
  return null;
}
