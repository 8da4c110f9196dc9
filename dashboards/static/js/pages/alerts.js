// Alert inbox: unresolved alerts, most urgent first; acknowledge, checklist, resolve, snooze,
// and who did what. Live updates change rows in place, so an open form is never wiped.
"use strict";

import { ago, fmtDateTime, kindLabel, t } from "../i18n.js";
import { api, badge, h, say } from "../util.js";

const OUTCOMES = ["called_stable", "home_visit", "referred_hospital", "admitted", "artefact_false_alarm", "other"];
const STATUS_ORDER = { open: 0, escalated: 0, acknowledged: 1 };

function order(a, b) {
  return (a.severity === "red" ? 0 : 1) - (b.severity === "red" ? 0 : 1)
    || STATUS_ORDER[a.status] - STATUS_ORDER[b.status]
    || a.opened_at.localeCompare(b.opened_at);
}

function who(ctx, a) {
  const p = ctx.patient(a.patient_id);
  return p ? `#${p.id} ${p.display_name}` : `#${a.patient_id}`;
}

function statusText(a) {
  if (a.status === "acknowledged") return t("taken_by", { u: a.acknowledged_by_username });
  return `${t(`st_${a.status}`)} — ${t("not_taken")}`;
}

/** One alert's expandable detail: checklist, resolve, snooze, history. */
async function detail(ctx, a, panel, onChange) {
  const d = await api(`/api/v1/alerts/${a.id}`);
  const msg = h("p", { role: "status", className: "msg" });
  const act = async (path, body, done) => {
    try {
      await api(`/api/v1/alerts/${a.id}/${path}`, { method: "POST", body });
      say(msg, done);
      await onChange();
    } catch (err) { say(msg, err.message, true); }
  };
  const checklist = h("fieldset", {}, h("legend", {}, t("checklist")),
    d.checklist.map((c) => {
      const id = `chk-${a.id}-${c.item}`;
      const box = h("input", { type: "checkbox", id, checked: c.done, onchange: () => act("checklist", { item: c.item, done: box.checked }, t("saved")) });
      return h("div", { className: "check" }, box, h("label", { for: id }, c.label,
        c.done && c.done_by_username ? h("small", {}, ` — ${t("who_when", { a: "✓", u: c.done_by_username, t: fmtDateTime(c.done_at) })}`) : null));
    }));
  const outcome = h("select", { id: `outcome-${a.id}`, required: true },
    h("option", { value: "" }, t("choose")), OUTCOMES.map((o) => h("option", { value: o }, t(`out_${o}`))));
  const outcomeText = h("input", { id: `outcome-text-${a.id}`, maxlength: 500 });
  const note = h("textarea", { id: `note-${a.id}`, rows: 2, maxlength: 2000 });
  const resolveForm = h("form", { className: "stack", onsubmit: (ev) => {
    ev.preventDefault();
    act("resolve", { outcome: outcome.value, outcome_text: outcomeText.value || null, note: note.value || null }, t("resolved_ok"));
  } },
  h("fieldset", {}, h("legend", {}, t("resolve")),
    h("label", { for: outcome.id }, t("outcome")), outcome,
    h("label", { for: outcomeText.id }, t("outcome_text")), outcomeText,
    h("label", { for: note.id }, t("note")), note,
    h("button", { type: "submit", className: "primary" }, t("resolve"))));
  const minutes = h("input", { id: `snooze-min-${a.id}`, type: "number", min: 1, max: 10080, value: 60, required: true });
  const reason = h("input", { id: `snooze-reason-${a.id}`, required: true, maxlength: 500 });
  const includeRed = h("input", { id: `snooze-red-${a.id}`, type: "checkbox" });
  const snoozeForm = h("form", { className: "stack", onsubmit: (ev) => {
    ev.preventDefault();
    act("snooze", { minutes: Number(minutes.value), reason: reason.value, include_red: includeRed.checked }, t("snoozed_ok"));
  } },
  h("fieldset", {}, h("legend", {}, t("snooze")),
    h("label", { for: minutes.id }, t("minutes")), minutes,
    h("label", { for: reason.id }, t("reason")), reason,
    h("div", { className: "check" }, includeRed, h("label", { for: includeRed.id }, t("include_red"))),
    h("button", { type: "submit" }, t("snooze"))));
  const history = h("section", {}, h("h3", {}, t("history")),
    h("ol", { className: "history" }, d.history.map((e) =>
      h("li", {}, t("who_when", { a: e.action, u: e.username || t("system"), t: fmtDateTime(e.at) })))));
  const messages = d.messages.length ? h("section", {}, h("h3", {}, t("messages")),
    h("ul", {}, d.messages.map((m) => h("li", {}, `${fmtDateTime(m.created_at)} → ${m.recipient_username || m.recipient_user_id || ""} [${m.state}]`)))) : null;
  const snoozed = d.snoozed_by ? h("p", {}, t("snoozed_until", { t: fmtDateTime(d.snoozed_by.until || d.snoozed_by.ends_at) })) : null;
  panel.replaceChildren(...[msg, snoozed, h("div", { className: "grid3" }, checklist, resolveForm, snoozeForm), history, messages].filter(Boolean));
}

function card(ctx, a, onChange) {
  const li = h("li", { className: `alert-card ${a.severity}`, dataset: { alertId: a.id } });
  const summary = h("div", { className: "alert-summary" });
  const panel = h("div", { className: "alert-detail", id: `alert-detail-${a.id}`, hidden: true });
  const toggle = h("button", { type: "button", "aria-expanded": "false", "aria-controls": panel.id, dataset: { focusKey: `d${a.id}` } }, t("details"));
  toggle.addEventListener("click", async () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    toggle.textContent = open ? t("hide_details") : t("details");
    panel.hidden = !open;
    if (open) {
      panel.replaceChildren(h("p", {}, t("loading")));
      try { await detail(ctx, li._alert, panel, onChange); } catch (err) { panel.replaceChildren(h("p", { className: "error" }, err.message)); }
    }
  });
  li._update = (alert) => {
    li._alert = alert;
    li.className = `alert-card ${alert.severity}`;
    const ack = alert.status !== "acknowledged"
      ? h("button", {
        type: "button", className: "primary", dataset: { focusKey: `a${alert.id}` },
        "aria-label": t("ack_label", { id: alert.id, p: who(ctx, alert) }),
        onclick: async (ev) => {
          ev.target.disabled = true;
          try { await api(`/api/v1/alerts/${alert.id}/acknowledge`, { method: "POST" }); await onChange(); } catch (err) { ev.target.disabled = false; console.warn(err); }
        },
      }, t("acknowledge"))
      : null;
    const hadFocus = summary.contains(document.activeElement) ? document.activeElement.dataset.focusKey : null;
    summary.replaceChildren(
      badge(alert.severity),
      h("div", { className: "alert-main" },
        h("a", { href: `#/patients/${alert.patient_id}` }, who(ctx, alert)),
        h("span", { className: "reason" }, h("strong", {}, kindLabel(alert.kind)), " — ", alert.reason),
        h("small", {}, `${statusText(alert)} · ${t("opened_ago", { t: ago(alert.opened_at) })}`)),
      h("div", { className: "alert-actions" }, ack, toggle),
    );
    if (hadFocus) (summary.querySelector(`[data-focus-key="${hadFocus}"]`) || toggle).focus();
  };
  li.append(summary, panel);
  li._update(a);
  return li;
}

export async function render(ctx, root) {
  const list = h("ol", { id: "alert-list", className: "alert-list", "aria-labelledby": "alerts-title" });
  const empty = h("p", { id: "no-alerts" }, t("no_alerts"));
  const cards = new Map();
  const onChange = () => ctx.refresh();
  const draw = () => {
    const alerts = ctx.store.alerts.slice().sort(order);
    const ids = new Set(alerts.map((a) => a.id));
    for (const [id, li] of cards) if (!ids.has(id)) { li.remove(); cards.delete(id); }
    alerts.forEach((a, i) => {
      let li = cards.get(a.id);
      if (!li) { li = card(ctx, a, onChange); cards.set(a.id, li); } else li._update(a);
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
    });
    empty.hidden = alerts.length > 0;
  };
  root.append(h("h1", { id: "alerts-title" }, t("alerts_title")), empty, list);
  draw();
  ctx.store.listeners.add(draw);
  return () => ctx.store.listeners.delete(draw);
}
