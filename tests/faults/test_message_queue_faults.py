"""The Socket.IO Redis message queue through a Redis restart: two store server processes share a
private redis-server; it is killed and restarted, and a push caused by sightings ingested in one
process still reaches a device connected to the other, without restarting either."""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
from pathlib import Path

import pytest
import redis as redis_lib

from store_server.app import create_app
from store_server.db import sessions, upgrade
from tests.conftest import LiveServer, fresh_database, make_config, second_process
from tests.faults.support import RedisServer, wait_for
from tests.store_server.test_push_e2e import Device, build_world, enter

pytestmark = pytest.mark.faults


def subscribers(client: redis_lib.Redis) -> int:
    """Processes listening on the Socket.IO queue's channel(s)."""
    channels = client.pubsub_channels()
    return sum(n for _, n in client.pubsub_numsub(*channels)) if channels else 0


def test_pushes_cross_processes_again_after_redis_restarts(tmp_path: Path):
    server = RedisServer(tmp_path / "redis").start()
    db_url, drop = fresh_database(tmp_path, os.environ.get("DATABASE_URL"))
    upgrade(db_url)
    config = {**make_config(tmp_path, db_url, server.url), "SOCKETIO_MESSAGE_QUEUE": server.url}
    app = create_app(config)
    a = LiveServer(app).start()
    probe = redis_lib.Redis(port=server.port, decode_responses=True)
    device = None
    try:
        with second_process(config, stderr=subprocess.DEVNULL) as url_b:
            with sessions(app)() as db:
                world = build_world(app, db, people=(("ana", "playlist"), ("ben", "preferences")))
            device = Device(a.url, world.token("seat"))
            # A listens since its device connected; B, with no client of its own, only publishes.
            assert wait_for(lambda: subscribers(probe) == 1, 10)
            enter(url_b, world, "seat", "ana")
            assert device.next()["subscriber"] == world.pseudonym("ana")

            server.kill()
            server.start()  # same port and data: the queue's listeners must find it again
            assert wait_for(lambda: subscribers(probe) == 1, 30), "A's listener did not come back"
            enter(url_b, world, "seat", "ben")  # ingested by B, pushed to the device on A
            push = device.next(timeout=15)
            assert push["type"] == "push" and push["subscriber"] == world.pseudonym("ben")
    finally:
        if device is not None:
            device.close()
        a.stop()
        app.extensions["cm_engine"].dispose()
        drop()
        # Up until exit: A's queue listener cannot be stopped and would log reconnect attempts
        # for the rest of the session if its server went away now.
        atexit.register(_quiet_kill, server)


def _quiet_kill(server: RedisServer) -> None:
    """At exit: silence the orphaned queue listener (stderr is gone by then), stop the server."""
    for name in ("socketio", "socketio.server", "socketio.client"):
        logging.getLogger(name).disabled = True
    server.kill()
