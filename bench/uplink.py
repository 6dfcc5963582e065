"""Uplink benchmark: sustained sightings/s from the durable queue to a local server, and how the
queue grows during an outage and drains after it. Prints one JSON object as its last line.

    .venv/bin/python bench/uplink.py [--sightings 100000] [--outage-s 10]

The server is the reference ingest server of the tests (real HTTP on 127.0.0.1, signature
verification, dedup by batch id), so the figure is the scanner side's, not the store server's.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from beacons.daemon import ScannerDaemon
from beacons.queue import SightingQueue
from beacons.simulator import demo_world
from beacons.sources.simulated import SimulatedSource
from beacons.uplink import Uplink, new_batch_id
from store_server.cli import OneLineParser
from tests.beacons.test_uplink_server import SECRET, IngestServer


def _sightings(n: int, t: float) -> list[dict]:
    return [
        {"ts": t, "kind": "eid", "id": os.urandom(8).hex(), "rssi": -70, "tx_power": -18}
        for _ in range(n)
    ]


def fill(path: Path, total: int, batch: int) -> tuple[SightingQueue, float]:
    """A queue holding `total` sightings; returns it with the seconds the writes took."""
    queue = SightingQueue(path, max_sightings=total)
    t0 = time.perf_counter()
    for _ in range(total // batch):
        queue.put(new_batch_id(), time.time(), _sightings(batch, time.time()))
    return queue, time.perf_counter() - t0


def drain(queue: SightingQueue, url: str, scanner: str, secret: str) -> float:
    """Seconds the sender takes to empty the queue into a server."""
    up = Uplink(url, scanner, secret, queue, backoff_cap_s=0.1)
    stop, wake = threading.Event(), threading.Event()
    t0 = time.perf_counter()
    sender = threading.Thread(target=up.run, args=(stop, wake))
    sender.start()
    while queue.batches and sender.is_alive():
        wake.wait(0.01)  # a benchmark may poll: it measures, it does not assert on timing
    elapsed = time.perf_counter() - t0
    stop.set()
    sender.join()
    if up.batches_rejected or up.failures:
        raise SystemExit(f"drain failed: {up.batches_rejected} rejected, {up.failures} failures")
    return elapsed


def drain_rate(tmp: Path, total: int, batch: int) -> dict:
    """Fill the queue, then time the sender emptying it into the reference server."""
    queue, put_s = fill(tmp / "drain.sqlite", total, batch)
    srv = IngestServer({"bench": SECRET}).start()
    drain_s = drain(queue, srv.url, "bench", SECRET)
    srv.stop()
    queue.close()
    return {
        "drain_sightings_per_s": round(total / drain_s),
        "drain_batches_per_s": round(total / batch / drain_s, 1),
        "queue_put_sightings_per_s": round(total / put_s),
        "queue_put_batches_per_s": round(total / batch / put_s, 1),
    }


def store_server_rate(tmp: Path, total: int, batch: int) -> dict:
    """The same drain into the real store server app (SQLite + embedded Redis, one process)."""
    from werkzeug.serving import make_server

    from store_server import services
    from store_server.app import create_app
    from store_server.db import sessions, upgrade

    db_url = f"sqlite:///{tmp / 'store.db'}"
    upgrade(db_url)
    app = create_app(
        {"DATABASE_URL": db_url, "REDIS_URL": None, "REDIS_EMBEDDED_PATH": str(tmp / "r.db"),
         "REDIS_PREFIX": "bench:", "SECRET_KEY": "bench", "DATA_KEY": "bench-data-key",
         "INGEST_RATE_PER_MIN": 0}
    )  # fmt: skip
    with sessions(app)() as db:
        merchant = services.create_merchant(db, "bench", "Bench", "salon")
        venue = services.create_venue(db, merchant, "bench", "site")
        _, secret = services.add_scanner(db, app.config["DATA_KEY"], venue, "bench-1", 0, 0)
        db.commit()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    queue, _ = fill(tmp / "store-drain.sqlite", total, batch)
    drain_s = drain(queue, f"http://127.0.0.1:{server.server_port}", "bench-1", secret)
    server.shutdown()
    queue.close()
    return {"store_server_sightings_per_s": round(total / drain_s)}


def outage(tmp: Path, outage_s: float, emitters: int) -> dict:
    """Run the whole daemon on a busy simulated venue through an outage, then let it catch up."""
    srv = IngestServer({"bench": SECRET}).start()
    port = srv.port
    srv.stop()
    source = SimulatedSource(demo_world(time.time() - 60, emitters=emitters, seed=1), "salon", 5, 4)
    path = tmp / "outage.sqlite"
    daemon = ScannerDaemon(
        server_url=srv.url, scanner="bench", secret=SECRET, source=source, queue_path=str(path),
        batch_max=200, batch_age_s=1.0, heartbeat_s=3600, backoff_cap_s=1.0,
    )  # fmt: skip
    daemon.start()
    t0 = time.monotonic()
    time.sleep(outage_s)  # the outage itself: a benchmark measures a fixed span
    stats = daemon.stats()
    held = stats["queue_depth"]
    size = sum(p.stat().st_size for p in tmp.glob("outage.sqlite*"))
    srv = IngestServer({"bench": SECRET}, port=port).start()
    t1 = time.monotonic()
    caught_up = daemon.wait_for(lambda: daemon.queue.depth < 200, 120)
    catch_up_s = time.monotonic() - t1
    daemon.stop()
    srv.stop()
    return {
        "outage_s": round(t1 - t0, 2),
        "outage_frames_heard_per_s": round(stats["frames_heard"] / outage_s, 1),
        "queue_growth_sightings_per_s": round(held / outage_s, 1),
        "queue_sightings_after_outage": held,
        "queue_file_bytes_per_sighting": round(size / max(held, 1), 1),
        "catch_up_s": round(catch_up_s, 2) if caught_up else None,
    }


def main() -> None:
    """Run both measurements and print one JSON object."""
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sightings", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--outage-s", type=float, default=10.0)
    ap.add_argument("--emitters", type=int, default=60)
    ap.add_argument("--store-server", action="store_true", help="also drain into the store server")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as d:
        result = {"batch_size": args.batch, "sightings": args.sightings}
        result.update(drain_rate(Path(d), args.sightings, args.batch))
        result["emitters"] = args.emitters
        result.update(outage(Path(d), args.outage_s, args.emitters))
        if args.store_server:
            result.update(store_server_rate(Path(d), args.sightings, args.batch))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
