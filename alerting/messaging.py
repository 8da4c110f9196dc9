"""What the platform says by SMS, and how it reads what people send back. Pure: no I/O.

Clinicians get short alert pages carrying the code they reply with ("ACK 12"); patients get
replies in their language (Norwegian bokmål `nb`, English `en`). Patient texts never carry a
name: a phone on a kitchen table can be read by anyone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LANGUAGES = ("nb", "en")

# Twilio's own opt-out keywords (Advanced Opt-Out defaults) and their Norwegian words.
STOP_WORDS = frozenset(
    {"stop", "stopp", "stopall", "unsubscribe", "cancel", "end", "quit", "avslutt", "slutt"}
)
START_WORDS = frozenset({"start", "unstop", "yes", "ja"})
HELP_WORDS = frozenset({"help", "info", "hjelp"})

# Readings people can plausibly text (anything else is more likely a typo than a value).
SPO2_MIN_PCT, SPO2_MAX_PCT = 50, 100
PULSE_MIN_BPM, PULSE_MAX_BPM = 25, 250

# The most alerts listed in one grouped page; the rest are counted.
GROUP_LIST_MAX = 5


# --- clinicians ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertLine:
    alert_id: int
    patient_id: int
    severity: str
    reason: str


def alert_sms(line: AlertLine, escalated: bool = False) -> str:
    """One alert page. Patient id, not name; the code acknowledges it by reply."""
    head = "oximon ESCALATED" if escalated else "oximon"
    return (
        f"{head} {line.severity.upper()}: patient #{line.patient_id}. {line.reason}."
        f" Reply ACK {line.alert_id}"
    )


def grouped_sms(lines: list[AlertLine]) -> str:
    """Several alerts for one person at once: one message, red first, one reply for all."""
    ordered = sorted(lines, key=lambda a: (a.severity != "red", a.alert_id))
    shown = ordered[:GROUP_LIST_MAX]
    out = [f"oximon: {len(ordered)} alerts"]
    out += [
        f"{a.severity.upper()} #{a.alert_id} patient #{a.patient_id}: {a.reason}" for a in shown
    ]
    if len(ordered) > len(shown):
        out.append(f"+{len(ordered) - len(shown)} more on the dashboard")
    out.append("Reply ACK " + " ".join(str(a.alert_id) for a in ordered))
    return "\n".join(out)


_ACK_RE = re.compile(r"^\s*(?:ack|ok|kvitter)\b[\s:#,.-]*(?P<codes>[\d\s,#]*)\s*$", re.IGNORECASE)


def parse_ack(text: str) -> list[int] | None:
    """The alert codes of an "ACK 12" (or "ACK 12 13") reply; None if it is not one."""
    match = _ACK_RE.match(text)
    if not match:
        return None
    return [int(c) for c in re.findall(r"\d+", match.group("codes"))]


def ack_reply(done: list[int], refused: dict[int, str]) -> str:
    parts = []
    if done:
        parts.append("Acknowledged: " + ", ".join(f"#{a}" for a in done) + ". Thank you.")
    for code, why in refused.items():
        parts.append(f"#{code}: {why}.")
    return " ".join(parts) or "Reply ACK and the alert code, for example ACK 12."


NOT_ON_ROTA = "This number is not on the on-call rota now: nothing was acknowledged."
CLINICIAN_HELP = "oximon: reply ACK and the code from the alert (for example ACK 12) to take it."
CLINICIAN_STOP = (
    "oximon: you will get no alert texts; the escalation calls the next person. START to resume."
)
CLINICIAN_START = "oximon: alert texts are on again."


# --- patients -----------------------------------------------------------------------------------


def keyword(text: str) -> str | None:
    """The keyword ("stop", "start" or "help") when the whole message is one of them."""
    word = re.sub(r"[^a-zæøå]", "", text.strip().lower())
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return None


@dataclass(frozen=True, slots=True)
class TextedReading:
    spo2_pct: int
    pulse_bpm: int


# Labels people use, normalised to SPO2 / PULSE before the numbers are read.
_SUFFIX_PCT = re.compile(r"(\d+)\s*%")
_SUFFIX_BPM = re.compile(r"(\d+)\s*(?:bpm|slag(?:/min)?|/min)\b")
_SPO2_LABEL = re.compile(
    r"\b(?:sp\s*[o0]\s*2|o2|sats?|saturasjon|saturation|metning|oksygen(?:metning)?|oxygen|oks|ox)\b"
)
_PULSE_LABEL = re.compile(r"\b(?:pulse?|hr|hf|hjertefrekvens|heart\s*rate|bpm)\b")
_TOKEN = re.compile(r"SPO2|PULSE|\d+")


def parse_reading(text: str) -> TextedReading | None:
    """A reading texted in free form: "95 72", "spo2 95 pulse 72", "O2 95% puls 72",
    "puls 72, metning 95". Two numbers without labels are SpO2 then pulse. None if unsure:
    asking again is better than storing a wrong value."""
    s = text.lower().replace(",", " ").replace(";", " ").replace(":", " ").replace("=", " ")
    s = _SUFFIX_PCT.sub(r" SPO2 \1 ", s)
    s = _SUFFIX_BPM.sub(r" PULSE \1 ", s)
    s = _SPO2_LABEL.sub(" SPO2 ", s)
    s = _PULSE_LABEL.sub(" PULSE ", s)
    # Anything left that is neither a label, a number nor filler makes the text unreadable.
    leftover = re.sub(r"SPO2|PULSE|\d+|[\s/.\-()]|og|and|er|is", "", s)
    if leftover.strip():
        return None
    labelled: dict[str, int] = {}
    loose: list[int] = []
    label: str | None = None
    for token in _TOKEN.findall(s):
        if token in ("SPO2", "PULSE"):
            label = token
            continue
        value = int(token)
        if label is None:
            loose.append(value)
        elif label in labelled:
            return None
        else:
            labelled[label] = value
        label = None
    if len(labelled) + len(loose) != 2:
        return None
    unlabelled = not labelled
    for name in ("SPO2", "PULSE"):
        if name not in labelled:
            labelled[name] = loose.pop(0)
    spo2, pulse = labelled["SPO2"], labelled["PULSE"]
    if unlabelled and spo2 > SPO2_MAX_PCT >= pulse:
        spo2, pulse = pulse, spo2  # "110 95": only pulse then SpO2 makes sense
    if not (SPO2_MIN_PCT <= spo2 <= SPO2_MAX_PCT and PULSE_MIN_BPM <= pulse <= PULSE_MAX_BPM):
        return None
    return TextedReading(spo2, pulse)


def _lang(language: str | None) -> str:
    return language if language in LANGUAGES else "nb"


# Safety advice for a red value: rest and measure again, and when to call the emergency number
# (113 in Norway). After NHS England's COVID Oximetry @home patient leaflet: a value at or
# below the red level on a repeat reading, or feeling very unwell, means urgent help now.
_TEXTS: dict[str, dict[str, str]] = {
    "nb": {
        "normal": "Takk! Registrert: SpO2 {spo2} %, puls {pulse}.",
        "amber": "Takk! Registrert: SpO2 {spo2} %, puls {pulse}. Sykepleier ser på målingen.",
        "red": (
            "Registrert: SpO2 {spo2} %, puls {pulse}. Verdien er utenfor grensen satt for deg, "
            "og sykepleier ser målingen. Hvil, varm hånden og mål på nytt. Er du tung i pusten, "
            "har brystsmerter eller føler deg svært dårlig: ring 113 nå."
        ),
        "unreadable": (
            "Vi forsto ikke meldingen. Send oksygenmetning og puls, for eksempel: 95 72. "
            "Ved akutt sykdom ring 113."
        ),
        "help": (
            "oximon hjemmeoppfølging: send målingen som «95 72» (oksygenmetning og puls). "
            "STOPP slår av SMS, START slår dem på igjen. Ved akutt sykdom ring 113."
        ),
        "stop": (
            "Du får ikke flere SMS fra oximon. Send START for å slå dem på igjen. "
            "Målinger fra oksymeteret kommer fortsatt fram."
        ),
        "start": "SMS fra oximon er slått på igjen. Send målingen som «95 72».",
        "recheck": (
            "Målingen din var lav. Hvil i 5 minutter, varm hånden og mål på nytt. Er du tung i "
            "pusten, har brystsmerter eller føler deg svært dårlig: ring 113 nå."
        ),
        "reminder": (
            "Påminnelse fra hjemmesykepleien: vi har ikke fått noen måling fra deg. "
            "Mål oksygenmetning og puls nå. Ved akutt sykdom ring 113."
        ),
        "not_saved": (
            "Beklager, målingen kunne ikke lagres nå. Prøv igjen om noen minutter. "
            "Ved akutt sykdom ring 113."
        ),
    },
    "en": {
        "normal": "Thank you! Recorded: SpO2 {spo2}%, pulse {pulse}.",
        "amber": "Thank you! Recorded: SpO2 {spo2}%, pulse {pulse}. A nurse will look at it.",
        "red": (
            "Recorded: SpO2 {spo2}%, pulse {pulse}. This is outside the limits set for you, and "
            "your nurse can see it. Rest, warm your hand and measure again. If you are short of "
            "breath, have chest pain or feel very unwell, call 113 now."
        ),
        "unreadable": (
            "Sorry, we could not read that. Send your oxygen level and pulse, for example: "
            "95 72. In an emergency call 113."
        ),
        "help": (
            'oximon home monitoring: text your reading as "95 72" (oxygen level and pulse). '
            "STOP turns texts off, START turns them on. In an emergency call 113."
        ),
        "stop": (
            "You will get no more texts from oximon. Send START to turn them on again. "
            "Readings from your oximeter still reach us."
        ),
        "start": 'Texts from oximon are on again. Send your reading as "95 72".',
        "recheck": (
            "Your reading was low. Rest for 5 minutes, warm your hand and measure again. If you "
            "are short of breath, have chest pain or feel very unwell, call 113 now."
        ),
        "reminder": (
            "Reminder from your home-care nurses: we have no reading from you. Please measure "
            "your oxygen level and pulse now. In an emergency call 113."
        ),
        "not_saved": (
            "Sorry, your reading could not be saved now. Please try again in a few minutes. "
            "In an emergency call 113."
        ),
    },
}

# The sender is unknown, so the language is too: both, briefly.
UNKNOWN_NUMBER = (
    "Dette nummeret er ikke registrert hos oximon. / "
    "This number is not registered with oximon. Ved akutt sykdom / in an emergency: 113."
)


def patient_text(what: str, language: str | None, reading: TextedReading | None = None) -> str:
    """A reply to a patient: `what` is normal, amber, red, unreadable, help, stop or start."""
    template = _TEXTS[_lang(language)][what]
    if reading is None:
        return template
    return template.format(spo2=reading.spo2_pct, pulse=reading.pulse_bpm)
