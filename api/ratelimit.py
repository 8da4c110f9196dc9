"""Per-client-address rate limits on the doors anyone can knock on: the password login and
Twilio's inbound-SMS webhook. The counting is the `limits` library's moving window, in this
process's memory (each API process counts for itself; behind a load balancer the limit is per
process, which still bounds a password-guessing run).

The client address is the connection's peer: behind a reverse proxy run uvicorn with
`--proxy-headers --forwarded-allow-ips=<proxy>` so it is the real client, not the proxy.
"""

from __future__ import annotations

import json
import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from api.audit import client_ip
from core.settings import Settings


class RateLimits:
    """ASGI middleware: 429 with Retry-After when an address exceeds its limit on a guarded
    route; it also makes the client address available to the audit log."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.routes: dict[tuple[str, str], tuple[str, RateLimitItem]] = {
            ("POST", "/api/v1/auth/token"): ("login", parse(settings.rate_limit_login)),
            ("POST", "/api/v1/sms/inbound"): (
                "sms_inbound",
                parse(settings.rate_limit_sms_inbound),
            ),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        peer = scope.get("client")
        address = peer[0] if peer else "unknown"
        token = client_ip.set(address)
        try:
            guarded = self.routes.get((scope["method"], scope["path"].rstrip("/") or "/"))
            if guarded is not None:
                name, item = guarded
                if not self.limiter.hit(item, name, address):
                    await self._refuse(send, name, item, address)
                    return
            await self.app(scope, receive, send)
        finally:
            client_ip.reset(token)

    async def _refuse(self, send: Send, name: str, item: RateLimitItem, address: str) -> None:
        reset_at, _remaining = self.limiter.get_window_stats(item, name, address)
        retry_after = max(1, math.ceil(reset_at - time.time()))
        body = json.dumps(
            {"detail": f"too many requests from this address; try again in {retry_after} s"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"retry-after", str(retry_after).encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
