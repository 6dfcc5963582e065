"""Two store server processes sharing SQL and Redis, with the Socket.IO Redis message queue: a
device connected to one receives what sightings ingested by the other caused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from store_server.db import sessions
from store_server.devices import drop_sockets
from store_server.occupancy import end_presence
from store_server.redis_store import get_keys, get_redis
from tests.conftest import scaled_out
from tests.faults.support import wait_for
from tests.store_server.test_push_e2e import Device, build_world, enter

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def two_processes(tmp_path: Path) -> Iterator[tuple[Any, str, str]]:
    """(app of process A, URL of A, URL of B): A runs in this process, B in a subprocess."""
    with scaled_out(tmp_path) as processes:
        yield processes


def test_device_on_a_receives_what_sightings_on_b_caused(two_processes):
    app, url_a, url_b = two_processes
    with sessions(app)() as db:
        world = build_world(app, db, people=(("ana", "playlist"), ("ben", "preferences")))
    on_a = Device(url_a, world.token("seat"))
    try:
        enter(url_b, world, "seat", "ana")  # ingested by process B
        push = on_a.next()
        assert push["type"] == "push" and push["subscriber"] == world.pseudonym("ana")
        assert on_a.next_queue()["members"] == [world.pseudonym("ana")]
        enter(url_b, world, "seat", "ben")
        assert on_a.next()["subscriber"] == world.pseudonym("ben")
        assert on_a.next_queue()["members"] == sorted([world.pseudonym(n) for n in ("ana", "ben")])
        # And the other way round: an exit decided in A reaches a device connected to B.
        on_a.close()
        on_b = Device(url_b, world.token("seat"))
        try:
            assert on_b.drained()  # everything was acked through A
            end_presence(app, world.people["ana"].id, "withdrawn")
            revoke = on_b.next(timeout=2.0)
            assert revoke["type"] == "revoke" and revoke["subscriber"] == world.pseudonym("ana")
        finally:
            on_b.close()
    finally:
        on_a.close()


def test_revoke_served_by_a_disconnects_the_device_on_b(two_processes):
    app, _url_a, url_b = two_processes
    with sessions(app)() as db:
        world = build_world(app, db, people=(("ana", "playlist"),))
    device_id = world.devices["seat"][0][0]
    on_b = Device(url_b, world.token("seat"))
    try:
        assert on_b.drained()  # connected, and known to every worker through Redis
        keys = get_keys(app)
        assert get_redis(app).hlen(keys.device_sockets(device_id)) == 1
        # Process A holds no socket of this device: the disconnect travels by the message queue.
        assert app.extensions["cm_connected_devices"] == {}
        assert drop_sockets(app, {device_id}) == 1
        assert wait_for(lambda: not on_b.sio.connected, timeout=5.0)
        assert get_redis(app).exists(keys.device_sockets(device_id)) == 0
    finally:
        on_b.close()
