"""The alerting service (`oximon alerting`): escalation timers and the SMS outbox, in one loop.

Each pass runs every due escalation step first, then the outbox, so the pages several steps
queue for one person at the same moment leave as one message. Between passes the worker sleeps
until the earliest pending timer or message (on the platform clock), at most `poll_s`, and a
NOTIFY on `oximon_outbox` (sent in the transaction that queues a message) wakes it at once.

Further periodic jobs (missed readings, device health) can be handed in as `jobs`: each is
called with the pool and the clock once a pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import psycopg
from psycopg_pool import ConnectionPool

from alerting import escalation, metrics
from alerting.config import public_url
from alerting.outbox import process_outbox_once
from alerting.provider import Sender, twilio_sender
from core.clock import Clock
from core.logs import event
from core.settings import Settings
from core.storage import StorageJob

log = logging.getLogger("oximon.alerting")

Job = Callable[[ConnectionPool, Clock], object]

STATUS_PATH = "/api/v1/sms/status"
MIN_WAIT_S = 0.05


def sender_from_settings(settings: Settings) -> Sender | None:
    """Twilio when it is configured; None keeps messages in the outbox as a log (the demo)."""
    if not (
        settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from_number
    ):
        return None
    base = public_url(settings)
    return twilio_sender(
        settings.twilio_account_sid,
        settings.twilio_auth_token.get_secret_value(),
        settings.twilio_from_number,
        api_url=settings.twilio_api_url,
        status_callback=f"{base}{STATUS_PATH}" if base else None,
        timeout_s=settings.twilio_timeout_s,
    )


class AlertingWorker:
    def __init__(
        self,
        settings: Settings,
        pool: ConnectionPool,
        clock: Clock,
        sender: Sender | None,
        jobs: Sequence[Job] = (),
        poll_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.clock = clock
        self.sender = sender
        # Storage over years (core/storage.py): the licensed edition's policies, or oximon's
        # own hourly roll-up and drop_chunks; hourly, one worker at a time.
        self.jobs: list[Job] = [*jobs, StorageJob(settings)]
        self.poll_s = poll_s
        self._listen: psycopg.Connection[tuple[object, ...]] | None = None

    def run_once(self) -> int:
        """One pass: due steps, then the outbox, then the jobs. Returns work done."""
        done = escalation.process_due(self.pool, self.clock)
        done += process_outbox_once(
            self.pool, self.clock, self.sender, max_attempts=self.settings.sms_max_attempts
        )
        for job in self.jobs:
            job(self.pool, self.clock)
        return done

    def _wait(self, stop: threading.Event) -> None:
        timeout = self.poll_s
        try:
            with self.pool.connection() as conn:
                due = escalation.next_due(conn)
            if due is not None:
                # Something due but not claimable (another worker holds it, or its alert is
                # being written): look again shortly, without spinning.
                wall_s = self.clock.to_wall_s(due) - time.time()
                timeout = max(MIN_WAIT_S, min(timeout, wall_s))
            if self._listen is None or self._listen.closed:
                self._listen = psycopg.connect(self.settings.database_url, autocommit=True)
                self._listen.execute(f"LISTEN {escalation.OUTBOX_CHANNEL}")
            for _ in self._listen.notifies(timeout=timeout, stop_after=1):
                pass
            # Drain what else arrived meanwhile: one pass serves them all.
            for _ in self._listen.notifies(timeout=0):
                pass
        except psycopg.Error:
            if self._listen is not None:
                self._listen.close()
            self._listen = None
            stop.wait(self.poll_s)

    def run(self, stop: threading.Event) -> None:
        # Open alerts, SMS outcomes, the fleet and database size on this process's /metrics.
        metrics.register(self.settings.database_url)
        event(log, "alerting_started", twilio=self.sender is not None)
        try:
            while not stop.is_set():
                try:
                    done = self.run_once()
                except Exception:  # noqa: BLE001 - the loop must survive a database outage
                    log.exception("alerting_pass_failed")
                    stop.wait(self.poll_s)
                    continue
                if not done:
                    self._wait(stop)
        finally:
            if self._listen is not None:
                self._listen.close()
