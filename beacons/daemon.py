"""The scanner daemon: source -> edge filter -> batches -> durable queue -> signed uplink.

Three threads: the reader (radio, filter, batching, queue writes), the sender (queue to server) and
the heartbeat. Only the reader touches adverts, and adverts lose their BLE address in the edge
filter, so no address can reach the queue, the network or the logs.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from beacons.config import ConfigError, ScannerConfig, load_config
from beacons.edge import EdgeFilter
from beacons.protocol import THROUGH_MARGIN_S
from beacons.queue import SightingQueue
from beacons.sources import Advert, Source
from beacons.sources.replay import Recorder
from beacons.uplink import Uplink, new_batch_id

VERSION = "0.1.0"
log = logging.getLogger("beacons.daemon")
# The store server ends a presence for absence only once every scanner that heard the visitor
# has said, in a heartbeat's `through` or by a delivered batch's first frame, that it has
# delivered everything it heard until the absence was due: an uplink cut shorter than a zone's
# absence time is then not taken for the visitor leaving. So for this long after it last
# forwarded a frame a scanner keeps its word at most KEEPALIVE_S old (the default absence
# times are 4-30 s; a zone's may be longer), and heartbeats every heartbeat_s otherwise.
ACTIVE_WINDOW_S = 120.0
# A heartbeat is a signed request (~1.3 ms of the server's CPU): once a second, whatever the
# batch age, and only when no batch (which says it as well) went in that second.
KEEPALIVE_S = 1.0


class Batcher:
    """Accumulates sightings until a batch is full or its first sighting is `max_age_s` old."""

    def __init__(self, max_n: int, max_age_s: float) -> None:
        """Bound batches by count and by age."""
        self.max_n = max_n
        self.max_age_s = max_age_s
        self.items: list[dict[str, Any]] = []
        self.since = 0.0

    def add(self, item: dict[str, Any], now: float) -> bool:
        """Add one sighting; True when the batch is now full."""
        if not self.items:
            self.since = now
        self.items.append(item)
        return len(self.items) >= self.max_n

    def due(self, now: float) -> bool:
        """True when a non-empty batch has reached its maximum age."""
        return bool(self.items) and now - self.since >= self.max_age_s

    def wait_s(self, now: float, default: float) -> float:
        """How long the reader may block before this batch becomes due."""
        if not self.items:
            return default
        return max(0.0, min(default, self.since + self.max_age_s - now))

    def take(self) -> list[dict[str, Any]]:
        """Empty the batch and return what it held."""
        items, self.items = self.items, []
        return items


def queued_through(items: list[dict[str, Any]], read_at: float) -> float:
    """Time before which every frame heard is queued, after the reader handled what the source
    gave at `read_at`: the open batch's first frame, or `read_at`, less THROUGH_MARGIN_S."""
    first = items[0]["ts"] if items else read_at
    return min(first, read_at) - THROUGH_MARGIN_S


class ScannerDaemon:
    """One scanner: reads a source, filters at the edge, queues durably, uploads signed batches."""

    def __init__(
        self,
        *,
        server_url: str,
        scanner: str,
        secret: str,
        source: Source,
        queue_path: str,
        batch_max: int = 200,
        batch_age_s: float = 1.0,
        heartbeat_s: float = 10.0,
        ibeacon_uuids: frozenset[bytes] = frozenset(),
        queue_max_sightings: int = 1_000_000,
        timeout_s: float = 10.0,
        backoff_cap_s: float = 60.0,
        record_file: str | None = None,
        read_timeout_s: float = 0.2,
    ) -> None:
        """Wire the pipeline; nothing runs until `start`."""
        if not 1 <= batch_max <= queue_max_sightings:
            raise ValueError("batch_max must be between 1 and queue_max_sightings")
        self.source = source
        self.edge = EdgeFilter(ibeacon_uuids)
        self.queue = SightingQueue(queue_path, max_sightings=queue_max_sightings)
        self._changed = threading.Condition()
        self.uplink = Uplink(
            server_url,
            scanner,
            secret,
            self.queue,
            timeout=timeout_s,
            backoff_cap_s=backoff_cap_s,
            on_change=self._notify,
        )
        self.batcher = Batcher(batch_max, batch_age_s)
        self.heartbeat_s = heartbeat_s
        self.read_timeout_s = read_timeout_s
        self.recorder = Recorder(record_file) if record_file else None
        self.frames_heard = 0
        self.frames_forwarded = 0
        self.frames_dropped = 0
        self.heartbeats_sent = 0
        # Written by the reader only: every frame heard before it is queued or delivered. From
        # the start, so that the first heartbeat (before the reader's first pass) says it too:
        # one without `through` would lift the hold on a backlog still in the queue.
        self._queued_through = time.time() - THROUGH_MARGIN_S
        self._last_forwarded = float("-inf")  # monotonic
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._stop_reader = threading.Event()
        self._wake = threading.Event()
        self._reader_done = threading.Event()
        self._source_done = False  # set by the reader once a finite source is fully handled
        self.failed: str | None = None  # why the reader stopped for good (the disk, not the radio)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the reader, sender and heartbeat threads."""
        self._started = time.monotonic()
        for name, target in (
            ("reader", self._read_loop),
            ("sender", lambda: self.uplink.run(self._stop, self._wake)),
            ("heartbeat", self._heartbeat_loop),
        ):
            t = threading.Thread(target=target, name=f"scanner-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until predicate() holds, re-checked whenever a batch is queued or sent."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def _flush(self) -> None:
        items = self.batcher.take()
        if items:
            lost = self.queue.put(new_batch_id(), time.time(), items)
            if lost:
                log.warning("queue full: dropped %d oldest sightings", lost)
            self._wake.set()
            self._notify()

    def handle(self, adverts: list[Advert]) -> None:
        """Filter and batch adverts (the reader thread's work, public for benchmarks and tests)."""
        for advert in adverts:
            self.frames_heard += 1
            sighting = self.edge.sighting(advert)
            if sighting is None:
                self.frames_dropped += 1
                continue
            self.frames_forwarded += 1
            self._last_forwarded = time.monotonic()
            if self.recorder is not None:
                # the programme frame only: the advert around it may name a passer-by's phone
                self.recorder.write(sighting.to_advert())
            if self.batcher.add(sighting.to_json(), time.monotonic()):
                self._flush()
        if self.batcher.due(time.monotonic()):
            self._flush()

    def _read_loop(self) -> None:
        try:
            while not self._stop_reader.is_set():
                wait = self.batcher.wait_s(time.monotonic(), self.read_timeout_s)
                try:
                    adverts = self.source.read(wait)
                except Exception as exc:  # the radio must not take the queue down with it
                    log.error("source error (%s); retrying", type(exc).__name__)
                    self._stop_reader.wait(1.0)
                    continue
                read_at = time.time()
                try:
                    self.handle(adverts)
                except (sqlite3.Error, OSError) as exc:
                    # The queue (or the capture being recorded) cannot be written, e.g. a full
                    # disk: stop and say so, rather than live on hearing nothing.
                    self._fail(exc, "stopping")
                    return
                self._queued_through = queued_through(self.batcher.items, read_at)
                self._source_done = self.source.exhausted
        finally:
            if self.failed is None:
                try:
                    self._flush()
                except (sqlite3.Error, OSError) as exc:
                    self._fail(exc, "the open batch is lost")
            self._reader_done.set()

    def _fail(self, exc: BaseException, consequence: str) -> None:
        """Record (for main's exit code and message) and log why the reader stopped for good."""
        self.failed = f"cannot queue sightings ({type(exc).__name__}: {exc})"
        log.error("%s: %s", self.failed, consequence)
        self._notify()

    def delivered_through(self) -> float:
        """Time before which everything this scanner heard is with the server: the earliest
        frame still queued or batching, less a margin."""
        # Read before the queue: frames the reader queues meanwhile are all heard after it.
        queued = self._queued_through
        oldest = self.queue.oldest()
        if oldest is not None:
            queued = min(queued, min(s["ts"] for s in oldest.sightings()) - THROUGH_MARGIN_S)
        # A replayed capture may be stamped in relative time: "nothing yet" rather than a time
        # the server refuses, with the rest of the heartbeat.
        return max(0.0, queued)

    def heartbeat_due_s(self, now: float, last_sent: float) -> float:
        """Seconds from monotonic `now` until the next heartbeat, the last one sent at
        `last_sent`: every heartbeat_s, and while frames were forwarded lately also KEEPALIVE_S
        after the last word the server had of `through`, a heartbeat or a delivered batch (the
        store server reads a batch's first frame as one: ingest.batch_through)."""
        due = last_sent + self.heartbeat_s
        if now - self._last_forwarded <= ACTIVE_WINDOW_S:
            due = min(due, max(last_sent, self.uplink.delivered_at) + KEEPALIVE_S)
        return max(0.0, due - now)

    def heartbeat_body(self) -> dict[str, Any]:
        """What a heartbeat sends: `heartbeat_payload` and `delivered_through`."""
        return {**self.heartbeat_payload(), "through": round(self.delivered_through(), 3)}

    def heartbeat_payload(self) -> dict[str, Any]:
        """Health and counters, nothing about any device."""
        return {
            "uptime_s": round(time.monotonic() - self._started, 3),
            "queue_depth": self.queue.depth,
            "queue_dropped": self.queue.dropped,
            "adapter": self.source.adapter,
            "frames_heard": self.frames_heard,
            "frames_forwarded": self.frames_forwarded,
            "frames_dropped": self.frames_dropped,
            "batches_sent": self.uplink.batches_sent,
            "batches_rejected": self.uplink.batches_rejected,
            "version": VERSION,
        }

    def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            if self.uplink.heartbeat(self.heartbeat_body()):
                self.heartbeats_sent += 1
            # Re-judged each short tick: the first frame after a quiet spell brings the
            # keepalive pace in at once, not after the rest of a heartbeat_s wait.
            while not self._stop.is_set():
                due = self.heartbeat_due_s(time.monotonic(), sent)
                if due <= 0:
                    break
                self._stop.wait(min(due, KEEPALIVE_S))

    def stats(self) -> dict[str, Any]:
        """Counters for tests, the demo and the heartbeat."""
        out = self.heartbeat_payload()
        out.update(
            queue_batches=self.queue.batches,
            sightings_sent=self.uplink.sightings_sent,
            sightings_accepted=self.uplink.accepted,
            duplicates=self.uplink.duplicates,
            send_failures=self.uplink.failures,
            heartbeats_sent=self.heartbeats_sent,
        )
        return out

    def drained(self) -> bool:
        """True when a finite source is used up and everything heard has been delivered."""
        return self._source_done and not self.batcher.items and self.queue.batches == 0

    def stop(self, timeout: float = 5.0) -> None:
        """Flush the open batch to disk, stop every thread and close the files."""
        self._stop_reader.set()
        if self._threads:
            self._reader_done.wait(timeout)
        else:
            self._flush()  # never started (driven through handle()): still keep what was heard
        self._stop.set()
        self._wake.set()
        self.uplink.resume()  # a sender waiting out an outage's backoff
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        self._threads.clear()
        self.source.close()
        if self.recorder is not None:
            self.recorder.close()
        if stuck:
            # a request still in flight: leave the queue open for it; SQLite keeps it consistent
            # whatever happens at process exit
            log.warning("stopping with %s still busy", ", ".join(stuck))
            return
        self.uplink.close()
        self.queue.close()


def build_source(cfg: ScannerConfig) -> Source:
    """The source a configuration names."""
    src = cfg.source
    if src["kind"] == "bluepy":
        from beacons.sources.bluepy_source import BluepySource  # needs bluepy only on a Pi

        return BluepySource(src["adapter"])
    if src["kind"] == "replay":
        from beacons.sources.replay import ReplaySource

        return ReplaySource(src["file"], src["speed"], rebase=src["rebase"])
    from beacons.simulator import demo_world, world_from_file
    from beacons.sources.simulated import SimulatedSource

    now = time.time()
    if src["scenario"] == "demo":
        world = demo_world(now, venue=src["venue"], emitters=src["emitters"], seed=src["seed"])
    else:
        world = world_from_file(src["scenario"], now)
    return SimulatedSource(
        world,
        src["venue"],
        src["x"],
        src["y"],
        seed=src["seed"],
        n=src["n"],
        sigma_db=src["sigma_db"],
        floor_dbm=src["floor_dbm"],
    )


def daemon_from_config(cfg: ScannerConfig) -> ScannerDaemon:
    """A daemon wired exactly as a configuration says."""
    return ScannerDaemon(
        server_url=cfg.server_url,
        scanner=cfg.scanner,
        secret=cfg.secret,
        source=build_source(cfg),
        queue_path=cfg.queue_path,
        batch_max=cfg.batch_max,
        batch_age_s=cfg.batch_age_s,
        heartbeat_s=cfg.heartbeat_s,
        ibeacon_uuids=cfg.ibeacon_uuids,
        queue_max_sightings=cfg.queue_max_sightings,
        timeout_s=cfg.timeout_s,
        backoff_cap_s=cfg.backoff_cap_s,
        record_file=cfg.record_file,
    )


def main(config_path: str) -> int:
    """Run the scanner until SIGTERM/SIGINT (or a replay is fully delivered); 2 on bad config."""
    try:
        cfg = load_config(config_path)
        daemon = daemon_from_config(cfg)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error, ImportError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: cannot start scanner: {reason}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    daemon.start()
    log.info("scanner %s started, %s source", cfg.scanner, cfg.source["kind"])
    while not done.wait(0.2):
        if daemon.failed:
            break
        if daemon.drained():
            log.info("capture replayed and delivered")
            break
    skipped = getattr(daemon.source, "bad_lines", 0)
    if skipped:
        log.warning("capture: skipped %d line(s) that were not capture records", skipped)
    daemon.stop()
    if daemon.failed:
        print(f"error: {daemon.failed}", file=sys.stderr)
        return 1
    return 0
