"""Schema-driven test: schemathesis generates requests from the API's own OpenAPI document, valid
and invalid, for every operation, and sends them over real HTTP to `oximon api` (a real
subprocess on a real database), as an admin and as a nurse. No answer may be a server error.

Bounded: a few examples per operation (the suite's time is not a benchmark). The live stream
(`GET /api/v1/stream`, server-sent events that never end by design) is left out. On a loaded
2-core machine the module takes about a minute; most of it is argon2 hashing the generated
passwords of POST /api/v1/users, slow on purpose.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from psycopg.rows import dict_row
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error

from api.app import create_app
from api.security import CurrentUser, issue_token
from core.settings import Settings
from oximon.localstack import free_port
from tests.conftest import TABLES, Service, Stack, _answers_healthz, _hash
from tests.helpers import wait_until

SECRET = "schema-test-jwt-secret-0123456789abcdef"  # noqa: S105 - a test server

# The document comes from the application itself (no database needed to build it).
_spec = create_app(Settings(jwt_secret=SecretStr(SECRET))).openapi()
schema = schemathesis.openapi.from_dict(_spec).exclude(path="/api/v1/stream")


_roles = itertools.cycle(("admin", "nurse"))


@dataclass
class LiveAPI:
    url: str
    headers: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def live_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAPI]:
    """One API server for the whole module, with a care team, a second team and a patient with
    readings, an alert and notes, so that generated ids sometimes hit real records."""
    with psycopg.connect(stack.database_url, autocommit=True, row_factory=dict_row) as db:
        db.execute(f"TRUNCATE {TABLES}, audit_log, patient_notes RESTART IDENTITY CASCADE")
        db.execute("DELETE FROM care_teams WHERE id > (SELECT min(id) FROM care_teams)")
        users = {}
        for role in ("admin", "nurse", "doctor"):
            uid = db.execute(
                "INSERT INTO users (username, full_name, role, password_hash)"
                " VALUES (%s, %s, %s, %s) RETURNING id",
                (role, f"Test {role}", role, _hash(f"{role}-password")),
            ).fetchone()["id"]
            db.execute(
                "INSERT INTO user_care_teams VALUES (%s, oximon_default_care_team())", (uid,)
            )
            users[role] = CurrentUser(uid, role, role)
        pid = db.execute(
            "INSERT INTO patients (display_name, phone) VALUES ('Synthetic S', '+4791000001')"
            " RETURNING id"
        ).fetchone()["id"]
        db.execute(
            "INSERT INTO readings (time, device_id, patient_id, spo2, pulse, received_at)"
            " SELECT now() - g * interval '1 minute', 'oxi-s1', %s, 95, 70, now()"
            " FROM generate_series(1, 60) g",
            (pid,),
        )
        db.execute(
            "INSERT INTO alerts (patient_id, kind, severity, opened_at, updated_at, reason)"
            " VALUES (%s, 'spo2_low', 'amber', now(), now(), 'test')",
            (pid,),
        )
        db.execute(
            "INSERT INTO patient_notes (patient_id, author_id, at, body)"
            " VALUES (%s, %s, now(), 'x')",
            (pid, users["nurse"].id),
        )
    api_settings = Settings(
        database_url=stack.database_url,
        mqtt_url=f"mqtt://oximon-service:service-test-password@127.0.0.1:{stack.broker.port}",
        mqtt_admin_url=stack.broker.admin_url,
        jwt_secret=SecretStr(SECRET),
        api_port=free_port(),
        # Generated logins must not trip the limit before the lock-out is exercised.
        rate_limit_login="10000/minute",
        rate_limit_sms_inbound="10000/minute",
    )
    url = f"http://127.0.0.1:{api_settings.api_port}"
    log = Path(tmp_path_factory.mktemp("schema")) / "api.log"
    server = Service(["api"], api_settings, log)
    server.start()
    try:
        wait_until(lambda: _answers_healthz(url) or server._died(), 20, "the API to answer")
        if server._died():
            raise AssertionError(f"api exited:\n{server.log()}")
        headers = {
            role: {
                "Authorization": "Bearer "
                + issue_token(SECRET, users[role], api_settings.token_ttl_s)
            }
            for role in ("admin", "nurse")
        }
        yield LiveAPI(url, headers)
        assert "Traceback" not in server.log(), server.log()[-5000:]
    finally:
        server.stop()


@schema.parametrize()
@settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.timeout(300)
def test_no_request_makes_the_api_answer_with_a_server_error(
    case: schemathesis.Case, live_api: LiveAPI
) -> None:
    # Each generated request goes once, as an admin or a nurse in turn: both roles meet every
    # operation, at half the time of sending each request twice.
    role = next(_roles)
    headers = {**(case.headers or {}), **live_api.headers[role]}
    response = case.call(base_url=live_api.url, headers=headers, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])
