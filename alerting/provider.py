"""Outgoing SMS through the real `twilio` library, and what its answers and errors mean.

The library is pointed at another endpoint the way its maintainers document for proxies and
test servers: a custom `http_client` (a `TwilioHttpClient` subclass) that rewrites
`https://api.twilio.com` to the configured base URL. Connection failures (the request never
left) are retried inside the call with a short backoff; throttling (429) and server errors
(5xx) are transient and retried by the outbox with a longer backoff; any other 4xx (a wrong
number, an opted-out recipient) is permanent and moves the escalation on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.util.retry import Retry

# In-call retries of a connection that could not be made (safe: nothing was sent).
CONNECT_RETRIES = 2
CONNECT_BACKOFF_S = 0.2


class SendError(Exception):
    def __init__(self, message: str, *, transient: bool, code: str | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.code = code


@dataclass(frozen=True, slots=True)
class Sent:
    provider_id: str
    status: str  # Twilio's status of the new message: queued, accepted, sending, sent …


# send(recipient, body) -> Sent; raises SendError.
Sender = Callable[[str, str], Sent]


class RoutedHttpClient(TwilioHttpClient):
    """Twilio's own HTTP client, sending to `base_url` instead of https://api.twilio.com."""

    def __init__(self, base_url: str | None, timeout_s: float) -> None:
        super().__init__(timeout=timeout_s)
        self.base_url = base_url.rstrip("/") if base_url else None
        retry = Retry(
            total=CONNECT_RETRIES,
            connect=CONNECT_RETRIES,
            read=0,
            status=0,
            other=0,
            backoff_factor=CONNECT_BACKOFF_S,
            allowed_methods=None,
        )
        assert self.session is not None
        for prefix in ("http://", "https://"):
            self.session.mount(prefix, HTTPAdapter(max_retries=retry))

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if self.base_url:
            parts = urlsplit(url)
            if (parts.hostname or "").endswith("twilio.com"):
                url = self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
        return super().request(method, url, params, data, headers, auth, timeout, allow_redirects)


def _status_text(value: Any) -> str:
    return str(getattr(value, "value", value) or "queued")


def twilio_sender(
    account_sid: str,
    auth_token: str,
    from_number: str,
    *,
    api_url: str | None = None,
    status_callback: str | None = None,
    timeout_s: float = 10.0,
) -> Sender:
    """A `Sender` over Twilio's Messages API (or a compatible endpoint at `api_url`)."""
    client = Client(account_sid, auth_token, http_client=RoutedHttpClient(api_url, timeout_s))

    def send(recipient: str, body: str) -> Sent:
        options: dict[str, Any] = {"to": recipient, "from_": from_number, "body": body}
        if status_callback:
            options["status_callback"] = status_callback
        try:
            message = client.messages.create(**options)
        except (TwilioRestException, TwilioServiceException) as exc:
            transient = exc.status == 429 or exc.status >= 500
            code = str(exc.code) if exc.code is not None else str(exc.status)
            raise SendError(f"twilio {exc.status} {code}", transient=transient, code=code) from exc
        except requests.RequestException as exc:
            raise SendError(type(exc).__name__, transient=True) from exc
        return Sent(str(message.sid), _status_text(message.status))

    return send


# Twilio message status -> our notification state. Unknown statuses keep the state.
STATES = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "sending",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}
# Callbacks may arrive out of order (delivered before sent): a state never goes back.
RANK = {
    "pending": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
}
FAILED = frozenset({"failed", "undelivered"})
