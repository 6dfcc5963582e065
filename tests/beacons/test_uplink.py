"""Uplink: the response rules and backoff (pure), and delivery through real HTTP outages."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from pathlib import Path

import pytest

from beacons import signing
from beacons.queue import SightingQueue
from beacons.uplink import (
    AUTH,
    DELIVERED,
    REJECTED,
    RETRY,
    Uplink,
    backoff_delay,
    batch_body,
    classify,
    new_batch_id,
    next_delay,
    retry_after_s,
)
from tests.beacons.test_uplink_server import SECRET, IngestServer
from tests.conftest import free_port
from tests.faults.support import wait_for as _wait


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, DELIVERED),
        (None, RETRY),
        (503, RETRY),
        (429, RETRY),
        (500, RETRY),
        (404, RETRY),
        (401, AUTH),
        (403, AUTH),
        (400, REJECTED),
        (413, REJECTED),
        (422, REJECTED),
    ],
)
def test_classify_follows_the_wire_protocol(status: int | None, outcome: str) -> None:
    assert classify(status) == outcome


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(5.0, 0.5 * 2**attempt)
        draws = [backoff_delay(attempt, rng, base=0.5, cap=5.0) for _ in range(400)]
        assert all(0.0 <= d <= ceiling for d in draws)
        # full jitter spreads over the whole range, not just near the ceiling
        assert min(draws) < 0.1 * ceiling and max(draws) > 0.9 * ceiling
    assert backoff_delay(10_000, rng, cap=5.0) <= 5.0


def test_retry_after_is_honoured_as_a_floor() -> None:
    rng = random.Random(1)
    assert retry_after_s("7", 0.0) == 7.0
    assert retry_after_s(None, 0.0) is None
    assert retry_after_s("soon", 0.0) is None
    assert retry_after_s("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == pytest.approx(60.0)
    assert all(next_delay(0, 3.0, rng, cap=60.0) >= 3.0 for _ in range(100))


def test_batch_body_is_the_documented_json() -> None:
    bid = new_batch_id()
    assert len(bid) == 32 and int(bid, 16) >= 0 and bid != new_batch_id()
    sightings = [{"ts": 1.5, "kind": "eid", "id": "00" * 8, "rssi": -60, "tx_power": -18}]
    doc = json.loads(batch_body(bid, json.dumps(sightings), 12.25))
    assert doc == {"batch_id": bid, "sent_at": 12.25, "sightings": sightings}


def _fill(queue: SightingQueue, batches: int, per: int) -> set[str]:
    ids = set()
    for _ in range(batches):
        items = [
            {
                "ts": time.time(),
                "kind": "eid",
                "id": new_batch_id()[:16],
                "rssi": -70,
                "tx_power": -18,
            }
            for _ in range(per)
        ]
        ids.update(s["id"] for s in items)
        queue.put(new_batch_id(), time.time(), items)
    return ids


def _run(uplink: Uplink) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    t = threading.Thread(target=uplink.run, args=(stop, threading.Event()), daemon=True)
    t.start()
    return stop, t


def test_every_sighting_arrives_exactly_once_through_an_outage(tmp_path: Path) -> None:
    srv = IngestServer({"s1": SECRET}).start()
    queue = SightingQueue(tmp_path / "q.sqlite")
    up = Uplink(srv.url, "s1", SECRET, queue, timeout=2.0, backoff_cap_s=0.2)
    sent = _fill(queue, 3, 5)
    srv.lose_responses = 1  # the first batch lands but its reply is lost: it must be re-sent
    stop, t = _run(up)
    try:
        assert srv.wait_for(lambda: len(srv.batches) == 3 and srv.duplicates == 1)
        srv.stop()  # real outage: the port is closed while more sightings are queued
        sent |= _fill(queue, 4, 5)
        assert queue.batches == 4
        srv.fail_status, srv.fail_body = 503, {"error": "overloaded"}
        srv.start()  # back on the same port, but overloaded for a while
        assert srv.wait_for(lambda: srv.posts >= 8)
        assert queue.batches == 4
        srv.fail_status = None
        assert srv.wait_for(lambda: len(srv.batches) == 7)
    finally:
        stop.set()
        t.join(5)
        srv.stop()
    assert up.sightings_sent == len(sent) == 35
    received = [s["id"] for s in srv.sightings()]
    assert sorted(received) == sorted(sent)  # exactly once after deduplication
    assert queue.batches == 0 and queue.depth == 0
    # a fresh nonce and signature on every attempt (a reused nonce would have been refused) ...
    assert not srv.refused
    # ... while the batch id is kept across retries
    ids = [json.loads(b)["batch_id"] for b in srv.bodies if b]
    assert len(set(ids)) == 7 < len(ids)


def test_retry_after_delays_the_next_attempt(tmp_path: Path) -> None:
    srv = IngestServer({"s1": SECRET}).start()
    srv.fail_status, srv.retry_after = 429, "1"
    queue = SightingQueue(tmp_path / "q.sqlite")
    up = Uplink(srv.url, "s1", SECRET, queue, timeout=2.0, backoff_cap_s=0.05)
    _fill(queue, 1, 1)
    stop, t = _run(up)
    try:
        assert srv.wait_for(lambda: srv.posts == 1)
        first = time.monotonic()
        srv.fail_status = None
        assert srv.wait_for(lambda: len(srv.batches) == 1)
        assert time.monotonic() - first >= 0.9
    finally:
        stop.set()
        t.join(5)
        srv.stop()


def test_a_retry_after_that_is_no_number_neither_stops_the_sender(tmp_path: Path) -> None:
    # "²" is a digit to str.isdigit and float() refuses it: the sender thread died on the
    # ValueError, and the daemon went on hearing and queueing with nothing ever sent again.
    assert retry_after_s("²", 0.0) is None
    srv = IngestServer({"s1": SECRET}).start()
    srv.fail_status, srv.retry_after = 503, "²"
    queue = SightingQueue(tmp_path / "q.sqlite")
    up = Uplink(srv.url, "s1", SECRET, queue, timeout=2.0, backoff_cap_s=0.05)
    _fill(queue, 1, 1)
    stop, t = _run(up)
    try:
        assert srv.wait_for(lambda: srv.posts >= 1)
        srv.fail_status = None
        assert srv.wait_for(lambda: len(srv.batches) == 1)
    finally:
        stop.set()
        up.resume()
        t.join(5)
        srv.stop()


def test_a_reply_the_sender_cannot_read_neither_stops_it(tmp_path: Path) -> None:
    # A refusal whose JSON nests past Python's recursion limit (a hostile or broken proxy):
    # reading its reason raised RecursionError, which ended the sender thread for good.
    srv = IngestServer({"s1": SECRET}).start()
    srv.fail_status, srv.fail_body = 401, b"[" * 100_000 + b"]" * 100_000
    queue = SightingQueue(tmp_path / "q.sqlite")
    up = Uplink(srv.url, "s1", SECRET, queue, timeout=2.0, backoff_cap_s=0.05)
    _fill(queue, 1, 1)
    stop, t = _run(up)
    try:
        assert srv.wait_for(lambda: srv.posts >= 2)
        srv.fail_status = None
        up.resume()
        assert srv.wait_for(lambda: len(srv.batches) == 1)
        assert t.is_alive()
    finally:
        stop.set()
        up.resume()
        t.join(5)
        srv.stop()


class _LongWaits(random.Random):
    """Jitter that draws half a minute every time: a sender deep in its backoff."""

    def uniform(self, a: float, b: float) -> float:
        return 30.0


def test_after_an_outage_the_first_answered_heartbeat_ends_the_senders_backoff(
    tmp_path: Path,
) -> None:
    srv = IngestServer({"s1": SECRET})  # not started: connection refused
    srv.port = free_port()
    queue = SightingQueue(tmp_path / "q.sqlite")
    up = Uplink(srv.url, "s1", SECRET, queue, timeout=2.0, backoff_cap_s=60.0, rng=_LongWaits())
    _fill(queue, 1, 3)
    stop, t = _run(up)
    try:
        # Refused: now waiting half a minute.
        assert _wait(lambda: up.failures >= 1, 10)
        srv.start()
        assert up.heartbeat({"adapter": "up"})
        # Delivered at once, not when the backoff ends: the store server holds her exit only
        # 35 s for what this queue holds.
        assert srv.wait_for(lambda: len(srv.batches) == 1, timeout=1.5)
    finally:
        stop.set()
        up.resume()
        t.join(5)
        srv.stop()


def test_a_server_asking_for_time_gets_it_whatever_the_heartbeats_say(tmp_path: Path) -> None:
    srv = IngestServer({"s1": SECRET}).start()
    queue = SightingQueue(tmp_path / "q.sqlite")
    up = Uplink(srv.url, "s1", SECRET, queue, timeout=2.0, backoff_cap_s=0.05)
    _fill(queue, 1, 1)
    srv.fail_status, srv.retry_after = 503, "2"
    stop, t = _run(up)
    try:
        assert srv.wait_for(lambda: srv.posts == 1)
        first = time.monotonic()
        srv.fail_status = None
        assert up.heartbeat({"adapter": "up"})
        assert srv.wait_for(lambda: len(srv.batches) == 1)
        assert time.monotonic() - first >= 1.9  # Retry-After: 2, heartbeat or not
    finally:
        stop.set()
        up.resume()
        t.join(5)
        srv.stop()


def test_auth_refusal_keeps_the_batch_and_logs_the_reason_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    srv = IngestServer({"s1": SECRET}).start()
    queue = SightingQueue(tmp_path / "q.sqlite")
    wrong = "ab" * 32
    up = Uplink(srv.url, "s1", wrong, queue, timeout=2.0, backoff_cap_s=0.02)
    _fill(queue, 2, 3)
    caplog.set_level(logging.WARNING, logger="beacons.uplink")
    stop, t = _run(up)
    try:
        assert srv.wait_for(lambda: len(srv.refused) >= 5)
        assert queue.batches == 2 and not srv.batches
        up.secret = SECRET  # the operator fixes the config: nothing was lost meanwhile
        assert srv.wait_for(lambda: len(srv.batches) == 2)
    finally:
        stop.set()
        t.join(5)
        srv.stop()
    refusals = [r for r in caplog.messages if "bad signature" in r]
    assert len(refusals) == 1


def test_a_batch_the_server_calls_invalid_is_dropped_and_counted(tmp_path: Path) -> None:
    srv = IngestServer({"s1": SECRET}).start()
    srv.fail_status, srv.fail_body = 422, {"error": "sightings[0].rssi: not a number"}
    queue = SightingQueue(tmp_path / "q.sqlite")
    up = Uplink(srv.url, "s1", SECRET, queue, timeout=2.0, backoff_cap_s=0.02)
    _fill(queue, 2, 3)
    outcome, _ = up.send(queue.oldest())
    assert outcome == REJECTED and up.batches_rejected == 1 and queue.batches == 1
    srv.fail_status = None
    assert up.send(queue.oldest())[0] == DELIVERED and queue.batches == 0
    srv.stop()


def test_heartbeat_is_signed_and_posted(tmp_path: Path) -> None:
    srv = IngestServer({"s1": SECRET}).start()
    up = Uplink(srv.url, "s1", SECRET, SightingQueue(tmp_path / "q.sqlite"))
    assert up.heartbeat({"uptime_s": 1.0, "queue_depth": 0, "adapter": "simulated"})
    assert srv.heartbeats == [{"uptime_s": 1.0, "queue_depth": 0, "adapter": "simulated"}]
    srv.stop()
    assert not up.heartbeat({"uptime_s": 2.0})
    assert signing.HEADER_SIGNATURE  # the module under test signs via beacons.signing


@pytest.mark.privacy
def test_batches_older_than_the_server_accepts_are_dropped_during_an_outage(
    tmp_path: Path,
) -> None:
    queue = SightingQueue(tmp_path / "q.sqlite")
    old = [{"ts": time.time() - 8 * 86400, "kind": "eid", "id": "ab" * 8, "rssi": -70}]
    queue.put(new_batch_id(), old[0]["ts"], old)
    fresh = _fill(queue, 1, 2)
    # Nobody listens: the uplink has been cut for eight days and still is.
    up = Uplink(f"http://127.0.0.1:{free_port()}", "s1", SECRET, queue, backoff_cap_s=0.05)
    stop, t = _run(up)
    try:
        # The passer-by's week-old identifier leaves the disk without the server's answer.
        assert _wait(lambda: queue.batches == 1, 10)
    finally:
        stop.set()
        t.join(5)
    assert {s["id"] for s in queue.oldest().sightings()} == fresh
    assert queue.depth == 2 and queue.dropped == 1
    reopened = SightingQueue(tmp_path / "q.sqlite")
    assert reopened.dropped == 1 and reopened.batches == 1
