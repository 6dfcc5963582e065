"""Python devices on HTTP long-polling, as behind a proxy that refuses websockets: a reply or a
request may carry more packets than python-engineio's default limit of 16 per payload (a replay
on reconnect, a group entering at once, the acks for them), and none of them may be dropped."""

from __future__ import annotations

import queue
import time

import pytest

from store_server import outbox
from store_server.device_client import DeviceConnection
from store_server.redis_store import get_keys, get_redis
from tests.helpers import run_python
from tests.store_server.test_push_e2e import build_world, enter

pytestmark = pytest.mark.e2e
PEOPLE = tuple((f"p{i:02d}", "playlist") for i in range(20))

# The reference device in a process of its own (no store server there to raise the library's
# limit for it): connects over polling only, prints how many events it handled and acked.
DEVICE = """
import sys, threading
from store_server.device_client import DeviceConnection
url, token, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
got, done = [], threading.Event()
def record(name, event, duplicate):
    got.append(name)
    if len(got) >= want:
        done.set()
conn = DeviceConnection(url, token, record)
conn.connect(transports=["polling"])
done.wait(15)
conn.sync()
print(conn.sio.eio.current_transport, len(got), flush=True)
conn.close()
"""


def test_device_on_polling_reconnects_to_a_long_replay_and_acks_it(app, live_server, db, tmp_path):
    world = build_world(app, db, people=PEOPLE)
    device_id = world.devices["seat"][0][0]
    r, keys = get_redis(app), get_keys(app)
    enter(live_server.url, world, "seat", *(name for name, _ in PEOPLE))  # while it is away
    pending = outbox.pending(r, keys, device_id, time.time())
    assert len(pending) == len(PEOPLE) + 1  # a push each, then the zone's queue
    done = run_python("-c", DEVICE, live_server.url, world.token("seat"), "21", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["polling", "21"]
    assert outbox.pending(r, keys, device_id, time.time()) == []


def test_device_on_polling_hears_a_group_entering_at_once(app, live_server, db):
    world = build_world(app, db, people=PEOPLE)
    device_id = world.devices["seat"][0][0]
    events: queue.Queue = queue.Queue()
    conn = DeviceConnection(live_server.url, world.token("seat"), lambda *e: events.put(e))
    conn.connect(transports=["polling"])
    try:
        enter(live_server.url, world, "seat", *(name for name, _ in PEOPLE))
        got = [events.get(timeout=10) for _ in range(len(PEOPLE) + 1)]
        conn.sync()
        assert conn.sio.connected and conn.sio.eio.current_transport == "polling"
    finally:
        conn.close()
    subscribers = {event["subscriber"] for name, event, _ in got if name == "event"}
    assert subscribers == {world.pseudonym(name) for name, _ in PEOPLE}
    assert got[-1][0] == "queue"
    assert outbox.pending(get_redis(app), get_keys(app), device_id, time.time()) == []
