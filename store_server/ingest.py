"""Sighting batches to presence events: validate, deduplicate, resolve, position, presence.

Four Redis round trips per batch whatever its size: (1) replay/duplicate checks, the batch claim
and the resolver lookup, (2) WATCH and (3) the tracking states of the subscribers heard, (4) one
transaction writing them back with the batch marker and the presence events.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import redis

from store_server import events as pending
from store_server import presence
from store_server.keys import Keys
from store_server.positioning.live import track
from store_server.push import Occurrence
from store_server.resolver import applicable_consent
from store_server.topology import ScannerInfo, Topology, VenueInfo

HEX16 = re.compile(r"^[0-9a-f]{16}$")
HEX40 = re.compile(r"^[0-9a-f]{40}$")
BATCH_ID = re.compile(r"^[0-9A-Za-z_-]{8,64}$")
KINDS = {"eid": HEX16, "ibeacon": HEX40}


MAX_RETRIES = 8
STALE_S = 60.0  # older presence events come from a scanner's backlog, not from now
BATCH_PENDING, BATCH_DONE = "pending", "done"
PENDING_TTL_S = 60
_LOCKS: dict[int, threading.Lock] = defaultdict(threading.Lock)


def _venue_lock(venue_id: int) -> threading.Lock:
    """One lock per venue in this process: batches of one venue fold into its states in turn."""
    return _LOCKS[venue_id]


class BadBatch(ValueError):
    """The batch itself is invalid and will never be accepted."""


@dataclass(frozen=True)
class Sighting:
    """One validated programme frame heard by a scanner."""

    ts: float
    kind: str
    id: str
    rssi: float


@dataclass
class Outcome:
    """What ingest did with a batch."""

    accepted: int
    duplicate: bool = False
    in_progress: bool = False  # a duplicate whose first attempt has not committed yet
    limited: bool = False  # over the scanner's rate limit: nothing was done
    event_ids: list[str] = field(default_factory=list)  # pending presence events to deliver
    resolved: int = 0
    dropped: int = 0


def parse_batch(
    doc: Any, max_batch: int, now: float, max_skew: float
) -> tuple[str, list[Sighting]]:
    """Validate a decoded batch document with explicit limits; raises BadBatch with a reason."""
    if not isinstance(doc, dict):
        raise BadBatch("body must be a JSON object")
    batch_id = doc.get("batch_id")
    if not isinstance(batch_id, str) or not BATCH_ID.match(batch_id):
        raise BadBatch("batch_id must be 8-64 characters of [0-9A-Za-z_-]")
    rows = doc.get("sightings")
    if not isinstance(rows, list):
        raise BadBatch("sightings must be a list")
    if len(rows) > max_batch:
        raise BadBatch(f"batch holds {len(rows)} sightings, the limit is {max_batch}")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadBatch(f"sightings[{i}] must be an object")
        ts, kind, ident, rssi = row.get("ts"), row.get("kind"), row.get("id"), row.get("rssi")
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
            raise BadBatch(f"sightings[{i}].ts must be a number")
        # Old sightings are legitimate (a scanner back from an outage) but not from the future.
        if ts > now + max_skew or ts < now - 7 * 86400:
            raise BadBatch(f"sightings[{i}].ts is outside the accepted range")
        if kind not in KINDS:
            raise BadBatch(f"sightings[{i}].kind must be one of {sorted(KINDS)}")
        if not isinstance(ident, str) or not KINDS[kind].match(ident):
            raise BadBatch(f"sightings[{i}].id is not a valid {kind} identifier")
        if isinstance(rssi, bool) or not isinstance(rssi, int | float) or not -130 <= rssi <= 20:
            raise BadBatch(f"sightings[{i}].rssi must be a number between -130 and 20")
        out.append(Sighting(float(ts), kind, ident, float(rssi)))
    return batch_id, out


def process(
    r: redis.Redis,
    keys: Keys,
    topo: Topology,
    scanner: ScannerInfo,
    nonce: str,
    nonce_ttl: int,
    batch_id: str,
    sightings: list[Sighting],
    batch_ttl: int,
    *,
    rate_limit: int = 0,
) -> tuple[Outcome, list[Occurrence], bool]:
    """Run one batch through resolution, positioning and presence; returns (outcome, events,
    replayed) where replayed means the nonce was seen before and nothing was done. With
    `rate_limit`, a scanner sending more batches than that per minute is told to slow down."""
    venue = topo.venue(scanner.venue_id)
    ids = sorted({s.id for s in sightings})
    bkey = keys.batch(scanner.id, batch_id)
    pipe = r.pipeline(transaction=False)
    pipe.set(keys.nonce(scanner.id, nonce), 1, nx=True, ex=nonce_ttl)
    # Claim the batch for the time it takes to process it: a retry racing this attempt must
    # neither be processed twice nor be acknowledged before this attempt has really committed.
    pipe.get(bkey)
    pipe.set(bkey, BATCH_PENDING, nx=True, ex=PENDING_TTL_S)
    if ids:
        pipe.hmget(keys.resolver(), ids)
    if rate_limit:
        # Counted after authentication, so nobody can spend a real scanner's quota.
        window = keys.ratelimit(f"ingest:{scanner.id}:{int(time.time() // 60)}")
        pipe.incr(window)
        pipe.expire(window, 120)
    res = pipe.execute()
    if not res[0]:
        return Outcome(0), [], True
    if rate_limit and res[-2] > rate_limit:
        if res[2]:
            _release(r, bkey)
        return Outcome(0, limited=True), [], False
    if res[1] == BATCH_DONE:
        return Outcome(len(sightings), duplicate=True), [], False
    if not res[2]:
        return Outcome(0, duplicate=True, in_progress=True), [], False
    entries = dict(zip(ids, res[3], strict=True)) if ids else {}
    try:
        return _fold(r, keys, venue, scanner, bkey, batch_ttl, sightings, entries)
    except BaseException:
        _release(r, bkey)
        raise


def _release(r: redis.Redis, bkey: str) -> None:
    """Give up a claim after a failure so that the scanner's retry is processed (best effort)."""
    try:
        if r.get(bkey) == BATCH_PENDING:
            r.delete(bkey)
    except redis.RedisError:
        pass  # the claim expires by itself


def _fold(
    r: redis.Redis,
    keys: Keys,
    venue: VenueInfo | None,
    scanner: ScannerInfo,
    bkey: str,
    batch_ttl: int,
    sightings: list[Sighting],
    entries: dict[str, str | None],
) -> tuple[Outcome, list[Occurrence], bool]:
    """Resolve, position and fold one claimed batch; the last write marks the batch done."""
    by_sub: dict[int, list[Sighting]] = defaultdict(list)
    consents: dict[int, dict[str, Any]] = {}
    dropped = 0
    # One decode per identifier, not per sighting: a batch hears each emitter many times.
    decoded = {i: json.loads(raw) for i, raw in entries.items() if raw}
    for s in sightings:
        entry = decoded.get(s.id)
        consent = (
            applicable_consent(entry, venue.merchant_id, s.ts)
            if entry and venue and venue.merchant_active
            else None
        )
        if consent is None:
            dropped += 1  # nobody we may know: counted, never kept
            continue
        by_sub[entry["s"]].append(s)
        consents[entry["s"]] = consent

    subs = sorted(by_sub)
    occurrences: list[Occurrence] = []
    event_ids: list[str] = []
    wall = time.time()
    tkey = keys.tracks(venue.id) if venue else ""
    # Optimistic concurrency: another process (or the exit sweeper) may update the same states;
    # WATCH makes the write fail rather than lose its update, and we recompute. The in-process
    # lock keeps the retries for cross-process races only.
    with _venue_lock(venue.id if venue else 0):
        for _attempt in range(MAX_RETRIES):
            occurrences = []
            try:
                with r.pipeline(transaction=True) as pipe:
                    if subs:
                        pipe.watch(tkey)
                        states = pipe.hmget(tkey, [str(s) for s in subs])
                    else:
                        states = []
                    pipe.multi()
                    for sub, raw in zip(subs, states, strict=True):
                        prev = json.loads(raw) if raw else {}
                        state, events = advance(venue, scanner.name, prev, by_sub[sub])
                        if any(e.kind == "enter" for e in events):
                            state["c"] = consents[sub]
                        # An exit revokes under the consent its enter was disclosed under.
                        consent = state.get("c", consents[sub])
                        occurrences.extend(
                            Occurrence(sub, venue, consent, e, d)
                            for e, d in disclosures(state, prev.get("h", False), events, wall)
                        )
                        pipe.hset(tkey, str(sub), json.dumps(state))
                        pipe.zadd(keys.last_seen(), {f"{venue.id}:{sub}": state["p"]["last"]})
                    if dropped and venue:
                        pipe.incrby(keys.dropped(venue.id), dropped)
                    pipe.set(bkey, BATCH_DONE, ex=batch_ttl)
                    pending.queue(pipe, keys, occurrences)
                    results = pipe.execute()
                    event_ids = pending.committed_ids(results, len(occurrences))
                break
            except redis.WatchError:
                continue
        else:
            raise redis.exceptions.ConnectionError("tracking state kept changing; retry later")
    resolved = len(sightings) - dropped
    outcome = Outcome(len(sightings), resolved=resolved, dropped=dropped, event_ids=event_ids)
    return outcome, occurrences, False


def disclosures(
    state: dict[str, Any], historic: bool, events: list[presence.PresenceEvent], wall: float
) -> list[tuple[presence.PresenceEvent, bool]]:
    """Which events may reach devices: an enter already over by the time it arrives (a scanner's
    backlog after an outage) is recorded for statistics but never pushed, nor is its exit
    revoked; if such a presence is still going on live, it is disclosed now as a fresh enter.
    Sets state["h"] while the current presence is undisclosed."""
    out = []
    for e in events:
        if e.kind == "exit":
            out.append((e, not historic))
        else:
            historic = wall - e.at > STALE_S
            out.append((e, not historic))
    p = state.get("p", {})
    if historic and p.get("zone") and wall - p.get("last", 0.0) <= STALE_S:
        fresh = presence.PresenceEvent("enter", p["zone"], p["last"], p["since"])
        out.append((fresh, True))
        historic = False
    state["h"] = historic
    return out


def advance(
    venue: VenueInfo, scanner: str, state: dict[str, Any], sightings: list[Sighting]
) -> tuple[dict[str, Any], list[presence.PresenceEvent]]:
    """Fold one subscriber's sightings from one scanner into its tracking and presence state."""
    readings = sorted((s.ts, scanner, s.rssi) for s in sightings)
    pstate = state.get("p", {})
    tstate = state.get("t")
    events: list[presence.PresenceEvent] = []
    # One estimate per second of readings keeps presence timing independent of batch size.
    for second in sorted({math.floor(ts) for ts, _, _ in readings}):
        chunk = [x for x in readings if math.floor(x[0]) == second]
        now = chunk[-1][0]
        tstate, est = track(venue.model, tstate, chunk, now)
        zone = est.zone if est else None
        pstate, evs = presence.step(pstate, zone, now, venue.timings)
        events.extend(evs)
    out = dict(state)
    out["t"], out["p"] = tstate, pstate
    return out, events
