"""The audit log: who read or changed which patient's record, when, from where."""

from __future__ import annotations

import psycopg

from api.audit import record
from api.security import CurrentUser
from tests.conftest import Team


def test_record_keeps_who_what_which_patient_and_detail(
    db: psycopg.Connection, care_team: Team, patient: int
) -> None:
    nurse = CurrentUser(int(care_team["nurse"]["id"]), "nurse", "nurse")
    record(db, nurse, "patient.read", patient_id=patient, ip="127.0.0.1", fields=["bands"])
    row = db.execute("SELECT * FROM audit_log").fetchone()
    assert row["user_id"] == nurse.id
    assert row["action"] == "patient.read"
    assert (row["object_kind"], row["object_id"], row["patient_id"]) == (
        "patient",
        str(patient),
        patient,
    )
    assert row["detail"] == {"fields": ["bands"]}
    assert row["ip"] == "127.0.0.1"
