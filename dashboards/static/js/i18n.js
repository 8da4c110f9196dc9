// Texts of the dashboard in English and Norwegian bokmål; numbers, dates and "how long ago".
"use strict";

const TEXTS = {
  en: {
    app: "oximon", skip: "Skip to content", language: "Language", sound_on: "Alert sound: on",
    sound_off: "Alert sound: off", logout: "Log out", login: "Log in", username: "Username",
    password: "Password", login_title: "Log in", login_oidc: "Log in with your organisation",
    wrong_password: "Wrong username or password.", session_expired: "Your session has ended. Please log in again.",
    nav: "Main", nav_overview: "Overview", nav_alerts: "Alerts", nav_rota: "Rota and escalation",
    nav_sms: "SMS log", nav_dead: "Dead letters", nav_reports: "Reports", nav_enrol: "Enrol",
    live_stream: "Live", live_polling: "Updating every {s} s", live_offline: "Connection lost — retrying",
    updated: "Updated {t}", loading: "Loading…", none: "–", never: "never", error: "Something went wrong: {e}",
    not_available: "Not available from the API yet.",
    // severities and statuses: always words (and an icon), never colour alone
    sev_red: "RED", sev_amber: "AMBER", sev_missed: "MISSED", sev_ok: "OK",
    // alert kinds: the engine's reason text that follows is in English
    kind_spo2_low: "Low oxygen (SpO2)", kind_pulse_high: "High pulse", kind_pulse_low: "Low pulse",
    kind_trend: "Falling SpO2 trend", kind_missed_reading: "Missed reading",
    kind_device_offline: "Oximeter offline", kind_low_battery: "Oximeter battery low",
    kind_bad_quality: "Repeated poor-quality readings",
    st_open: "open", st_acknowledged: "acknowledged", st_escalated: "escalated", st_resolved: "resolved",
    taken_by: "taken by {u}", not_taken: "nobody has taken it",
    new_red: "New RED alert", new_red_for: "New RED alert: {p} — {r}", seen: "Seen", open_alerts_n: "{n} open RED",
    // overview
    overview_title: "Patients", search: "Search name or number", filter_severity: "Show",
    f_all: "All patients", f_red: "Red alerts", f_amber: "Amber alerts", f_missed: "Missed readings",
    f_attention: "Needing attention", f_quiet: "No open alert", f_device: "Only device problems",
    col_status: "Status", col_patient: "Patient", col_spo2: "SpO2", col_pulse: "Pulse", col_measured: "Measured",
    col_trend: "Last 24 h", col_device: "Device", col_alert: "Open alert", n_patients: "{n} of {m} patients",
    no_patients: "No patients match.", online: "online", offline: "offline", no_device: "no device", status_unknown: "status not reported", below_red: "at or below the red band", below_amber: "in the amber band",
    battery: "battery {n}%", spark_label: "SpO2 over 24 h: lowest {min}%, highest {max}%, now {last}%",
    spark_none: "no readings in 24 h", opened_ago: "opened {t}",
    // alerts
    alerts_title: "Alert inbox", no_alerts: "No open alerts.", acknowledge: "Acknowledge",
    ack_label: "Acknowledge alert {id} for {p}", details: "Details", hide_details: "Hide details",
    checklist: "Checklist", resolve: "Resolve", outcome: "Outcome", outcome_text: "Describe the outcome",
    note: "Note (optional)", snooze: "Snooze", minutes: "Minutes", reason: "Reason",
    include_red: "Also snooze red alerts of this kind", history: "History", who_when: "{a} by {u}, {t}",
    system: "system", escalation: "Escalation", messages: "Messages", snoozed_until: "Snoozed until {t}",
    resolved_ok: "Alert resolved.", acked_ok: "Alert acknowledged.", snoozed_ok: "Alert snoozed.",
    status: "Status", alert: "Alert", age: "Age", action: "Action", choose: "Choose…",
    // patient
    patient: "Patient", back: "Back to overview", range: "Chart range", r24h: "24 hours", r7d: "7 days", r30d: "30 days",
    chart_spo2: "SpO2 (%)", chart_pulse: "Pulse (per minute)", chart_empty: "No readings in this period.",
    chart_label_spo2: "SpO2 chart, {range}: {n} points, lowest {min}%, highest {max}%",
    chart_label_pulse: "Pulse chart, {range}: {n} points, lowest {min}, highest {max}",
    show_table: "Show the values as a table", time: "Time", mean: "Mean", min: "Lowest", max: "Highest",
    bands: "Bands", band_red: "red at or below {n}%", band_amber: "amber at or below {n}%", band_target: "target {a}–{b}%",
    band_pulse: "red at or below {a} or at or above {b}",
    baseline: "Personal baseline", baseline_none: "not known yet (needs 48 hours of readings)",
    trend: "Trend", trend_none: "not enough recent readings", trend_value: "{s} points per day",
    trend_red: "reaches the red band in about {h} h", timeline: "Timeline", timeline_none: "Nothing yet.",
    tl_readings: "{n} readings", tl_by_sms: "{n} by SMS or link", tl_sms_out: "SMS to {to}", tl_sms_in: "SMS from the patient", tl_note: "Note by {u}",
    settings: "Thresholds, target range and schedule", target_min: "Target range from (%)", target_max: "Target range to (%)",
    amber_max: "Amber at or below (%)", red_max: "Red at or below (%)", pulse_min: "Pulse red at or below",
    pulse_max: "Pulse red at or above", schedule: "Schedule", sched_spot: "Spot checks", sched_continuous: "Continuous",
    sched_times: "Times (HH:MM, comma separated)", grace: "Grace (minutes)", phone: "Phone (+47…)", save: "Save",
    saved: "Saved.", notes: "Notes", add_note: "Add note", note_text: "Note", link: "Reading link",
    send_link: "Text the patient a reading link", link_sent: "Link sent by SMS. Valid until {t}.", link_url: "Link",
    revoke_links: "Withdraw links", links_revoked: "{n} link(s) withdrawn.", discharge: "Discharge",
    discharge_reason: "Reason (optional)", discharge_confirm: "Monitoring of this patient ends now; history is kept",
    lang_nb: "Norsk bokmål", lang_en: "English", device: "Device", kind: "Kind", severity: "Severity",
    // rota
    rota_title: "On-call rota", now_on_duty: "On duty now", nurse: "Nurse", doctor: "Doctor", nobody: "nobody",
    shifts: "Shifts (yesterday to two weeks ahead)", person: "Person", role: "Role", starts: "Starts", ends: "Ends",
    priority: "Priority", delete: "Delete", add_shift: "Add shift", user_id: "User", policies: "Escalation policies",
    step: "Step", wait_min: "Wait (minutes)", notify: "Notify", repeat: "Repeat", next_person: "next in rota",
    add_step: "Add step", remove: "Remove", policy_for: "{s} alerts", source_default: "default", source_custom: "custom",
    reset_default: "Back to default", admin_only: "Only an administrator can change this.",
    // sms, dead letters
    sms_title: "SMS log", outbox: "Sent (outbox)", inbound: "Received", to: "To", from: "From", body: "Message",
    state: "State", reply: "Reply", outcome_col: "Outcome", dead_title: "Dead letters", topic: "Topic", payload: "Payload",
    received: "Received",
    // reports
    reports_title: "Reports", since: "From", until: "To", show: "Show", by_kind: "Alerts by kind and severity",
    outcomes: "Outcomes", to_ack: "Time to acknowledge", to_resolve: "Time to resolve", median: "median", p90: "90th percentile",
    count: "Count", download_csv: "Download CSV", report_source_client: "Counted in the browser from the alert list (the report endpoint is not available).",
    adherence: "Readings per patient", workload: "Actions per person",
    actionable_pct: "{a}% of {n} resolved alerts led to care; {f}% were artefacts or false alarms.",
    // enrolment
    enrol_title: "Enrol a patient", display_name: "Name", care_team: "Care team", enrol: "Enrol patient",
    enrolled: "Patient #{id} enrolled.", device_title: "Register an oximeter", serial: "Serial number", model: "Model",
    register: "Register oximeter", creds_title: "Broker credentials — shown once",
    creds_warn: "Write these into the oximeter now. They are not shown again; a lost password needs a rotation.",
    mqtt_username: "Username", mqtt_password: "Password", topic_readings: "Topic", patient_id: "Patient number",
    field_error: "{f}: {m}",
    // outcomes
    out_called_stable: "Called the patient: stable", out_home_visit: "Home visit", out_referred_hospital: "Referred to hospital",
    out_admitted: "Admitted", out_artefact_false_alarm: "Artefact or false alarm", out_other: "Other (described in words)",
  },
  nb: {
    app: "oximon", skip: "Hopp til innholdet", language: "Språk", sound_on: "Varsellyd: på",
    sound_off: "Varsellyd: av", logout: "Logg ut", login: "Logg inn", username: "Brukernavn",
    password: "Passord", login_title: "Logg inn", login_oidc: "Logg inn med virksomheten din",
    wrong_password: "Feil brukernavn eller passord.", session_expired: "Økten er utløpt. Logg inn på nytt.",
    nav: "Hovedmeny", nav_overview: "Oversikt", nav_alerts: "Varsler", nav_rota: "Vaktliste og eskalering",
    nav_sms: "SMS-logg", nav_dead: "Avviste meldinger", nav_reports: "Rapporter", nav_enrol: "Innrullering",
    live_stream: "Direkte", live_polling: "Oppdateres hvert {s}. sekund", live_offline: "Forbindelsen er brutt — prøver igjen",
    updated: "Oppdatert {t}", loading: "Laster …", none: "–", never: "aldri", error: "Noe gikk galt: {e}",
    not_available: "Ikke tilgjengelig i API-et ennå.",
    sev_red: "RØD", sev_amber: "GUL", sev_missed: "MANGLER", sev_ok: "OK",
    kind_spo2_low: "Lav oksygenmetning (SpO2)", kind_pulse_high: "Høy puls", kind_pulse_low: "Lav puls",
    kind_trend: "Fallende SpO2-trend", kind_missed_reading: "Manglende måling",
    kind_device_offline: "Oksymeteret er frakoblet", kind_low_battery: "Lavt batteri på oksymeteret",
    kind_bad_quality: "Gjentatte målinger av dårlig kvalitet",
    st_open: "åpent", st_acknowledged: "tatt", st_escalated: "eskalert", st_resolved: "avsluttet",
    taken_by: "tatt av {u}", not_taken: "ingen har tatt det",
    new_red: "Nytt RØDT varsel", new_red_for: "Nytt RØDT varsel: {p} — {r}", seen: "Sett", open_alerts_n: "{n} åpne RØDE",
    overview_title: "Pasienter", search: "Søk på navn eller nummer", filter_severity: "Vis",
    f_all: "Alle pasienter", f_red: "Røde varsler", f_amber: "Gule varsler", f_missed: "Manglende målinger",
    f_attention: "Trenger oppfølging", f_quiet: "Uten åpent varsel", f_device: "Bare utstyrsproblemer",
    col_status: "Status", col_patient: "Pasient", col_spo2: "SpO2", col_pulse: "Puls", col_measured: "Målt",
    col_trend: "Siste døgn", col_device: "Oksymeter", col_alert: "Åpent varsel", n_patients: "{n} av {m} pasienter",
    no_patients: "Ingen pasienter passer.", online: "tilkoblet", offline: "frakoblet", no_device: "uten oksymeter", status_unknown: "status ikke meldt", below_red: "i rødt område", below_amber: "i gult område",
    battery: "batteri {n} %", spark_label: "SpO2 siste døgn: lavest {min} %, høyest {max} %, nå {last} %",
    spark_none: "ingen målinger siste døgn", opened_ago: "åpnet {t}",
    alerts_title: "Varsler", no_alerts: "Ingen åpne varsler.", acknowledge: "Ta varselet",
    ack_label: "Ta varsel {id} for {p}", details: "Detaljer", hide_details: "Skjul detaljer",
    checklist: "Sjekkliste", resolve: "Avslutt", outcome: "Utfall", outcome_text: "Beskriv utfallet",
    note: "Notat (valgfritt)", snooze: "Utsett", minutes: "Minutter", reason: "Begrunnelse",
    include_red: "Utsett også røde varsler av denne typen", history: "Historikk", who_when: "{a} av {u}, {t}",
    system: "systemet", escalation: "Eskalering", messages: "Meldinger", snoozed_until: "Utsatt til {t}",
    resolved_ok: "Varselet er avsluttet.", acked_ok: "Varselet er tatt.", snoozed_ok: "Varselet er utsatt.",
    status: "Status", alert: "Varsel", age: "Alder", action: "Handling", choose: "Velg …",
    patient: "Pasient", back: "Tilbake til oversikten", range: "Periode", r24h: "24 timer", r7d: "7 dager", r30d: "30 dager",
    chart_spo2: "SpO2 (%)", chart_pulse: "Puls (per minutt)", chart_empty: "Ingen målinger i perioden.",
    chart_label_spo2: "SpO2-graf, {range}: {n} punkter, lavest {min} %, høyest {max} %",
    chart_label_pulse: "Pulsgraf, {range}: {n} punkter, lavest {min}, høyest {max}",
    show_table: "Vis verdiene som tabell", time: "Tid", mean: "Snitt", min: "Lavest", max: "Høyest",
    bands: "Grenser", band_red: "rød ved {n} % eller lavere", band_amber: "gul ved {n} % eller lavere", band_target: "mål {a}–{b} %",
    band_pulse: "rød ved {a} eller lavere, eller {b} eller høyere",
    baseline: "Personlig utgangsverdi", baseline_none: "ikke kjent ennå (trenger 48 timer med målinger)",
    trend: "Utvikling", trend_none: "for få nye målinger", trend_value: "{s} prosentpoeng per døgn",
    trend_red: "når rød grense om omtrent {h} t", timeline: "Tidslinje", timeline_none: "Ingenting ennå.",
    tl_readings: "{n} målinger", tl_by_sms: "{n} på SMS eller lenke", tl_sms_out: "SMS til {to}", tl_sms_in: "SMS fra pasienten", tl_note: "Notat av {u}",
    settings: "Grenser, målområde og måleplan", target_min: "Målområde fra (%)", target_max: "Målområde til (%)",
    amber_max: "Gul ved eller under (%)", red_max: "Rød ved eller under (%)", pulse_min: "Puls rød ved eller under",
    pulse_max: "Puls rød ved eller over", schedule: "Måleplan", sched_spot: "Stikkprøver", sched_continuous: "Kontinuerlig",
    sched_times: "Tidspunkter (TT:MM, kommaseparert)", grace: "Slingringsmonn (minutter)", phone: "Telefon (+47 …)", save: "Lagre",
    saved: "Lagret.", notes: "Notater", add_note: "Legg til notat", note_text: "Notat", link: "Målelenke",
    send_link: "Send pasienten en målelenke på SMS", link_sent: "Lenken er sendt på SMS. Gjelder til {t}.", link_url: "Lenke",
    revoke_links: "Trekk tilbake lenker", links_revoked: "{n} lenke(r) trukket tilbake.", discharge: "Skriv ut",
    discharge_reason: "Begrunnelse (valgfritt)", discharge_confirm: "Oppfølgingen av pasienten avsluttes nå; historikken beholdes",
    lang_nb: "Norsk bokmål", lang_en: "English", device: "Oksymeter", kind: "Type", severity: "Alvorlighet",
    rota_title: "Vaktliste", now_on_duty: "På vakt nå", nurse: "Sykepleier", doctor: "Lege", nobody: "ingen",
    shifts: "Vakter (fra i går til om to uker)", person: "Person", role: "Rolle", starts: "Starter", ends: "Slutter",
    priority: "Prioritet", delete: "Slett", add_shift: "Legg til vakt", user_id: "Bruker", policies: "Eskaleringsregler",
    step: "Trinn", wait_min: "Vent (minutter)", notify: "Varsle", repeat: "Gjenta", next_person: "neste på vaktlisten",
    add_step: "Legg til trinn", remove: "Fjern", policy_for: "{s} varsler", source_default: "standard", source_custom: "tilpasset",
    reset_default: "Tilbake til standard", admin_only: "Bare en administrator kan endre dette.",
    sms_title: "SMS-logg", outbox: "Sendt (utboks)", inbound: "Mottatt", to: "Til", from: "Fra", body: "Melding",
    state: "Tilstand", reply: "Svar", outcome_col: "Utfall", dead_title: "Avviste meldinger", topic: "Emne", payload: "Innhold",
    received: "Mottatt",
    reports_title: "Rapporter", since: "Fra", until: "Til", show: "Vis", by_kind: "Varsler etter type og alvorlighet",
    outcomes: "Utfall", to_ack: "Tid til varselet ble tatt", to_resolve: "Tid til avslutning", median: "median", p90: "90-persentil",
    count: "Antall", download_csv: "Last ned CSV", report_source_client: "Talt i nettleseren fra varsellisten (rapport-endepunktet finnes ikke).",
    adherence: "Målinger per pasient", workload: "Handlinger per person",
    actionable_pct: "{a} % av {n} avsluttede varsler førte til helsehjelp; {f} % var målefeil eller falske alarmer.",
    enrol_title: "Innrullér en pasient", display_name: "Navn", care_team: "Team", enrol: "Innrullér pasient",
    enrolled: "Pasient #{id} er innrullert.", device_title: "Registrer et oksymeter", serial: "Serienummer", model: "Modell",
    register: "Registrer oksymeter", creds_title: "Påloggingsdata for megleren — vises én gang",
    creds_warn: "Legg dem inn i oksymeteret nå. De vises ikke igjen; et tapt passord krever nytt passord (rotasjon).",
    mqtt_username: "Brukernavn", mqtt_password: "Passord", topic_readings: "Emne", patient_id: "Pasientnummer",
    field_error: "{f}: {m}",
    out_called_stable: "Ringt pasienten: stabil", out_home_visit: "Hjemmebesøk", out_referred_hospital: "Henvist til sykehus",
    out_admitted: "Innlagt", out_artefact_false_alarm: "Målefeil eller falsk alarm", out_other: "Annet (beskrevet med ord)",
  },
};

let current = "en";

export function browserLanguage() {
  for (const tag of navigator.languages || [navigator.language || "en"]) {
    const base = tag.toLowerCase().split("-")[0];
    if (["nb", "no", "nn"].includes(base)) return "nb";
    if (base === "en") return "en";
  }
  return "en";
}

export function setLanguage(lang) {
  current = TEXTS[lang] ? lang : "en";
  document.documentElement.lang = current === "nb" ? "nb" : "en";
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  return current;
}

export function language() { return current; }

// An alert's kind in the user's language ("spo2_low" → "Low oxygen (SpO2)"), for the line
// before the engine's own reason; an unknown kind is shown as it is.
export function kindLabel(kind) {
  const key = `kind_${kind}`;
  return TEXTS[current][key] ?? TEXTS.en[key] ?? kind;
}

export function t(key, vars = {}) {
  const text = TEXTS[current][key] ?? TEXTS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (vars[name] ?? `{${name}}`));
}

const locale = () => (current === "nb" ? "nb-NO" : "en-GB");
export const ZONE = "Europe/Oslo";

export function fmtTime(iso) {
  if (!iso) return t("none");
  return new Date(iso).toLocaleTimeString(locale(), { hour: "2-digit", minute: "2-digit", timeZone: ZONE });
}
export function fmtDateTime(iso) {
  if (!iso) return t("none");
  return new Date(iso).toLocaleString(locale(), { dateStyle: "short", timeStyle: "short", timeZone: ZONE });
}
export function fmtNumber(n, digits = 0) {
  if (n === null || n === undefined) return t("none");
  return Number(n).toLocaleString(locale(), { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

/** "3 min ago" / "for 3 min siden"; `now` lets a caller use the server's clock. */
export function ago(iso, now = Date.now()) {
  if (!iso) return t("never");
  const s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  const rtf = new Intl.RelativeTimeFormat(locale(), { numeric: "always", style: "short" });
  if (s < 90) return rtf.format(-s, "second");
  if (s < 5400) return rtf.format(-Math.round(s / 60), "minute");
  if (s < 172800) return rtf.format(-Math.round(s / 3600), "hour");
  return rtf.format(-Math.round(s / 86400), "day");
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return t("none");
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${fmtNumber(seconds / 3600, 1)} h`;
}
