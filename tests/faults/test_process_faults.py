"""A store server process SIGKILLed mid-stream and restarted: the device reconnects and gets what
its outbox held, once and in order, and the presence it had opened still ends (nothing stuck)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from store_server.app import create_app
from store_server.db import sessions, upgrade
from tests.conftest import REPO, free_port, fresh_database, make_config
from tests.faults.support import RedisServer
from tests.store_server.test_push_e2e import Device, build_world, enter

pytestmark = pytest.mark.faults

# The store server as deployed: HTTP, Socket.IO and the background jobs in one process.
PROCESS = """
import json, os, threading
from werkzeug.serving import make_server
from store_server import jobs
from store_server.app import create_app
app = create_app(json.loads(os.environ["CM_CONFIG"]))
server = make_server("127.0.0.1", int(os.environ["CM_PORT"]), app, threaded=True)
jobs.start(app, threading.Event())
print("ready", flush=True)
server.serve_forever()
"""


def start(config: dict, port: int) -> subprocess.Popen:
    """One store server process on `port`, returned once it serves."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PROCESS],
        cwd=REPO,
        env={**os.environ, "CM_CONFIG": json.dumps(config), "CM_PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def stop(proc: subprocess.Popen) -> None:
    """Terminate a store server process and close its pipe."""
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def test_sigkill_mid_stream_then_replay_once_in_order_and_presence_ends(tmp_path: Path):
    redis_server = RedisServer(tmp_path / "redis").start()
    db_url, drop = fresh_database(tmp_path, os.environ.get("DATABASE_URL"))
    upgrade(db_url)
    config = make_config(tmp_path, db_url, redis_server.url)
    setup = create_app(config)  # only to seed the world; it serves nothing
    with sessions(setup)() as db:
        world = build_world(setup, db, exit_absent_s=8.0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(config, port)
    first = second = None
    try:
        first = Device(url, world.token("seat"), ack=False)  # it dies before acknowledging
        enter(url, world, "seat", "ann")
        push = first.next()
        assert push["type"] == "push" and push["subscriber"] == world.pseudonym("ann")

        proc.kill()  # SIGKILL: no shutdown code runs
        proc.wait(10)
        first.close()
        stop(proc)
        proc = start(config, port)

        second = Device(url, world.token("seat"))
        replayed = second.next()
        assert replayed["event_id"] == push["event_id"]  # the same event, not a new one
        assert replayed["type"] == "push"
        # The restarted process's sweeper ends the presence the dead one had opened.
        revoke = second.next(timeout=20)
        assert revoke["type"] == "revoke" and revoke["subscriber"] == world.pseudonym("ann")
        second.sync()
        assert second.events.empty()  # no push or revoke came twice
    finally:
        for d in (first, second):
            if d is not None:
                d.close()
        stop(proc)
        setup.extensions["cm_engine"].dispose()
        drop()
        redis_server.kill()
