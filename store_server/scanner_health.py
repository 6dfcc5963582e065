"""Silent scanners and dark zones: a zone whose every scanner went silent cannot place anyone.

Pure rules (which scanner belongs to which zone, when a scanner counts as silent, which zones
are dark) and a thin Redis adapter: the jobs publish each venue's dark zones every second, and
ingest reads them through a per-process cache, one round trip a second at most.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry

from store_server.keys import Keys

# Three heartbeats missed (a daemon sends one every 10 s by default) and a margin for a slow
# uplink: a scanner that merely hears nobody still heartbeats, so silence means it is gone.
SILENT_AFTER_S = 35.0
# A scanner on a zone's wall or just outside it (a cabin's dashboard) is that zone's own.
SCANNER_ZONE_M = 1.0
# Published dark zones outlive a jobs round by this much only: if the jobs stop, a zone is not
# kept dark on an old verdict.
DARK_TTL_S = 5.0
READ_EVERY_S = 1.0
NONE: frozenset[str] = frozenset()


def zone_scanners(
    zones: Mapping[str, BaseGeometry], scanners: Mapping[int, tuple[float, float]]
) -> dict[str, tuple[int, ...]]:
    """Each zone's own scanners: a scanner belongs to the zone containing it, else to the
    nearest one within SCANNER_ZONE_M; one further from every zone (a corridor's) to none."""
    out: dict[str, list[int]] = {}
    names = list(zones)
    for sid, (x, y) in scanners.items():
        if not names:
            break
        point = shapely.Point(x, y)
        dist = [zones[n].distance(point) for n in names]
        best = min(range(len(names)), key=dist.__getitem__)
        if dist[best] <= SCANNER_ZONE_M:
            out.setdefault(names[best], []).append(sid)
    return {z: tuple(sorted(ids)) for z, ids in out.items()}


def silent(health: Mapping[str, str], now: float, after: float = SILENT_AFTER_S) -> bool:
    """Whether a scanner's last heartbeat says it cannot hear (adapter down) or is too old.

    A scanner that never sent one is not judged: older daemons and bench scanners post
    sightings only, and a zone must not go dark for want of a report nobody sends."""
    if not health or "at" not in health:
        return False
    if health.get("adapter") == "down":
        return True
    return now - float(health["at"]) > after


def dark_zones(own: Mapping[str, tuple[int, ...]], silent_ids: set[int]) -> frozenset[str]:
    """Zones with scanners of their own, every one of them silent."""
    return frozenset(z for z, ids in own.items() if ids and all(i in silent_ids for i in ids))


def publish(
    client: Any,
    keys: Keys,
    scanners: Mapping[int, int],
    own_of: Callable[[int], Mapping[str, tuple[int, ...]] | None],
) -> dict[int, list]:
    """Judge every scanner (id -> venue id) by its heartbeat and publish the venues' dark zones
    (`own_of(venue_id)`: that venue's `zone_scanners`, None if it is gone); one read and one
    write round trip."""
    ids = list(scanners)
    reader = client.pipeline(transaction=False)
    for sid in ids:
        reader.hgetall(keys.scanner_health(sid))
    now = time.time()
    quiet = {sid for sid, h in zip(ids, reader.execute(), strict=True) if silent(h, now)}
    dark: dict[int, list] = {}
    for venue_id in sorted({scanners[sid] for sid in quiet}):
        own = own_of(venue_id)
        zones = dark_zones(own, quiet) if own else NONE
        if zones:
            dark[venue_id] = sorted(zones)
    writer = client.pipeline(transaction=True)
    writer.delete(keys.dark_zones())
    if dark:
        writer.hset(keys.dark_zones(), mapping={v: json.dumps(z) for v, z in dark.items()})
        writer.pexpire(keys.dark_zones(), int(DARK_TTL_S * 1000))
    writer.execute()
    return dark


def read(client: Any, keys: Keys) -> dict[int, frozenset[str]]:
    """Every venue's dark zones as last published."""
    raw = client.hgetall(keys.dark_zones())
    return {int(v): frozenset(json.loads(z)) for v, z in raw.items()}


class DarkCache:
    """The published dark zones, read at most once per READ_EVERY_S by this process: a batch
    asks for its venue's, and one round trip a second serves them all."""

    def __init__(self) -> None:
        """Empty: the first call reads, and calls meanwhile wait for it."""
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._dark: dict[int, frozenset[str]] = {}

    def get(self, client: Any, keys: Keys, venue_id: int) -> frozenset[str]:
        """The venue's dark zones, at most READ_EVERY_S old."""
        if time.monotonic() - self._at >= READ_EVERY_S:
            # Until a first read succeeds there is no copy to serve: the empty one would say no
            # zone is dark and release holds, so callers wait for the read under way (and read
            # themselves if it failed). Later, the previous copy serves while one refreshes.
            first = self._at == float("-inf")
            if self._lock.acquire(blocking=first):
                try:
                    if not first or self._at == float("-inf"):
                        now = time.monotonic()
                        self._dark = read(client, keys)
                        self._at = now
                finally:
                    self._lock.release()
        return self._dark.get(venue_id, NONE)

    def clear(self) -> None:
        """Read afresh on the next call (tests, and a key prefix change)."""
        self._at = float("-inf")
