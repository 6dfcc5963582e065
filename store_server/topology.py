"""Read-mostly venue topology (scanners, zones, devices, merchant) cached per process.

The hot path must not query SQL per batch; a short TTL bounds staleness after setup changes, and
changes made in this process invalidate at once. An entry that went stale less than a TTL ago is
served as is while one background reload refreshes it (stale-while-revalidate): the request that
happened to find it stale no longer waits for the reload's queries, which put a few ms into the
push latency tail (bench/push_latency.py). Staler than that, one caller reloads it while the others
keep using it (single flight): under load, every concurrent request reloading the same venue at
once was measured as a large share of a push's cost. A venue's positioning model is
reused across reloads while its calibration and geometry are unchanged, so its grid and radio map
are built once. A reload also reads the venue's published drift per scanner, which new tracks
start from (store_server/drift_report.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from flask import Flask
from shapely.geometry import shape
from sqlalchemy import select

from store_server import drift_report
from store_server.crypto import SCANNER_SECRET, unseal
from store_server.db import sessions
from store_server.models import Device, Scanner, Venue
from store_server.positioning.drift import venue_seed
from store_server.positioning.live import VenueModel
from store_server.presence import ZoneTiming
from store_server.redis_store import get_keys, get_redis
from store_server.scanner_health import DarkCache, zone_scanners

log = logging.getLogger(__name__)
TTL_S = 10.0
# Names no scanner has are remembered (a retrying misconfigured scanner must not cost a query per
# request), but anyone can send any name: past this many they are forgotten all at once.
MAX_UNKNOWN_SCANNERS = 1024
_JITTER = random.Random()  # its own generator: seeding the global one (tests do) leaves it be


@dataclass
class ScannerInfo:
    """What ingest needs to authenticate and place one scanner."""

    id: int
    name: str
    venue_id: int
    secret: str


@dataclass
class VenueInfo:
    """A venue's positioning model, zone timings and devices per zone."""

    id: int
    merchant_id: int
    merchant_key: bytes
    merchant_active: bool
    model: VenueModel
    timings: dict[str, ZoneTiming]
    devices_by_zone: dict[str, list[int]] = field(default_factory=dict)
    device_names: dict[int, str] = field(default_factory=dict)
    # Where a new track's per-scanner offsets start: the venue's published drift.
    drift_seed: dict[str, list[float]] = field(default_factory=dict)
    model_version: str = ""
    # Each zone's own scanners (ids), whose silence makes it dark (scanner_health).
    zone_scanners: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # Scanner name -> id: a tracker knows the scanners that heard it by name.
    scanner_ids: dict[str, int] = field(default_factory=dict)


class Topology:
    """Cache of scanners by name and venues by id, loaded from SQL."""

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._lock = threading.Lock()
        # name / id -> (when the entry goes stale, on the monotonic clock; the info)
        self._scanners: dict[str, tuple[float, ScannerInfo | None]] = {}
        self._unknown: set[str] = set()  # names cached as no scanner
        self._venues: dict[int, tuple[float, VenueInfo | None]] = {}
        self._models: dict[int, tuple[str, VenueModel, str]] = {}
        self._loading: set[tuple[str, object]] = set()
        self._secrets: dict[Any, str] = {}  # sealed -> unsealed scanner secret
        self._reloads: set[threading.Thread] = set()
        self.dark = DarkCache()

    def invalidate(self) -> None:
        """Forget everything (after a setup change in this process)."""
        with self._lock:
            self._scanners.clear()
            self._unknown.clear()
            self._venues.clear()
            self._secrets.clear()

    def _claim(self, key: tuple[str, object], stale: bool) -> bool:
        """Whether this caller reloads `key`: always when nothing usable is cached, else only
        if no other caller is reloading it already."""
        with self._lock:
            if stale and key in self._loading:
                return False
            self._loading.add(key)
            return True

    def _done(self, key: tuple[str, object]) -> None:
        with self._lock:
            self._loading.discard(key)

    def _lookup(
        self,
        entries: dict[Any, tuple[float, Any]],
        kind: str,
        key: Any,
        load: Callable[[Any], Any],
    ) -> Any:
        """An entry of `entries`: fresh, else stale by under a TTL (a background reload follows),
        else loaded by this caller unless another one is loading it already."""
        hit = entries.get(key)
        now = time.monotonic()
        if hit and now < hit[0]:
            return hit[1]
        if hit and now < hit[0] + TTL_S:
            self._revalidate((kind, key), load, key)
            return hit[1]
        if not self._claim((kind, key), hit is not None):
            return hit[1]  # type: ignore[index]
        try:
            return load(key)
        finally:
            self._done((kind, key))

    def scanner(self, name: str) -> ScannerInfo | None:
        """The scanner with this name, or None if unknown."""
        return self._lookup(self._scanners, "scanner", name, self._load_scanners)

    def _load_scanners(self, name: str) -> ScannerInfo | None:
        """Load `name`, and with it every known scanner past half its TTL, in one query: a venue
        of many scanners would otherwise reload one scanner per request all the time."""
        now = time.monotonic()
        names = {name} | {
            n
            for n, (until, info) in list(self._scanners.items())
            if info and until - now < TTL_S / 2
        }
        with sessions(self._app)() as db:
            rows = db.execute(
                select(Scanner.id, Scanner.name, Scanner.venue_id, Scanner.secret_enc).where(
                    Scanner.name.in_(names)
                )
            ).all()
        found = {row.name: row for row in rows}
        for n in names:
            row = found.get(n)
            if row is not None:
                self._unknown.discard(n)
            elif n not in self._unknown:
                if len(self._unknown) >= MAX_UNKNOWN_SCANNERS:
                    for gone in self._unknown:
                        self._scanners.pop(gone, None)
                    self._unknown.clear()
                self._unknown.add(n)
            self._scanners[n] = (_stale_at(now), None if row is None else self._info(row))
        return self._scanners[name][1]

    def _info(self, row: Any) -> ScannerInfo:
        # Unsealing costs a key derivation: done again only when the sealed secret changed.
        secret = self._secrets.get(row.secret_enc)
        if secret is None:
            if len(self._secrets) > 10_000:  # re-keyed secrets pile up otherwise
                self._secrets.clear()
            key = self._app.config["DATA_KEY"]
            secret = unseal(key, row.secret_enc, SCANNER_SECRET).decode()
            self._secrets[row.secret_enc] = secret
        return ScannerInfo(row.id, row.name, row.venue_id, secret)

    def venue(self, venue_id: int) -> VenueInfo | None:
        """The venue's info, or None if it no longer exists."""
        return self._lookup(self._venues, "venue", venue_id, self._load_venue)

    def _load_venue(self, venue_id: int) -> VenueInfo | None:
        with sessions(self._app)() as db:
            v = db.get(Venue, venue_id)
            info = None if v is None else _venue_info(db, v, *self._model(v))
        if info is not None:
            info.drift_seed = self._drift_seed(venue_id, info.model_version)
        self._venues[venue_id] = (_stale_at(time.monotonic()), info)
        return info

    def _revalidate(self, key: tuple[str, object], load: Callable[[Any], Any], arg: Any) -> None:
        """Reload a stale entry in the background, unless a reload of it is running already."""
        if not self._claim(key, True):
            return

        def run() -> None:
            try:
                load(arg)
            except Exception as e:  # the cached entry stays, and the next lookup tries again
                log.warning("topology reload failed, cached entry kept: %s", e)
            finally:
                self._done(key)
                with self._lock:
                    self._reloads.discard(thread)

        thread = threading.Thread(target=run, name="topology-reload", daemon=True)
        with self._lock:
            self._reloads.add(thread)
        thread.start()

    def wait_reloads(self, timeout: float = 10.0) -> None:
        """Wait for the background reloads running now (tests; a clean shutdown)."""
        with self._lock:
            running = list(self._reloads)
        for thread in running:
            thread.join(timeout)

    def _drift_seed(self, venue_id: int, version: str) -> dict[str, list[float]]:
        """The venue's published drift as a new track's offsets, if it was learnt against the
        radio map the venue has now; none if Redis cannot say (the venue still loads: new
        tracks then learn the drift from scratch, as before any was published)."""
        try:
            r, keys = get_redis(self._app), get_keys(self._app)
            figure = drift_report.published(r, keys, venue_id, version)
        except redis.RedisError:
            return {}
        return venue_seed(figure)

    def _model(self, v: Venue) -> tuple[VenueModel, str]:
        """The venue's positioning model and its version, the cached ones while nothing they
        depend on changed (the signature is built once per reload, hashed once per model)."""
        sig = _signature(v)
        cached = self._models.get(v.id)
        if cached and cached[0] == sig:
            return cached[1], cached[2]
        zones, scanners = _geometry(v)
        model = (
            VenueModel.from_json(v.calibration)
            if v.calibration
            else VenueModel.uncalibrated(scanners, {k: shape(g) for k, g in zones.items()})
        )
        version = _version_of(sig)
        self._models[v.id] = (sig, model, version)
        return model, version


def _stale_at(now: float) -> float:
    """When an entry loaded now goes stale: 70-100 % of TTL_S, at random. Entries loaded together
    (a server's first requests, a warm-up) would otherwise go stale together, and every TTL the
    requests of that moment would pay all the venue reloads (a few ms each) at once."""
    return now + TTL_S * (0.7 + 0.3 * _JITTER.random())


def _geometry(v: Venue) -> tuple[dict[str, Any], dict[str, tuple[float, float]]]:
    """The venue's zone polygons (GeoJSON) and scanner positions, by name."""
    return {z.name: z.polygon for z in v.zones}, {s.name: (s.x, s.y) for s in v.scanners}


def _signature(v: Venue) -> str:
    """Everything the venue's positioning model is built from, as one string."""
    return json.dumps([v.calibration, *_geometry(v)], sort_keys=True, default=str)


def model_version(v: Venue) -> str:
    """A short name for the radio map the venue's model holds now: a new survey, a moved
    scanner or redrawn zones give another, and offsets learnt against the old one no longer
    apply (ingest drops them, the published drift is not used)."""
    return _version_of(_signature(v))


def _version_of(signature: str) -> str:
    return hashlib.sha256(signature.encode()).hexdigest()[:12]


def _venue_info(db, v: Venue, model: VenueModel, version: str) -> VenueInfo:
    timings = {z.name: ZoneTiming(z.enter_stable_s, z.exit_absent_s) for z in v.zones}
    zone_names = {z.id: z.name for z in v.zones}
    info = VenueInfo(
        v.id,
        v.merchant_id,
        v.merchant.pseudonym_key,
        v.merchant.status == "active",
        model,
        timings,
        model_version=version,
        zone_scanners=zone_scanners(
            {z.name: shape(z.polygon) for z in v.zones}, {s.id: (s.x, s.y) for s in v.scanners}
        ),
        scanner_ids={s.name: s.id for s in v.scanners},
    )
    devices = db.scalars(select(Device).where(Device.venue_id == v.id, Device.revoked_at.is_(None)))
    for d in devices:
        info.device_names[d.id] = d.name
        if d.zone_id in zone_names:
            info.devices_by_zone.setdefault(zone_names[d.zone_id], []).append(d.id)
    return info


def get_topology(app: Flask) -> Topology:
    """The app's topology cache."""
    return app.extensions["cm_topology"]
