"""The reference device forgets what it was pushed at its `expires_at`, with no revoke needed (the
store server down, the device offline when the presence ended), and never uses a push that
arrives already expired (the device asleep while it was in transit). Real HTTP ingest, Redis,
SQL and Socket.IO; the device is the CLI installers run, or its Playback in process."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from store_server import jobs, retention
from store_server.device_client import DeviceConnection, Playback
from store_server.models import Merchant
from store_server.redis_store import get_keys, get_redis
from tests.faults.support import wait_for
from tests.store_server.test_devices_client import client, finished
from tests.store_server.test_push_e2e import add_person, build_world, enter

pytestmark = [pytest.mark.e2e, pytest.mark.privacy]


def _with_consent_ending(app, db, world, name: str, seconds: float) -> float:  # type: ignore[no-untyped-def]
    """A playlist subscriber whose consent for this merchant ends `seconds` from now."""
    until = time.time() + seconds
    merchant = db.get(Merchant, world.merchant_id)
    end = datetime.fromtimestamp(until, UTC)
    add_person(db, app.config["DATA_KEY"], world, merchant, name, "playlist", valid_until=end)
    db.commit()
    jobs.refresh_resolver(app)
    return until


@pytest.fixture
def no_expiry_job(monkeypatch):  # type: ignore[no-untyped-def]
    """The live server's job that revokes presences whose consent ended does not run (the
    store server down when it should have): only the device's own expiry remains."""
    monkeypatch.setattr(retention, "end_expired_presences", lambda app: 0)


def _lines(p: subprocess.Popen, until: Any) -> list[dict[str, Any]]:
    """JSON lines the CLI prints, read until `until(lines)` holds or its output ends."""
    lines: list[dict[str, Any]] = []
    while not until(lines):
        line = p.stdout.readline()
        if not line:
            break
        lines.append(json.loads(line))
    return lines


def test_reference_device_forgets_a_push_and_its_queue_when_the_consent_runs_out(
    app, live_server, db, no_expiry_job
):
    world = build_world(app, db, people=(("bob", "playlist"),))
    # --duration bounds the test: a device that never forgets prints nothing more.
    p = client("--url", live_server.url, f"--token={world.token('seat')}", "--duration", "30")
    try:
        assert json.loads(p.stdout.readline())["event"] == "hello"
        until = _with_consent_ending(app, db, world, "ann", 4.0)
        ann = world.pseudonym("ann")
        enter(live_server.url, world, "seat", "ann", "bob")
        lines = _lines(p, lambda ls: sum(x["event"] == "expired" for x in ls) >= 2)
        forgotten_at = time.time()
        p.send_signal(signal.SIGINT)
        code, _out, err = finished(p)
    finally:
        p.kill()
    assert code == 0, err
    got = [(x["event"], x["type"], x.get("subscriber")) for x in lines]
    bob = world.pseudonym("bob")
    assert sorted(got[:2]) == sorted([("event", "push", ann), ("event", "push", bob)])
    # Her consent's end is the queue's too: both are forgotten then, bob's push stays.
    assert got[2][:2] == ("queue", "queue") and ann in lines[2]["members"]
    assert sorted(got[3:]) == [("expired", "push", ann), ("expired", "queue", None)]
    assert forgotten_at >= until  # not before
    assert not any(x["type"] == "revoke" for x in lines)  # the device did it by itself


def test_reference_device_never_uses_a_push_that_arrives_expired(
    app, live_server, db, no_expiry_job
):
    world = build_world(app, db, people=(("bob", "playlist"),))
    device_id = world.devices["seat"][0][0]
    p = client("--url", live_server.url, f"--token={world.token('seat')}", "--count", "2")
    try:
        assert json.loads(p.stdout.readline())["event"] == "hello"
        # The device sleeps (a tablet's lid closed) while ann is pushed, until her consent ends.
        p.send_signal(signal.SIGSTOP)
        until = _with_consent_ending(app, db, world, "ann", 2.0)
        enter(live_server.url, world, "seat", "ann")
        r, keys = get_redis(app), get_keys(app)
        assert wait_for(lambda: r.xlen(keys.outbox(device_id)) >= 2, 10)  # push and queue sent
        assert wait_for(lambda: time.time() > until, 10)
        p.send_signal(signal.SIGCONT)
        enter(live_server.url, world, "seat", "bob")
        code, out, err = finished(p)
    finally:
        p.send_signal(signal.SIGCONT)
        p.kill()
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    # Her push and her queue reached it expired: acked, never used. Bob's come next.
    assert [(x["event"], x["type"]) for x in lines] == [("event", "push"), ("queue", "queue")]
    assert world.pseudonym("ann") not in out
    assert lines[0]["subscriber"] == world.pseudonym("bob")
    assert r.xlen(keys.outbox(device_id)) == 0  # all acked, hers included


def test_playback_drops_a_member_whose_push_expired_from_the_queue(
    app, live_server, db, monkeypatch, no_expiry_job
):
    world = build_world(app, db, people=(("ann", "playlist"), ("bob", "playlist")))
    ann, bob = world.pseudonym("ann"), world.pseudonym("bob")
    forgotten: queue.Queue = queue.Queue()
    playback = Playback(on_expire=lambda kind, event: forgotten.put((kind, event)))
    received: list[dict[str, Any]] = []

    def handle(_name: str, event: dict[str, Any], _duplicate: bool) -> None:
        received.append(event)
        playback.apply(event)

    device = DeviceConnection(live_server.url, world.token("seat"), handle)
    device.connect()
    try:
        # Ann's push lives 3 s (PUSH_TTL_S); bob's, and the queue computed as he sits down
        # (both of them in it), an hour.
        monkeypatch.setitem(app.config, "PUSH_TTL_S", 3)
        enter(live_server.url, world, "seat", "ann")
        assert wait_for(lambda: ann in playback.pushes and playback.queue is not None, 10)
        expires = playback.pushes[ann]["expires_at"]
        monkeypatch.setitem(app.config, "PUSH_TTL_S", 3600)
        enter(live_server.url, world, "seat", "bob")
        assert wait_for(lambda: set(playback.queue["members"]) == {ann, bob}, 10)
        assert {t["by"] for t in playback.queue["queue"]["tracks"]} == {ann, bob}
        kind, event = forgotten.get(timeout=15)
        assert (kind, event["subscriber"]) == ("push", ann) and time.time() >= expires
        # The queue stays, without her and her tracks; bob's push stays.
        q = playback.queue
        assert q is not None and q["members"] == [bob]
        assert q["queue"]["tracks"] and {t["by"] for t in q["queue"]["tracks"]} == {bob}
        assert list(playback.pushes) == [bob]
        assert not any(e["type"] == "revoke" for e in received)
    finally:
        device.close()
        playback.close()


def test_a_visit_longer_than_a_push_keeps_its_playlist_on_the_device(
    app, live_server, db, monkeypatch
):
    # Devices forget a push at its expires_at (PUSH_TTL_S after it was sent): without the
    # server pushing a long visit again, someone seated longer than that lost her playlist.
    monkeypatch.setitem(app.config, "PUSH_TTL_S", 4)
    world = build_world(app, db, people=(("ann", "playlist"),))
    ann = world.pseudonym("ann")
    forgotten: queue.Queue = queue.Queue()
    playback = Playback(on_expire=lambda kind, event: forgotten.put((kind, event)))
    pushes: list[dict[str, Any]] = []

    def handle(_name: str, event: dict[str, Any], duplicate: bool) -> None:
        if event["type"] == "push" and not duplicate:
            pushes.append(event)
        playback.apply(event)

    device = DeviceConnection(live_server.url, world.token("seat"), handle)
    device.connect()
    try:
        enter(live_server.url, world, "seat", "ann")
        assert wait_for(lambda: ann in playback.pushes, 10)
        first = playback.pushes[ann]["expires_at"]
        # She stays seated past her first push's expiry: her scanner hears her twice a second.
        while time.time() < first + 1.0:
            time.sleep(0.5)  # the pace of her sightings, not a wait for an event
            enter(live_server.url, world, "seat", "ann")
        device.sync()
        assert ann in playback.pushes and playback.pushes[ann]["expires_at"] > time.time()
        assert len(pushes) >= 2 and pushes[-1]["expires_at"] > first
        assert forgotten.empty()
    finally:
        device.close()
        playback.close()
