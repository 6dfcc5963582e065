"""Silent scanners and dark zones: a zone whose every scanner went silent cannot place anyone.

Pure rules (which scanner belongs to which zone, when a scanner counts as silent, which zones
are dark) and a thin Redis adapter: the jobs publish each venue's dark zones every second, and
ingest reads them through a per-process cache, one round trip a second at most.

A scanner's last heartbeat lives in Redis only, but whether it heartbeats at all is kept in SQL
(`Scanner.reports_health`, set at its first heartbeat): if Redis loses its data, the jobs give
each such scanner a placeholder heartbeat dated from the loss's discovery, which its next real
one replaces; one that never reports again is then judged silent like any other, so its zone
still goes dark.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
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
NONE_IDS: frozenset[int] = frozenset()
# Fields of a health hash besides the report's own: the mark of a placeholder the jobs wrote
# after Redis lost the scanner's heartbeats, and the mark that SQL was told the scanner reports
# health (absent, the next heartbeat tells it: see api.heartbeat).
RESTORED = "restored"
IN_SQL = "in_sql"
# The scanner's time (on the server's clock) before which it has delivered every frame it heard,
# as its last heartbeat said or, later, a batch showed (ingest.batch_through); absent from older
# daemons' reports.
THROUGH = "through"
# Writes the placeholder only where there is still no heartbeat: one that arrived since the
# jobs read the hash is newer and must stand. Atomic per key, in the jobs' write transaction.
_RESTORE_LUA = """
for _, key in ipairs(KEYS) do
  if redis.call('HSETNX', key, 'at', ARGV[1]) == 1 then
    redis.call('HSET', key, unpack(ARGV, 2))
  end
end
return 0
"""


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

    A scanner with no heartbeat is not judged: older daemons and bench scanners post sightings
    only, and a zone must not go dark for want of a report nobody sends. One that did heartbeat
    before Redis lost its report is judged by the placeholder `publish` gives it (`lost`)."""
    if not health or "at" not in health:
        return False
    if health.get("adapter") == "down":
        return True
    return now - float(health["at"]) > after


def heard_through(healths: Iterable[Mapping[str, str]], now: float) -> float | None:
    """Up to when the scanners of `healths` have all said what they heard: the earliest
    `through` among those that report one and are not silent; None if none does.

    An exit for absence is judged at this time, not at `now`: a scanner cut off from the server
    (its uplink, not its radio) holds what it hears in its queue, and a visitor it still hears
    is not absent. A silent scanner is judged by its zone going dark instead."""
    times = [float(h[THROUGH]) for h in healths if h and THROUGH in h and not silent(h, now)]
    return min(times) if times else None


def lost(health: Mapping[str, str], reports_health: bool) -> bool:
    """Whether Redis lost the heartbeats of a scanner SQL knows sends them (Redis restarted
    empty, or its data was lost otherwise)."""
    return reports_health and "at" not in health


def placeholder(now: float) -> dict[str, str]:
    """The health a lost scanner is given: a heartbeat at `now`, marked as not its own, so it
    turns silent SILENT_AFTER_S later unless a real one replaces it. Only scanners SQL knows
    heartbeat get one, so it carries the mark that SQL was told."""
    return {"at": repr(now), RESTORED: "1", IN_SQL: "1"}


def dark_zones(own: Mapping[str, tuple[int, ...]], silent_ids: set[int]) -> frozenset[str]:
    """Zones with scanners of their own, every one of them silent."""
    return frozenset(z for z, ids in own.items() if ids and all(i in silent_ids for i in ids))


def publish(
    client: Any,
    keys: Keys,
    scanners: Mapping[int, int],
    own_of: Callable[[int], Mapping[str, tuple[int, ...]] | None],
    reporting: Collection[int] = NONE_IDS,
    now: float | None = None,
) -> dict[int, list]:
    """Judge every scanner (id -> venue id) by its heartbeat and publish the venues' dark zones
    (`own_of(venue_id)`: that venue's `zone_scanners`, None if it is gone); those of `reporting`
    (SQL says they heartbeat) whose heartbeat Redis lost get a `placeholder`. One read and one
    write round trip."""
    ids = list(scanners)
    reader = client.pipeline(transaction=False)
    for sid in ids:
        reader.hgetall(keys.scanner_health(sid))
    healths = dict(zip(ids, reader.execute(), strict=True))
    now = time.time() if now is None else now
    restore = [sid for sid in ids if lost(healths[sid], sid in reporting)]
    # Judged as Redis will hold them once written (the placeholder keeps any other field).
    healths.update((sid, {**healths[sid], **placeholder(now)}) for sid in restore)
    quiet = {sid for sid, h in healths.items() if silent(h, now)}
    dark: dict[int, list] = {}
    for venue_id in sorted({scanners[sid] for sid in quiet}):
        own = own_of(venue_id)
        zones = dark_zones(own, quiet) if own else NONE
        if zones:
            dark[venue_id] = sorted(zones)
    writer = client.pipeline(transaction=True)
    if restore:
        # EVAL, not EVALSHA: this runs only after Redis lost its data, when no script is loaded.
        names = [keys.scanner_health(sid) for sid in restore]
        stand_in = placeholder(now)
        marks = [x for field, value in stand_in.items() if field != "at" for x in (field, value)]
        writer.eval(_RESTORE_LUA, len(names), *names, stand_in["at"], *marks)
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
