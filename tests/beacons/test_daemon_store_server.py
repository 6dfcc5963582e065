"""The daemon against the real store server: a lost reply and an outage mid-stream lose and
double nothing."""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any

import pytest
from werkzeug.serving import make_server

from beacons.daemon import ScannerDaemon
from beacons.simulator import Leg, SimEmitter, World
from beacons.sources.simulated import SimulatedSource
from store_server import services
from store_server.redis_store import get_keys
from store_server.topology import get_topology
from tests.conftest import free_port

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


class Served:
    """The store server app on a fixed port that can be taken down and brought back."""

    def __init__(self, app: Any, port: int) -> None:
        self.app, self.port = app, port
        self.replies: list[dict[str, Any]] = []
        self.lose_replies = 0  # the next N batches are processed, then a 502 goes back instead
        self._srv: Any = None

    def __call__(self, environ: dict, start_response: Any) -> list[bytes]:
        # records what the server answered to each batch, to count acceptances server-side
        held: list[tuple[str, list]] = []

        def hold(s: str, headers: list, exc_info: Any = None) -> Any:
            held.append((s, headers))
            return lambda data: None

        body = b"".join(self.app(environ, hold))
        status = [held[0][0]]
        if environ["PATH_INFO"] == "/api/v1/sightings" and status[0].startswith("200"):
            self.replies.append(json.loads(body))
            if self.lose_replies > 0:
                self.lose_replies -= 1
                start_response("502 Bad Gateway", [("Content-Type", "text/plain")])
                return [b"upstream reply lost"]
        start_response(*held[0])
        return [body]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Served:
        self._srv = make_server("127.0.0.1", self.port, self, threaded=True)
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()


def test_store_server_outage_every_sighting_accepted_exactly_once(app, db, redis, tmp_path) -> None:  # type: ignore[no-untyped-def]
    tag = secrets.token_hex(3)
    merchant = services.create_merchant(db, f"scan-{tag}", "Outage test", "salon")
    venue = services.create_venue(db, merchant, f"room-{tag}", "site")
    scanner, secret = services.add_scanner(db, app.config["DATA_KEY"], venue, f"sc-{tag}", 0, 0)
    db.commit()
    get_topology(app).invalidate()

    emitters = [
        SimEmitter(secrets.token_bytes(16), 10, [Leg(0, 1e9, "room", float(i), 2.0)])
        for i in range(5)
    ]
    source = SimulatedSource(
        World(emitters, time.time()), "room", 2.0, 2.0, interval_s=(0.05, 0.1), sigma_db=1.0
    )
    served = Served(app, free_port()).start()
    daemon = ScannerDaemon(
        server_url=served.url, scanner=f"sc-{tag}", secret=secret, source=source,
        queue_path=str(tmp_path / "queue.sqlite"), batch_max=50,
        batch_age_s=0.2, heartbeat_s=0.3, backoff_cap_s=0.3,
    )  # fmt: skip
    daemon.start()
    try:
        assert daemon.wait_for(lambda: daemon.uplink.batches_sent >= 3, 20)
        served.lose_replies = 1  # processed by the server, but the scanner never hears so
        assert daemon.wait_for(lambda: daemon.uplink.duplicates == 1, 20)
        served.stop()  # the store server goes away mid-stream
        assert daemon.wait_for(
            lambda: daemon.queue.batches >= 5 and daemon.uplink.failures >= 3, 20
        )
        served.start()  # and comes back on the same address
        target = daemon.uplink.batches_sent + 5
        assert daemon.wait_for(lambda: daemon.uplink.batches_sent >= target, 20)
        assert daemon.wait_for(lambda: daemon.queue.batches == 0, 20)
    finally:
        daemon.stop()
        served.stop()
    stats = daemon.stats()
    accepted_by_server = sum(r["accepted"] for r in served.replies if not r["duplicate"])
    # exactly once: everything forwarded was accepted once, except the batch stop() left queued
    assert stats["frames_forwarded"] == accepted_by_server + stats["queue_depth"]
    assert stats["sightings_accepted"] == accepted_by_server > 100
    assert stats["batches_rejected"] == 0 and stats["frames_dropped"] == 0
    # the re-sent batch was recognised by its id and not counted twice
    assert sum(r["duplicate"] for r in served.replies) == stats["duplicates"] == 1
    adapter = redis.hget(get_keys(app).scanner_health(scanner.id), "adapter")
    assert adapter in (b"simulated", "simulated")  # the heartbeat reached the store too
