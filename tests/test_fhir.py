"""FHIR R4 export: Patient, Observations (LOINC, UCUM) as a searchset Bundle, alerts as Flags;
every error an OperationOutcome; another care team's patient is a 404.

Resources are validated with `fhir.resources`' R4B models: the package's current releases carry
R5, R4B and STU3 but no longer R4 (its R4 release needs pydantic 1). Patient, Observation,
Flag, Bundle and OperationOutcome are the same in R4 and R4B.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient

from tests import test_care_teams, test_latest
from tests.test_api import T0, add_reading, open_alert

FHIR = "application/fhir+json"
other_team, neighbour = test_care_teams.other_team, test_latest.neighbour  # fixtures


def _outcome(res: Any, status: int) -> str:
    assert res.status_code == status, res.text
    assert res.headers["content-type"].startswith(FHIR)
    body = res.json()
    OperationOutcome.model_validate(body)
    return str(body["issue"][0]["diagnostics"])


def test_patient_is_a_valid_fhir_patient(
    client: TestClient, nurse: dict[str, str], patient: int, db: psycopg.Connection
) -> None:
    res = client.get(f"/fhir/Patient/{patient}", headers=nurse)
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith(FHIR)
    body = res.json()
    Patient.model_validate(body)
    assert (body["resourceType"], body["id"], body["active"]) == ("Patient", str(patient), True)
    assert body["name"] == [{"text": "Synthetic Test Patient"}]
    assert body["telecom"][0]["value"] == "+4791000001"
    assert body["communication"][0]["language"]["coding"][0]["code"] == "nb"
    audited = db.execute(
        "SELECT count(*) AS n FROM audit_log WHERE action = 'fhir.patient.read'"
        " AND patient_id = %s",
        (patient,),
    ).fetchone()
    assert audited["n"] == 1


def test_observations_are_loinc_coded_vital_signs_in_a_searchset_bundle(
    client: TestClient, db: psycopg.Connection, nurse: dict[str, str], patient: int
) -> None:
    # Oslo is UTC+1 in November: the local day 2026-11-24 is 23:00Z the day before to 23:00Z.
    add_reading(db, patient, T0 - timedelta(hours=9, minutes=1), 90, device_id="oxi_1")  # 22:59Z
    add_reading(db, patient, T0, 95, pulse=72, device_id="oxi_1")
    add_reading(db, patient, T0 + timedelta(minutes=1), 94, pulse=75, device_id="oxi_1")
    add_reading(db, patient, T0 + timedelta(hours=15), 93, device_id="oxi_1")  # 23:00Z: next day
    db.execute("UPDATE readings SET quality = 'motion' WHERE spo2 = 94")

    res = client.get(
        "/fhir/Observation",
        params=[("patient", str(patient)), ("date", "ge2026-11-24"), ("date", "lt2026-11-25")],
        headers=nurse,
    )
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith(FHIR)
    body = res.json()
    Bundle.model_validate(body)
    assert (body["type"], body["total"]) == ("searchset", 4)
    resources = [e["resource"] for e in body["entry"]]
    spo2 = [r for r in resources if r["code"]["coding"][0]["code"] == "59408-5"]
    pulse = [r for r in resources if r["code"]["coding"][0]["code"] == "8867-4"]
    assert [o["valueQuantity"]["value"] for o in spo2] == [95, 94]
    assert [o["valueQuantity"]["value"] for o in pulse] == [72, 75]
    first = spo2[0]
    assert first["valueQuantity"] == {
        "value": 95,
        "unit": "%",
        "system": "http://unitsofmeasure.org",
        "code": "%",
    }
    assert pulse[0]["valueQuantity"]["code"] == "/min"
    assert first["category"][0]["coding"][0]["code"] == "vital-signs"
    assert {c["code"] for c in first["code"]["coding"]} == {"59408-5", "2708-6"}
    assert first["effectiveDateTime"] == "2026-11-24T08:00:00Z"
    assert first["subject"] == {"reference": f"Patient/{patient}"}
    assert first["device"]["identifier"]["value"] == "oxi_1"
    assert "note" not in first and "motion" in spo2[1]["note"][0]["text"]
    # Each entry's fullUrl reads back the same Observation.
    again = client.get(body["entry"][0]["fullUrl"].split("testserver")[-1], headers=nurse)
    assert again.status_code == 200 and again.json() == body["entry"][0]["resource"]


def test_observation_code_filter_and_paging_by_next_link(
    client: TestClient, db: psycopg.Connection, nurse: dict[str, str], patient: int
) -> None:
    for minute in range(5):
        add_reading(db, patient, T0 + timedelta(minutes=minute), 90 + minute)
    params = {"patient": f"Patient/{patient}", "code": "http://loinc.org|59408-5", "_count": "2"}
    values = []
    url: str | None = "/fhir/Observation"
    pages = 0
    while url:
        res = client.get(url, params=params if pages == 0 else None, headers=nurse)
        body = res.json()
        Bundle.model_validate(body)
        assert body["total"] == 5
        values += [e["resource"]["valueQuantity"]["value"] for e in body["entry"]]
        nxt = [link["url"] for link in body["link"] if link["relation"] == "next"]
        url = nxt[0].split("testserver")[-1] if nxt else None
        pages += 1
    assert values == [90, 91, 92, 93, 94] and pages == 3


def test_date_prefixes_with_times_select_by_instant(
    client: TestClient, db: psycopg.Connection, nurse: dict[str, str], patient: int
) -> None:
    for minute in range(4):
        add_reading(db, patient, T0 + timedelta(minutes=minute), 90 + minute)
    res = client.get(
        "/fhir/Observation",
        params=[
            ("patient", str(patient)),
            ("date", "gt2026-11-24T09:00+01:00"),  # after the minute 08:00Z
            ("date", "le2026-11-24T08:02:00Z"),
            ("code", "59408-5"),
        ],
        headers=nurse,
    )
    assert [e["resource"]["valueQuantity"]["value"] for e in res.json()["entry"]] == [91, 92]


def test_open_alerts_are_active_flags_with_their_priority(
    client: TestClient, db: psycopg.Connection, nurse: dict[str, str], patient: int
) -> None:
    red = open_alert(db, patient, "spo2_low", "red")
    amber = open_alert(db, patient, "device_offline", "amber")
    done = open_alert(db, patient, "pulse_high", "amber")
    db.execute(
        "UPDATE alerts SET status = 'resolved', resolved_at = opened_at + interval '1 hour',"
        " outcome = 'called_stable' WHERE id = %s",
        (done,),
    )
    res = client.get("/fhir/Flag", params={"patient": patient, "status": "active"}, headers=nurse)
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith(FHIR)
    body = res.json()
    Bundle.model_validate(body)
    flags = {e["resource"]["id"]: e["resource"] for e in body["entry"]}
    assert set(flags) == {str(red), str(amber)}
    priority = flags[str(red)]["extension"][0]
    assert priority["url"] == "http://hl7.org/fhir/StructureDefinition/flag-priority"
    assert priority["valueCodeableConcept"]["coding"][0]["code"] == "PH"
    assert flags[str(amber)]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] == "PM"
    assert flags[str(red)]["status"] == "active"
    assert flags[str(red)]["period"]["start"] == "2026-11-24T08:00:00Z"
    assert flags[str(red)]["code"]["coding"][0]["code"] == "spo2_low"
    assert flags[str(amber)]["category"][0]["coding"][0]["code"] == "admin"

    everything = client.get("/fhir/Flag", params={"patient": patient}, headers=nurse).json()
    ended = [e["resource"] for e in everything["entry"] if e["resource"]["id"] == str(done)]
    assert ended[0]["status"] == "inactive" and ended[0]["period"]["end"] == "2026-11-24T09:00:00Z"


@pytest.mark.parametrize(
    "path",
    [
        "/fhir/Patient/{patient}",
        "/fhir/Observation?patient={patient}",
        "/fhir/Flag?patient={patient}&status=active",
    ],
)
def test_another_teams_patient_is_a_404_operation_outcome_like_an_unknown_one(
    client: TestClient, nurse: dict[str, str], neighbour: dict[str, Any], path: str
) -> None:
    theirs = _outcome(client.get(path.format(patient=neighbour["patient"]), headers=nurse), 404)
    unknown = _outcome(client.get(path.format(patient=999_999), headers=nurse), 404)
    assert theirs.replace(str(neighbour["patient"]), "N") == unknown.replace("999999", "N")
    assert "Synthetic" not in theirs


def test_without_a_token_fhir_answers_401_as_an_operation_outcome(
    client: TestClient, patient: int
) -> None:
    assert "authenticated" in _outcome(client.get(f"/fhir/Patient/{patient}"), 401).lower()
    bad = {"Authorization": "Bearer forged"}
    _outcome(client.get("/fhir/Observation", params={"patient": patient}, headers=bad), 401)


def test_every_clinician_role_may_read_fhir(
    client: TestClient,
    doctor: dict[str, str],
    admin: dict[str, str],
    patient: int,
) -> None:
    for headers in (doctor, admin):
        assert client.get(f"/fhir/Patient/{patient}", headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "patient"),
        ({"patient": "abc"}, "patient"),
        ({"patient": "²"}, "patient"),  # a digit to str.isdigit, not to int()
        ({"patient": "{p}", "date": "2026-13-01"}, "date"),
        ({"patient": "{p}", "date": "ge2026-11-01T08:00"}, "date"),
        ({"patient": "{p}", "date": "sa2026-11-01"}, "date"),
        ({"patient": "{p}", "date": "yesterday"}, "date"),
        ({"patient": "{p}", "code": "1234-5"}, "code"),
        ({"patient": "{p}", "_count": "0"}, "_count"),
        ({"patient": "{p}", "_count": "many"}, "_count"),
    ],
)
def test_bad_observation_search_parameters_are_400_naming_the_parameter(
    client: TestClient, nurse: dict[str, str], patient: int, params: dict[str, str], field: str
) -> None:
    query = {k: v.format(p=patient) for k, v in params.items()}
    res = client.get("/fhir/Observation", params=query, headers=nurse)
    diagnostics = _outcome(res, 400)
    assert diagnostics.startswith(f"{field}:"), diagnostics
    assert res.json()["issue"][0]["expression"] == [field]


def test_bad_flag_status_is_400_naming_status(
    client: TestClient, nurse: dict[str, str], patient: int
) -> None:
    res = client.get("/fhir/Flag", params={"patient": patient, "status": "open"}, headers=nurse)
    assert _outcome(res, 400).startswith("status:")


def test_capability_statement_names_the_resources(client: TestClient) -> None:
    body = client.get("/fhir/metadata").json()
    assert body["fhirVersion"] == "4.0.1"
    assert {r["type"] for r in body["rest"][0]["resource"]} == {"Patient", "Observation", "Flag"}
