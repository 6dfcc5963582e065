"""Prometheus metrics of one store server app, in a registry of its own (tests stay isolated).

Counters of what this process handled are updated from the request hooks; what lives in the stores
(outbox depth, scanner health, dropped-sighting counters) is read at scrape time, so every worker
reports the same truth without any bookkeeping on the hot path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import select

from store_server import scanner_health
from store_server.db import sessions
from store_server.drift_report import from_sample, sample
from store_server.models import Device, Scanner, Venue
from store_server.redis_store import get_keys, get_redis

log = logging.getLogger(__name__)

# Batches are a few ms when healthy; the tail up to seconds is what an outage looks like.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """The app's registry and the instruments the request hooks and jobs update."""

    def __init__(self, app: Flask) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cm_http_requests", "HTTP requests handled", ["endpoint", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "cm_http_request_seconds",
            "HTTP request latency",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batches = Counter(
            "cm_sighting_batches", "Sighting batches by outcome", ["outcome"], registry=r
        )
        self.received = Counter(
            "cm_sightings_received", "Sightings accepted (duplicates excluded)", registry=r
        )
        self.resolved = Counter(
            "cm_sightings_resolved", "Sightings resolved to a consented subscriber", registry=r
        )
        self.ingest_seconds = Histogram(
            "cm_ingest_batch_seconds",
            "Latency of accepted sighting batches, request in to response out",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.push_seconds = Histogram(
            "cm_push_seconds",
            "Latency of delivering presence events to devices",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.heartbeats = Counter(
            "cm_scanner_heartbeats", "Scanner heartbeats accepted", ["scanner"], registry=r
        )
        self.report_jobs = Counter(
            "cm_report_jobs", "Report jobs run, by status", ["status"], registry=r
        )
        r.register(StoreCollector(app))

    def observe_ingest(self, status: int, body: dict[str, Any] | None, seconds: float) -> None:
        """Account one answered sightings request."""
        if status != 200 or body is None:
            self.batches.labels("refused" if status < 500 else "failed").inc()
            return
        if body.get("duplicate"):
            self.batches.labels("duplicate").inc()
            return
        self.batches.labels("accepted").inc()
        self.received.inc(int(body.get("accepted", 0)))
        self.ingest_seconds.observe(seconds)


class StoreCollector(Collector):
    """Gauges read from SQL and Redis at scrape time; a store that is down is reported, not
    raised, so /metrics keeps answering through an outage."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def describe(self) -> list[Metric]:
        """Nothing up front: families depend on the stores (keeps registration store-free)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Scrape-time gauges: devices, outboxes, the journal, scanner health and drift, dropped
        sightings."""
        up = GaugeMetricFamily("cm_store_up", "Store reachable at scrape time", labels=["store"])
        connected = self.app.extensions.get("cm_connected_devices", {})
        yield GaugeMetricFamily(
            "cm_connected_devices", "Devices connected to this process", value=len(connected)
        )
        try:
            with sessions(self.app)() as db:
                scanners = list(db.execute(select(Scanner.id, Scanner.name)))
                devices = list(db.scalars(select(Device.id).where(Device.revoked_at.is_(None))))
                venues = list(db.scalars(select(Venue.id)))
            up.add_metric(["sql"], 1)
        except Exception:  # a scrape must survive a store outage
            log.warning("metrics: database unavailable")
            up.add_metric(["sql"], 0)
            up.add_metric(["redis"], 0)
            yield up
            return
        try:
            yield from self._from_redis(scanners, devices, venues)
            up.add_metric(["redis"], 1)
        except Exception:
            log.warning("metrics: redis unavailable")
            up.add_metric(["redis"], 0)
        yield up

    def _from_redis(
        self, scanners: list[Any], devices: list[int], venues: list[int]
    ) -> Iterator[Metric]:
        r, keys = get_redis(self.app), get_keys(self.app)
        pipe = r.pipeline(transaction=False)
        for device_id in devices:
            pipe.xlen(keys.outbox(device_id))
        for scanner_id, _ in scanners:
            fields = ["at", "queue_depth", "adapter", scanner_health.RESTORED]
            pipe.hmget(keys.scanner_health(scanner_id), fields)
        for venue_id in venues:
            pipe.get(keys.dropped(venue_id))
        for venue_id in venues:
            sample(pipe, keys, venue_id)
        pipe.xlen(keys.journal())
        *res, backlog = pipe.execute()
        depths = res[: len(devices)]
        health = res[len(devices) : len(devices) + len(scanners)]
        dropped = res[len(devices) + len(scanners) : len(devices) + len(scanners) + len(venues)]
        states = res[len(devices) + len(scanners) + len(venues) :]
        yield GaugeMetricFamily(
            "cm_outbox_depth", "Device events not yet acknowledged, all devices", value=sum(depths)
        )
        yield GaugeMetricFamily(
            "cm_outbox_max_depth", "Largest single device outbox", value=max(depths, default=0)
        )
        yield GaugeMetricFamily(
            "cm_journal_backlog",
            "Audit entries and visits recorded in Redis, not yet written to SQL",
            value=backlog,
        )
        now = time.time()
        age = GaugeMetricFamily(
            "cm_scanner_heartbeat_age_seconds",
            "Seconds since the scanner's last heartbeat (absent: never heard)",
            labels=["scanner"],
        )
        queue = GaugeMetricFamily(
            "cm_scanner_queue_depth", "Batches queued on the scanner", labels=["scanner"]
        )
        adapter = GaugeMetricFamily(
            "cm_scanner_adapter_up", "Scanner reports its BLE adapter working", labels=["scanner"]
        )
        for (_, name), (at, depth, state, restored) in zip(scanners, health, strict=True):
            if at is None or restored:
                continue  # never heard, or a stand-in after Redis lost the reports
            age.add_metric([name], max(0.0, now - float(at)))
            queue.add_metric([name], float(depth or 0))
            adapter.add_metric([name], 0.0 if state == "down" else 1.0)
        yield from (age, queue, adapter)
        drift = GaugeMetricFamily(
            "cm_scanner_drift_db",
            "Radio drift since the survey (dB, live minus survey), median over current trackers",
            labels=["scanner"],
        )
        learnt_by = GaugeMetricFamily(
            "cm_scanner_drift_emitters",
            "How many current trackers the scanner's drift figure rests on",
            labels=["scanner"],
        )
        for read in states:
            for name, (db, n) in from_sample(read).items():
                drift.add_metric([name], db)
                learnt_by.add_metric([name], float(n))
        yield from (drift, learnt_by)
        yield CounterMetricFamily(
            "cm_sightings_dropped",
            "Sightings that resolved to nobody (all processes; kept in Redis)",
            value=sum(int(d) for d in dropped if d),
        )
