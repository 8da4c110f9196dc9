"""A local HTTP server that speaks the part of Twilio's REST API oximon uses, for tests and the
benchmark: the real `twilio` library talks HTTP to it.

* `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (Basic auth with the account sid and
  auth token) creates a message and answers 201 with a message resource shaped like Twilio's;
  errors are Twilio's JSON errors (21211 invalid number, 21610 unsubscribed, 20003 auth, 5xx).
* `GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json` fetches one.
* After a message is created, its `StatusCallback` receives `sent` and then `delivered` (or
  `undelivered`/`failed`), form-encoded and signed with `X-Twilio-Signature` as Twilio does.
* `inbound()` plays Twilio delivering a patient's or clinician's text to our webhook.

What a number does is set with `behave(number, …)`: deliver (default), `invalid` (400 21211),
`unsubscribed` (400 21610), `undelivered` or `failed` (accepted, then the callback says so), or
`transient` for the next n requests (503, then normal).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import httpx
from twilio.request_validator import RequestValidator

API = "2010-04-01"
_CREATE = re.compile(rf"^/{API}/Accounts/(?P<account>AC\w+)/Messages\.json$")
_FETCH = re.compile(rf"^/{API}/Accounts/(?P<account>AC\w+)/Messages/(?P<sid>SM\w+)\.json$")


@dataclass
class Message:
    sid: str
    to: str
    from_: str
    body: str
    status_callback: str | None
    received_wall_s: float
    status: str = "queued"
    error_code: int | None = None
    callbacks: list[tuple[str, int]] = field(default_factory=list)  # (status, HTTP answer)

    def codes(self) -> list[int]:
        """The alert codes a page asks to be acknowledged with ("Reply ACK 12 13")."""
        match = re.search(r"Reply ACK ([\d ]+)", self.body)
        return [int(c) for c in match.group(1).split()] if match else []


@dataclass
class _Behaviour:
    outcome: str = "deliver"  # deliver | invalid | unsubscribed | undelivered | failed
    transient: int = 0  # answer 503 to this many requests first


def _rfc2822(at: datetime) -> str:
    return format_datetime(at)


class FakeTwilio:
    def __init__(self, account_sid: str, auth_token: str, callback_delay_s: float = 0.05) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.callback_delay_s = callback_delay_s
        self.messages: list[Message] = []
        self.requests = 0
        self.refused: list[tuple[int, str]] = []  # (HTTP status, Twilio code) answered
        self._behaviour: dict[str, _Behaviour] = {}
        self._lock = threading.Lock()
        self._validator = RequestValidator(auth_token)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                fake._post(self)

            def do_GET(self) -> None:  # noqa: N802
                fake._get(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- control ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeTwilio:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def behave(self, number: str, outcome: str = "deliver", transient: int = 0) -> None:
        with self._lock:
            self._behaviour[number] = _Behaviour(outcome, transient)

    def sent_to(self, number: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.to == number]

    def wait_for(
        self, condition: Callable[[list[Message]], Any], timeout_s: float = 15, what: str = ""
    ) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                snapshot = list(self.messages)
            found = condition(snapshot)
            if found:
                return found
            time.sleep(0.02)
        summary = [(m.to, m.body[:60]) for m in self.messages]
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; sent: {summary}")

    def sign(self, url: str, params: dict[str, str]) -> str:
        return str(self._validator.compute_signature(url, params))

    def inbound(
        self,
        client: Any,
        url: str,
        from_: str,
        body: str,
        to: str = "+4759440000",
        sid: str | None = None,
    ) -> httpx.Response:
        """Deliver a text to our webhook at `url` as Twilio would (signed, form-encoded).
        `client` is an httpx.Client or a FastAPI TestClient; `url` the full URL it will see."""
        params = {
            "ToCountry": "NO",
            "SmsMessageSid": sid or "SM" + secrets.token_hex(16),
            "NumMedia": "0",
            "FromCountry": "NO",
            "SmsSid": "",
            "Body": body,
            "To": to,
            "From": from_,
            "NumSegments": "1",
            "ApiVersion": API,
            "AccountSid": self.account_sid,
        }
        params["MessageSid"] = params["SmsSid"] = params["SmsMessageSid"]
        headers = {"X-Twilio-Signature": self.sign(url, params)}
        response: httpx.Response = client.post(url, data=params, headers=headers)
        return response

    # --- the API ---------------------------------------------------------------------------

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Twilio-Request-Id", "RQ" + secrets.token_hex(16))
        handler.end_headers()
        handler.wfile.write(data)

    def _error(self, handler: BaseHTTPRequestHandler, status: int, code: int, message: str) -> None:
        with self._lock:
            self.refused.append((status, str(code)))
        self._reply(
            handler,
            status,
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
        )

    def _authorised(self, handler: BaseHTTPRequestHandler, account: str) -> bool:
        header = handler.headers.get("Authorization", "")
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return account == self.account_sid and header == f"Basic {expected}"

    def _resource(self, m: Message, created: datetime) -> dict[str, Any]:
        uri = f"/{API}/Accounts/{self.account_sid}/Messages/{m.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API,
            "body": m.body,
            "date_created": _rfc2822(created),
            "date_sent": None,
            "date_updated": _rfc2822(created),
            "direction": "outbound-api",
            "error_code": m.error_code,
            "error_message": None,
            "from": m.from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": str(max(1, -(-len(m.body) // 153))),
            "price": None,
            "price_unit": "USD",
            "sid": m.sid,
            "status": m.status,
            "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
            "to": m.to,
            "uri": f"{uri}.json",
        }

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        arrived = time.time()
        length = int(handler.headers.get("Content-Length") or 0)
        params = dict(parse_qsl(handler.rfile.read(length).decode()))
        match = _CREATE.match(handler.path)
        with self._lock:
            self.requests += 1
        if not match:
            self._error(handler, 404, 20404, "The requested resource was not found")
            return
        if not self._authorised(handler, match.group("account")):
            self._error(handler, 401, 20003, "Authenticate")
            return
        to, from_, body = params.get("To"), params.get("From"), params.get("Body")
        if not to:
            self._error(handler, 400, 21604, "A 'To' phone number is required.")
            return
        if not from_:
            self._error(handler, 400, 21603, "A 'From' phone number is required.")
            return
        if not body:
            self._error(handler, 400, 21602, "Message body is required.")
            return
        with self._lock:
            rule = self._behaviour.setdefault(to, _Behaviour())
            transient = rule.transient > 0
            if transient:
                rule.transient -= 1
            outcome = rule.outcome
        if transient:
            self._error(handler, 503, 20503, "Service Unavailable")
            return
        if outcome == "invalid":
            self._error(handler, 400, 21211, f"The 'To' number {to} is not a valid phone number.")
            return
        if outcome == "unsubscribed":
            self._error(handler, 400, 21610, "Attempt to send to unsubscribed recipient")
            return
        message = Message(
            "SM" + secrets.token_hex(16), to, from_, body, params.get("StatusCallback"), arrived
        )
        with self._lock:
            self.messages.append(message)
        self._reply(handler, 201, self._resource(message, datetime.now(UTC)))
        if message.status_callback:
            final = {"undelivered": "undelivered", "failed": "failed"}.get(outcome, "delivered")
            threading.Thread(target=self._callbacks, args=(message, final), daemon=True).start()

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        match = _FETCH.match(handler.path)
        if not match or not self._authorised(handler, match.group("account")):
            self._error(handler, 404, 20404, "The requested resource was not found")
            return
        with self._lock:
            found = [m for m in self.messages if m.sid == match.group("sid")]
        if not found:
            self._error(handler, 404, 20404, "The requested resource was not found")
            return
        self._reply(handler, 200, self._resource(found[0], datetime.now(UTC)))

    def _callbacks(self, message: Message, final: str) -> None:
        assert message.status_callback
        with httpx.Client(timeout=10) as client:
            for status in ("sent", final):
                time.sleep(self.callback_delay_s)
                params = {
                    "AccountSid": self.account_sid,
                    "ApiVersion": API,
                    "From": message.from_,
                    "To": message.to,
                    "MessageSid": message.sid,
                    "SmsSid": message.sid,
                    "MessageStatus": status,
                    "SmsStatus": status,
                }
                if status in ("undelivered", "failed"):
                    params["ErrorCode"] = "30003" if status == "undelivered" else "30008"
                message.status = status
                headers = {"X-Twilio-Signature": self.sign(message.status_callback, params)}
                try:
                    answer = client.post(message.status_callback, data=params, headers=headers)
                    code = answer.status_code
                except httpx.HTTPError:
                    code = 0
                with self._lock:
                    message.callbacks.append((status, code))
