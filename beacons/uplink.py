"""Signed uplink to the store server: response rules, backoff, and the sender loop.

The decisions (what a response means, how long to wait) are pure functions; `Uplink` is the thin
shell that reads the durable queue, posts the oldest batch and applies them.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import random
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from beacons.protocol import SIGHTING_MAX_AGE_S
from beacons.queue import QueuedBatch, SightingQueue
from beacons.signing import signed_headers

log = logging.getLogger("beacons.uplink")

DELIVERED = "delivered"  # the server has the batch (new or duplicate): delete it
RETRY = "retry"  # outage or overload: keep it, back off
AUTH = "auth"  # signature, scanner or clock refused: keep it (a config fix must not lose data)
REJECTED = "rejected"  # the batch itself is invalid and can never succeed: delete and count it

RETRY_AFTER_MAX_S = 3600.0  # a server asking for more is misconfigured; do not sleep for days
# A batch this old is dropped unsent: the server refuses it (SIGHTING_MAX_AGE_S), and kept it
# only held passers-by's identifiers on disk through an outage. The hour is for a scanner's
# clock, which the server's signature window keeps within minutes of its own.
DROP_AFTER_S = SIGHTING_MAX_AGE_S + 3600.0
_REJECT_STATUSES = frozenset({400, 413, 422})
_SECONDS = re.compile(r"[0-9]+")


def classify(status: int | None) -> str:
    """What a response status (None for no response at all) means for the batch."""
    if status is None:
        return RETRY
    if 200 <= status < 300:
        return DELIVERED
    if status in (401, 403):
        return AUTH
    if status in _REJECT_STATUSES:
        return REJECTED
    # 404, 429, 5xx and anything unexpected: a server or routing problem, never the batch's fault
    return RETRY


def backoff_delay(attempt: int, rng: random.Random, base: float = 0.5, cap: float = 60.0) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0.0, min(cap, base * (2 ** min(attempt, 30))))


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or HTTP date), None if absent."""
    if not value:
        return None
    value = value.strip()
    # ASCII digits only: "²" is a digit to str.isdigit and float() refuses it, which killed the
    # sender thread (a header is whatever a proxy in between chose to write).
    if _SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def next_delay(attempt: int, retry_after: float | None, rng: random.Random, cap: float) -> float:
    """Wait before the next attempt: jittered backoff, but never sooner than Retry-After."""
    delay = backoff_delay(attempt, rng, cap=cap)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_MAX_S))
    return delay


def batch_body(batch_id: str, sightings_json: str, sent_at: float) -> bytes:
    """The exact bytes posted (and signed) for one batch."""
    head = json.dumps({"batch_id": batch_id, "sent_at": sent_at}, separators=(",", ":"))
    return (head[:-1] + ',"sightings":' + sightings_json + "}").encode()


def new_batch_id() -> str:
    """A fresh batch id: 32 hex digits, unique per batch and kept across retries."""
    return secrets.token_hex(16)


def _reason(resp: requests.Response) -> str:
    try:
        return str(resp.json().get("error", ""))[:200] or f"HTTP {resp.status_code}"
    except (ValueError, AttributeError, RecursionError):
        return f"HTTP {resp.status_code}"


class Uplink:
    """Posts queued batches oldest first, and heartbeats, signed with the scanner's secret."""

    def __init__(
        self,
        server_url: str,
        scanner: str,
        secret: str,
        queue: SightingQueue,
        *,
        timeout: float = 10.0,
        backoff_cap_s: float = 60.0,
        rng: random.Random | None = None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        """Bind the uplink to a server, an identity and the queue it drains."""
        self.base = server_url.rstrip("/")
        self.scanner = scanner
        self.secret = secret
        self.queue = queue
        self.timeout = timeout
        self.backoff_cap_s = backoff_cap_s
        self.rng = rng or random.Random()
        self.batches_sent = 0
        self.sightings_sent = 0
        self.batches_rejected = 0
        self.duplicates = 0
        self.accepted = 0  # sightings the server reported as newly accepted
        self.failures = 0
        self.on_change = on_change
        self._session = requests.Session()
        self._hb_session = requests.Session()
        self._logged: set[str] = set()
        self._log_lock = threading.Lock()  # the sender and heartbeat threads both report
        self._failing = False
        # Set when the server answers a heartbeat: it is reachable again (see `run`).
        self._resume = threading.Event()
        # When a batch was last delivered (monotonic): the server took its first frame's time
        # as this scanner's `through`, as a heartbeat would have said it.
        self.delivered_at = float("-inf")

    def _note(self, reason: str) -> None:
        # one line per distinct reason, so an hour-long outage does not flood the journal
        with self._log_lock:
            if reason in self._logged or len(self._logged) >= 256:
                return
            self._logged.add(reason)
            self._failing = True
        log.warning("uplink: %s", reason)

    def _post(self, session: requests.Session, path: str, body: bytes) -> requests.Response:
        headers = signed_headers(self.scanner, self.secret, body)
        return session.post(self.base + path, data=body, headers=headers, timeout=self.timeout)

    def send(self, batch: QueuedBatch) -> tuple[str, float | None]:
        """Post one batch once, apply the outcome to the queue; returns (outcome, Retry-After)."""
        body = batch_body(batch.batch_id, batch.sightings_json, time.time())
        try:
            resp = self._post(self._session, "/api/v1/sightings", body)
        except requests.RequestException as exc:
            self._note(f"server unreachable ({type(exc).__name__})")
            self.failures += 1
            self.on_change()
            return RETRY, None
        outcome = classify(resp.status_code)
        if outcome == DELIVERED:
            self.delivered_at = time.monotonic()
            self.queue.delete(batch.seq)
            self.batches_sent += 1
            self.sightings_sent += batch.n
            with contextlib.suppress(ValueError, AttributeError, TypeError, RecursionError):
                reply = resp.json()
                self.duplicates += bool(reply.get("duplicate"))
                self.accepted += int(reply.get("accepted", 0))
            with self._log_lock:
                recovered, self._failing = self._failing, False
                self._logged.clear()
            if recovered:
                log.info("uplink: delivering again")
        elif outcome == REJECTED:
            self.queue.delete(batch.seq)
            self.batches_rejected += 1
            log.error("uplink: batch rejected by server, dropped: %s", _reason(resp))
        elif outcome == AUTH:
            self._note(f"refused by server ({resp.status_code}): {_reason(resp)}")
        else:
            self._note(f"server busy or failing (HTTP {resp.status_code})")
        if outcome in (RETRY, AUTH):
            self.failures += 1
        self.on_change()
        return outcome, retry_after_s(resp.headers.get("Retry-After"), time.time())

    def run(self, stop: threading.Event, wake: threading.Event) -> None:
        """Drain the queue until `stop`, backing off on failures; `wake` signals a new batch."""
        attempt = 0
        while not stop.is_set():
            lost = self.queue.drop_older(time.time() - DROP_AFTER_S)
            if lost:
                log.warning("uplink: dropped %d sightings older than the server accepts", lost)
                self.on_change()
            batch = self.queue.oldest()
            if batch is None:
                wake.wait(0.5)
                wake.clear()
                continue
            self._resume.clear()
            try:
                outcome, retry_after = self.send(batch)
            except Exception as exc:
                # Whatever a server or a proxy in between answers must not end this thread: the
                # daemon would go on hearing and queueing, and send nothing until restarted.
                self._note(f"sending failed ({type(exc).__name__})")
                self.failures += 1
                outcome, retry_after = RETRY, None
            if outcome in (DELIVERED, REJECTED):
                attempt = 0
                continue
            delay = next_delay(attempt, retry_after, self.rng, self.backoff_cap_s)
            attempt += 1
            if outcome == RETRY and retry_after is None:
                # An outage, not a server asking for time: the first heartbeat it answers ends
                # the wait, so a queue held up by a cut uplink goes as soon as the link is back
                # and not up to backoff_cap_s later. The store server holds the exits of the
                # visitors in that queue for 35 s only (presence.HEARD_WAIT_MAX_S).
                self._resume.wait(delay)
            else:
                stop.wait(delay)

    def heartbeat(self, payload: dict[str, Any]) -> bool:
        """Post one heartbeat; True when the server accepted it."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        try:
            resp = self._post(self._hb_session, "/api/v1/heartbeat", body)
        except requests.RequestException as exc:
            self._note(f"heartbeat failed ({type(exc).__name__})")
            return False
        if resp.status_code >= 300:
            self._note(f"heartbeat refused ({resp.status_code}): {_reason(resp)}")
            return False
        self.resume()
        return True

    def resume(self) -> None:
        """End the sender's wait after an outage at once (the server answered, or we stop)."""
        self._resume.set()

    def close(self) -> None:
        """Close the HTTP sessions."""
        self._session.close()
        self._hb_session.close()
