"""Sighting batches to presence events: validate, deduplicate, resolve, position, presence.

Two Redis round trips per batch whatever its size: (1) one script for the replay/duplicate checks,
the batch claim, the rate limit, the resolver lookup (by the identifiers' keyed hashes: no
identifier heard reaches Redis) and the tracking states of the subscribers heard, (2) one
transaction writing the states back (compare-and-set against what (1) read), the batch marker, the
presence events and the venue's occupant index. Positioning estimates each second once, when it is
complete (see advance), so most batches only append readings (packed, see _packed) to a subscriber's
state; a state this process wrote last comes back from (1) as its version alone (StateCache).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
import time
from base64 import b64decode, b64encode
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from struct import pack, unpack
from typing import Any, NamedTuple

import numpy as np
import orjson
import redis

from beacons.protocol import SIGHTING_MAX_AGE_S, THROUGH_MARGIN_S
from store_server import events as pending
from store_server import presence
from store_server.keys import Keys
from store_server.positioning.engine import Columns
from store_server.positioning.live import declared_start, track
from store_server.positioning.pathloss import declared_level
from store_server.push import PUSHED_AT, PUSHED_TO, RENEWED, Occurrence, pushed_to
from store_server.redis_store import run_script, script_sha
from store_server.resolver import VERSION_FIELD, applicable_consent, lookup_keys
from store_server.topology import ScannerInfo, Topology, VenueInfo

log = logging.getLogger(__name__)

# \Z, not $: $ also matches before a trailing newline, which would let "id\n" through.
HEX16 = re.compile(r"^[0-9a-f]{16}\Z")
HEX40 = re.compile(r"^[0-9a-f]{40}\Z")
BATCH_ID = re.compile(r"^[0-9A-Za-z_-]{8,64}\Z")
KINDS = {"eid": HEX16, "ibeacon": HEX40}
# Calibrated power a frame may carry (Eddystone: at 0 m; iBeacon: at 1 m), in dBm.
TX_POWER_MIN, TX_POWER_MAX = -100, 20


MAX_RETRIES = 8
# A scanner's clock within this of ours is taken as it is: the signed send time has whole
# seconds only, and NTP keeps a scanner's clock far closer.
CLOCK_TRUST_S = 2.0
STALE_S = 60.0  # older presence events come from a scanner's backlog, not from now
BATCH_PENDING, BATCH_DONE = "pending", "done"
PENDING_TTL_S = 60
# More than the tracker's staleness time (10 s by default): see _idle.
IDLE_STEPS = 60
VERSION_HEAD = '{"v":"'
VERSION_LEN = len(VERSION_HEAD) + 16 + 1  # '{"v":"' + 16 hex digits + '"', as orjson writes it
# Zones that enter faster than this cannot wait for a second to complete (see advance).
IMMEDIATE_BELOW_S = 2.0


class InFlight:
    """The identifiers of the batches this process is folding, per venue. A batch waits only
    for earlier batches of its venue that heard one of its identifiers (their states would
    collide in the compare-and-set and be folded again), not for every batch of its venue: a
    venue-wide lock queued unrelated batches behind each other's Redis round trips. First come,
    first served: a batch also waits for an earlier one that is itself still waiting, so none
    starves. Re-entrant: a call nested in the same thread or greenlet never waits for itself."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0
        # venue -> ticket -> (owner, identifiers), for running and waiting batches alike.
        self._batches: dict[int, dict[int, tuple[int, frozenset[str]]]] = defaultdict(dict)

    @contextmanager
    def hold(self, venue_id: int, ids: list[str]) -> Iterator[None]:
        """Run the block once no earlier batch of this venue shares an identifier with `ids`."""
        me, mine = threading.get_ident(), frozenset(ids)
        with self._cond:
            ticket, self._next = self._next, self._next + 1
            batches = self._batches[venue_id]
            batches[ticket] = (me, mine)
            while any(
                t < ticket and owner != me and not mine.isdisjoint(theirs)
                for t, (owner, theirs) in batches.items()
            ):
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                del batches[ticket]
                if not batches:
                    del self._batches[venue_id]
                self._cond.notify_all()

    def __len__(self) -> int:
        return sum(len(b) for b in self._batches.values())


_IN_FLIGHT = InFlight()


class StateCache:
    """The tracking states this process last wrote, decoded, so that a batch's claim sends back
    an unchanged state as its version alone (20 states of ~1.5 KB were most of what a claim
    returned, and decoding them a tenth of a batch's own work). A state another writer
    changed comes back whole; its random version guarantees the cached one is never mistaken
    for it.

    Bounded in number and in time: a copy not rewritten for `hold_s` seconds (the subscriber
    left, withdrew or was erased) is dropped, identifiers with it, so no worker keeps a
    tracking state in memory longer than that after Redis lost it."""

    def __init__(
        self, size: int = 5_000, hold_s: float = 30.0, clock: Any = time.monotonic
    ) -> None:
        self.size, self.hold_s, self._clock = size, hold_s, clock
        # Write order = age order: re-written entries move to the end.
        self._states: dict[tuple[str, str], tuple[str, dict[str, Any], float]] = {}
        self._subs: dict[tuple[str, str], tuple[str, float]] = {}  # (tkey, identifier) -> sub
        self._lock = threading.Lock()

    def held(self, tkey: str, ids: list[str]) -> list[str]:
        """(subscriber, version) pairs, flat, of the states held for these identifiers."""
        self.expire()
        out: list[str] = []
        seen: set[str] = set()
        for ident in ids:
            hit_sub = self._subs.get((tkey, ident))
            if hit_sub is not None and hit_sub[0] not in seen:
                hit = self._states.get((tkey, hit_sub[0]))
                if hit is not None:
                    seen.add(hit_sub[0])
                    out += (hit_sub[0], hit[0])
        return out

    def get(self, tkey: str, field_: str, raw: str) -> dict[str, Any]:
        """The state `raw` stands for: the held one when `raw` is its version, else decoded."""
        if len(raw) == VERSION_LEN:
            hit = self._states.get((tkey, field_))
            if hit is not None and hit[0] == raw:
                return hit[1]
        return _loads(raw)

    def put(self, tkey: str, fields: list[str], states: list[dict[str, Any]]) -> None:
        """Hold the states a batch just wrote (never mutated afterwards: advance copies what it
        changes); one lock and one trim per batch, not per state."""
        now = self._clock()
        held = self._states
        with self._lock:
            for field_, state in zip(fields, states, strict=True):
                held.pop((tkey, field_), None)
                held[(tkey, field_)] = (f'{VERSION_HEAD}{state["v"]}"', state, now)
            _trim(held, self.size, now - self.hold_s)

    def learn(self, tkey: str, resolved: dict[str, int]) -> None:
        """Remember which subscriber each identifier heard is."""
        now = self._clock()
        with self._lock:
            for ident, sub in resolved.items():
                self._subs.pop((tkey, ident), None)
                self._subs[(tkey, ident)] = (str(sub), now)
            _trim(self._subs, 4 * self.size, now - self.hold_s)

    def expire(self) -> None:
        """Drop what is older than hold_s now (put and learn also do, as they go)."""
        cutoff = self._clock() - self.hold_s
        with self._lock:
            _trim(self._states, self.size, cutoff)
            _trim(self._subs, 4 * self.size, cutoff)

    def forget(self, subscriber_id: int) -> None:
        """Drop everything held about one subscriber (their presence ended here)."""
        sub = str(subscriber_id)
        with self._lock:
            for key in [k for k in self._states if k[1] == sub]:
                del self._states[key]
            for key in [k for k, v in self._subs.items() if v[0] == sub]:
                del self._subs[key]

    def __len__(self) -> int:
        return len(self._states) + len(self._subs)

    def clear(self) -> None:
        """Forget everything (a state held may always be fetched again)."""
        with self._lock:
            self._states.clear()
            self._subs.clear()


def _trim(entries: dict[Any, tuple[Any, ...]], size: int, cutoff: float) -> None:
    """Drop the oldest entries (first in the dict) beyond `size` or written before `cutoff`."""
    while entries:
        first = next(iter(entries))
        if len(entries) <= size and entries[first][-1] >= cutoff:
            return
        del entries[first]


_STATES = StateCache()


def forget_held(subscriber_id: int) -> None:
    """Drop this process's held copies of a subscriber's tracking states (withdrawal, erasure)."""
    _STATES.forget(subscriber_id)


class BadBatch(ValueError):
    """The batch itself is invalid and will never be accepted."""


class Sighting(NamedTuple):
    """One validated programme frame heard by a scanner (a tuple: hundreds per batch).

    `tx` is the power the emitter says it transmits (the frame's calibrated power at 0 m), kept
    on the first sighting of each identifier in a batch only: it is needed once per emitter."""

    ts: float
    kind: str
    id: str
    rssi: float
    tx: float | None = None


@dataclass
class Outcome:
    """What ingest did with a batch."""

    accepted: int
    duplicate: bool = False
    in_progress: bool = False  # a duplicate whose first attempt has not committed yet
    limited: bool = False  # over the scanner's rate limit: nothing was done
    conflict: bool = False  # the batch id holds a different batch: nothing was done
    event_ids: list[str] = field(default_factory=list)  # pending presence events to deliver
    resolved: int = 0
    dropped: int = 0


def batch_digest(doc: dict[str, Any]) -> str:
    """What makes a batch this batch: its sightings, canonically serialised. A retry (a new
    sent_at, nonce and signature) has the same digest; another batch reusing its id has not."""
    canonical = orjson.dumps(doc.get("sightings"), option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=8).hexdigest()


def marker(state: str, digest: str) -> str:
    """The value of a batch's marker key: its state and its digest."""
    return f"{state}:{digest}"


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
    # Old sightings are legitimate (a scanner back from an outage) but not from the future.
    lo, hi = now - SIGHTING_MAX_AGE_S, now + max_skew
    valid_ids: set[tuple[Any, Any]] = set()  # a batch hears each emitter many times
    out: list[Sighting] = []
    new_tuple = tuple.__new__
    append = out.append
    for i, row in enumerate(rows):
        # Fast path for the common, valid row; anything else gets the full check and its reason.
        # Exact types: bool is an int subclass, and NaN fails every comparison.
        if type(row) is dict:
            ts, kind, ident, rssi = row.get("ts"), row.get("kind"), row.get("id"), row.get("rssi")
            tt, rt = type(ts), type(rssi)
            if (
                (tt is float or tt is int)
                and lo <= ts <= hi
                and (rt is float or rt is int)
                and -130 <= rssi <= 20
                and type(kind) is str
                and type(ident) is str
            ):
                key = (kind, ident)
                if key in valid_ids:
                    # tuple.__new__: a NamedTuple's own __new__ is Python code, run 200 times.
                    append(new_tuple(Sighting, (float(ts), kind, ident, float(rssi), None)))
                    continue
                if kind in KINDS and KINDS[kind].match(ident):
                    valid_ids.add(key)
                    tx = _tx_power(row.get("tx_power"))
                    append(new_tuple(Sighting, (float(ts), kind, ident, float(rssi), tx)))
                    continue
        append(_checked_row(i, row, lo, hi))
    return batch_id, out


def on_server_clock(
    rows: list[Sighting], skew_s: float, now: float | None = None, ahead_s: float = CLOCK_TRUST_S
) -> list[Sighting]:
    """Sightings restamped on the server's clock when the scanner's runs off by more than
    CLOCK_TRUST_S (skew_s: the scanner's signed send time minus ours at `now`, by default the
    time of the call), less those stamped after their batch was sent.

    Presence ends on the server's clock (the sweeper): stamped by a scanner 10 s slow, a
    visitor would be forgotten before ever entering, and by one minutes fast, kept present
    minutes after leaving. A backlog keeps its own times: it is sent late, not stamped wrong.

    No sighting is captured after its batch is sent: one stamped later (the scanner's clock
    stepped back in between) would move the tracker's second or a presence's last reading
    minutes ahead, so that later readings were never estimated or a visitor outstayed her
    visit. It is dropped; the answer's `accepted` leaves it out. `ahead_s`: how far after the
    send time a row may be stamped (INGEST_ROW_AHEAD_S; the signed send time has whole seconds
    only, see CLOCK_TRUST_S)."""
    latest = (time.time() if now is None else now) + skew_s + ahead_s
    # One pass when every row is on time, as nearly all are; a second only when one is not.
    if rows and max([s[0] for s in rows]) > latest:
        kept = [s for s in rows if s[0] <= latest]
        log.warning(
            "dropped sightings stamped after their batch was sent: check the scanner's clock",
            extra={"count": len(rows) - len(kept), "skew_s": round(skew_s, 1)},
        )
        rows = kept
    if abs(skew_s) <= CLOCK_TRUST_S:
        return rows
    return [s._replace(ts=on_server_time(s.ts, skew_s)) for s in rows]


def batch_through(sightings: list[Sighting], now: float) -> str:
    """What a batch tells of its scanner's `through` (scanner_health.THROUGH), as Redis text,
    or "" for an empty batch: a daemon sends its batches oldest first, one at a time, so with
    this one everything it heard before its first frame (less THROUGH_MARGIN_S) is delivered.
    Its first frame, not its last: a clock stepped back (by less than CLOCK_TRUST_S, so not
    restamped) or a capture replayed out of order stamps the next batch's frames earlier than
    this one's last. A busy scanner's batches thus keep its word current (a batch's span old)
    without a heartbeat a second."""
    if not sightings:
        return ""
    return repr(min(min([s[0] for s in sightings]) - THROUGH_MARGIN_S, now))


def on_server_time(ts: float, skew_s: float) -> float:
    """One time of a scanner's on the server's clock, as `on_server_clock` restamps sightings:
    as it is while the scanner's clock is within CLOCK_TRUST_S of ours."""
    return ts if abs(skew_s) <= CLOCK_TRUST_S else ts - skew_s


def _checked_row(i: int, row: Any, lo: float, hi: float) -> Sighting:
    """One row through every check, raising BadBatch with the first reason it fails."""
    if not isinstance(row, dict):
        raise BadBatch(f"sightings[{i}] must be an object")
    ts, kind, ident, rssi = row.get("ts"), row.get("kind"), row.get("id"), row.get("rssi")
    # An int is always finite (and math.isfinite overflows on one too big for a float).
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise BadBatch(f"sightings[{i}].ts must be a number")
    if isinstance(ts, float) and not math.isfinite(ts):
        raise BadBatch(f"sightings[{i}].ts must be a number")
    if not lo <= ts <= hi:
        raise BadBatch(f"sightings[{i}].ts is outside the accepted range")
    if not isinstance(kind, str) or kind not in KINDS:
        raise BadBatch(f"sightings[{i}].kind must be one of {sorted(KINDS)}")
    if not isinstance(ident, str) or not KINDS[kind].match(ident):
        raise BadBatch(f"sightings[{i}].id is not a valid {kind} identifier")
    if isinstance(rssi, bool) or not isinstance(rssi, int | float) or not -130 <= rssi <= 20:
        raise BadBatch(f"sightings[{i}].rssi must be a number between -130 and 20")
    return Sighting(float(ts), kind, ident, float(rssi), _tx_power(row.get("tx_power")))


def _tx_power(value: Any) -> float | None:
    """A frame's calibrated power if it is a plausible one, else None: an optional calibration
    hint, so a bad one is ignored rather than costing the batch its sightings."""
    kind = type(value)
    if (kind is int or kind is float) and TX_POWER_MIN <= value <= TX_POWER_MAX:
        return float(value)
    return None


# Round trip 1, atomically: replay refusal, the batch claim, the rate limit, the resolver lookup
# and the tracking states of the subscribers the identifiers resolve to. Reading the states here
# rather than after resolution saves a round trip; a subscriber whose consent turns out not to
# cover this venue only costs an unused read.
_CLAIM_LUA = """
if not redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) then return {0} end
local status = redis.call('GET', KEYS[2])
local claimed = redis.call('SET', KEYS[2], ARGV[4], 'NX', 'EX', ARGV[2])
local limit = tonumber(ARGV[3])
if limit > 0 then
  local n = redis.call('INCR', KEYS[5])
  redis.call('EXPIRE', KEYS[5], 120)
  if n > limit then
    if claimed then redis.call('DEL', KEYS[2]) end
    return {3}
  end
end
if status == ARGV[5] then return {1} end
-- The id is taken by other sightings (the markers carry each batch's digest).
if status and status ~= ARGV[4] then return {5} end
if not claimed then return {2} end
-- The states this process holds already (subscriber, version pairs): sent back as their
-- version alone when unchanged, not as a whole state.
local held, cached = tonumber(ARGV[6]), {}
for i = 0, held - 1 do cached[ARGV[7 + 2 * i]] = ARGV[8 + 2 * i] end
local first = 7 + 2 * held
local version = redis.call('HGET', KEYS[3], 'version') or ''
if #ARGV < first then return {4, {}, {}, {}, version} end
local entries = redis.call('HMGET', KEYS[3], unpack(ARGV, first))
local subs, seen = {}, {}
for i = 1, #entries do
  local e = entries[i]
  if e then
    -- The subscriber id leads every entry (resolver.py writes {"s": ...} first): matched, not
    -- decoded, which was most of this script's time.
    local s = string.match(e, '^{"s": ?(%d+)')
    if not s then
      local d = cjson.decode(e)['s']
      s = d and string.format('%d', d)
    end
    if s and not seen[s] then
      seen[s] = true
      subs[#subs + 1] = s
    end
  end
end
local states = {}
if #subs > 0 then
  states = redis.call('HMGET', KEYS[4], unpack(subs))
  for i = 1, #subs do
    local v, st = cached[subs[i]], states[i]
    if v and st and string.sub(st, 1, #v) == v then states[i] = v end
  end
end
return {4, entries, subs, states, version}
"""
REPLAYED, DUPLICATE, IN_PROGRESS, LIMITED, CLAIMED, CONFLICT = 0, 1, 2, 3, 4, 5

# Round trip 2, in one transaction: compare-and-set of the states read in round trip 1 (a state
# another process or the exit sweeper changed meanwhile fails the whole write, and the batch is
# folded again from fresh states), the last-seen index, the dropped counter, the batch marker and
# the pending presence events (as events.queue writes them), and each subscriber's entry in the
# venue's occupant index (keys.occupants: their zone, or none). Each write starts the state with a
# fresh random version ("v"), so the comparison sends that prefix, not the whole state back;
# whoever else changes a state deletes it or writes it under a new version (the sweeper, for a
# dark zone), so a new version means a new write. The states were resolved against one version
# of the resolver table; if it changed meanwhile (a consent ended, and its presence was ended),
# nothing is written and the batch resolves again.
_WRITE_LUA = """
local n = tonumber(ARGV[1])
local W = 6
local j = 2 + n * W
-- Resolved against another resolver table (a consent ended meanwhile): resolve again.
if n > 0 and (redis.call('HGET', KEYS[7], 'version') or '') ~= ARGV[j + 3] then return {2} end
for i = 0, n - 1 do
  local b = 2 + i * W
  local expected = ARGV[b + 1]
  local current = redis.call('HGET', KEYS[1], ARGV[b]) or ''
  if #expected == 23 and string.sub(expected, 1, 6) == '{"v":"' then
    current = string.sub(current, 1, 23)
  end
  if current ~= expected then return {0} end
end
-- In chunks: Lua's unpack is limited to a few thousand values.
local function chunked(cmd, key, values)
  for c = 1, #values, 4000 do
    redis.call(cmd, key, unpack(values, c, math.min(c + 3999, #values)))
  end
end
if n > 0 then
  -- One HSET and one ZADD for all subscribers: a call from Lua costs more than its argument.
  local fields, scores, placed, gone = {}, {}, {}, {}
  for i = 0, n - 1 do
    local b = 2 + i * W
    fields[#fields + 1] = ARGV[b]
    fields[#fields + 1] = ARGV[b + 2]
    scores[#scores + 1] = ARGV[b + 4]
    scores[#scores + 1] = ARGV[b + 3]
    if ARGV[b + 5] == '' then
      gone[#gone + 1] = ARGV[b]
    else
      placed[#placed + 1] = ARGV[b]
      placed[#placed + 1] = ARGV[b + 5]
    end
  end
  chunked('HSET', KEYS[1], fields)
  chunked('ZADD', KEYS[2], scores)
  chunked('HSET', KEYS[6], placed)
  chunked('HDEL', KEYS[6], gone)
end
if tonumber(ARGV[j]) > 0 then redis.call('INCRBY', KEYS[4], ARGV[j]) end
redis.call('SET', KEYS[3], ARGV[j + 2], 'EX', ARGV[j + 1])
-- What the batch says the scanner has delivered (see heard_through): only for a scanner whose
-- heartbeats say it too, and never backwards.
local th = tonumber(ARGV[j + 4])
if th and redis.call('HEXISTS', KEYS[8], 'through') == 1 then
  local cur = tonumber(redis.call('HGET', KEYS[8], 'through'))
  if not cur or th > cur then redis.call('HSET', KEYS[8], 'through', ARGV[j + 4]) end
end
local ids = {}
for k = j + 5, #ARGV do ids[#ids + 1] = redis.call('XADD', KEYS[5], '*', 'o', ARGV[k]) end
return {1, ids}
"""


CLAIM_SHA = script_sha(_CLAIM_LUA)
WRITE_SHA = script_sha(_WRITE_LUA)


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
    digest: str,
    resolver_secret: bytes,
    rate_limit: int = 0,
    renew_after_s: float | None = None,
) -> tuple[Outcome, list[Occurrence], bool]:
    """Run one batch through resolution, positioning and presence; returns (outcome, events,
    replayed) where replayed means the nonce was seen before and nothing was done. `digest` is
    batch_digest of the batch, told apart from another batch under the same id;
    `resolver_secret` is resolver.lookup_secret of the deployment's DATA_KEY. With
    `rate_limit`, a scanner sending more batches than that per minute is told to slow down.
    With `renew_after_s`, a presence whose push is older than that is pushed again (half the
    push's lifetime on the device: see _occurrences)."""
    venue = topo.venue(scanner.venue_id)
    ids = sorted({s.id for s in sightings})
    # Redis is asked for their keyed hashes only (resolver.lookup_key): it may keep a command's
    # arguments (SLOWLOG, MONITOR), and most of these are people who never consented. One HMAC
    # per distinct identifier, mapped back here.
    lookups = dict(zip(ids, lookup_keys(resolver_secret, ids), strict=True))
    bkey = keys.batch(scanner.id, batch_id)
    tkey = keys.tracks(venue.id if venue else 0)
    # Counted after authentication, so nobody can spend a real scanner's quota.
    window = keys.scanner_minute("ingest", scanner.id, time.time())
    # Batches of one venue that heard the same identifiers fold into their states in turn in
    # this process, from their claim on: the compare-and-set then only fails on another
    # process's (or the sweeper's) write.
    with _IN_FLIGHT.hold(venue.id if venue else 0, ids):
        # Read once the batches it waited for have written (and held) theirs.
        held = _STATES.held(tkey, ids)
        # Claim the batch for the time it takes to process it: a retry racing this attempt must
        # neither be processed twice nor be acknowledged before this attempt really committed.
        res = run_script(
            r,
            _CLAIM_LUA,
            5,
            keys.nonce(scanner.id, nonce),
            bkey,
            keys.resolver(),
            tkey,
            window,
            nonce_ttl,
            PENDING_TTL_S,
            rate_limit,
            marker(BATCH_PENDING, digest),
            marker(BATCH_DONE, digest),
            len(held) // 2,
            *held,
            *lookups.values(),
        )
        code = int(res[0])
        if code == REPLAYED:
            return Outcome(0), [], True
        if code == LIMITED:
            return Outcome(0, limited=True), [], False
        if code == DUPLICATE:
            return Outcome(len(sightings), duplicate=True), [], False
        if code == IN_PROGRESS:
            return Outcome(0, duplicate=True, in_progress=True), [], False
        if code == CONFLICT:
            return Outcome(0, conflict=True), [], False
        resolution = (dict(zip(ids, res[1], strict=True)), res[4])
        states = dict(zip(res[2], res[3], strict=True))
        try:
            done = (bkey, marker(BATCH_DONE, digest), batch_ttl)
            dark = topo.dark.get(r, keys, venue.id) if venue else presence.NO_ZONES
            return _fold(
                r,
                keys,
                venue,
                scanner,
                done,
                sightings,
                resolution,
                states,
                dark,
                lookups,
                renew_after_s,
            )
        except BaseException:
            _release(r, bkey, marker(BATCH_PENDING, digest))
            raise


def _release(r: redis.Redis, bkey: str, claim: str) -> None:
    """Give up a claim after a failure so that the scanner's retry is processed (best effort)."""
    try:
        if r.get(bkey) == claim:
            r.delete(bkey)
    except redis.RedisError:
        pass  # the claim expires by itself


def _resolve(
    venue: VenueInfo | None, sightings: list[Sighting], entries: dict[str, str | None]
) -> tuple[dict[int, list[Sighting]], dict[int, dict[str, Any]], int, dict[str, int]]:
    """Sightings per consented subscriber, the consent of each, how many were dropped, and the
    subscriber each identifier heard resolved to."""
    if venue is None or not venue.merchant_active:
        return {}, {}, len(sightings), {}
    by_id: dict[str, list[Sighting]] = defaultdict(list)
    for s in sightings:
        by_id[s.id].append(s)
    by_sub: dict[int, list[Sighting]] = defaultdict(list)
    consents: dict[int, dict[str, Any]] = {}
    resolved: dict[str, int] = {}
    dropped = 0
    merchant = venue.merchant_id
    for ident, rows in by_id.items():
        raw = entries.get(ident)
        if not raw:
            dropped += len(rows)  # nobody we may know: counted, never kept
            continue
        # One decode and, unless a consent starts or ends within the batch, one consent
        # decision per identifier: a batch hears each emitter many times.
        entry = _loads(raw)
        sub = resolved[ident] = entry["s"]
        times = [r[0] for r in rows]
        lo, hi = min(times), max(times)
        edges = [c["until"] for c in entry["c"] if c["until"] is not None]
        edges += [(c["from"] or 0) - 1 for c in entry["c"]]
        if any(lo <= e <= hi for e in edges):
            for row in rows:
                consent = applicable_consent(entry, merchant, row.ts)
                if consent is None:
                    dropped += 1
                else:
                    by_sub[sub].append(row)
                    consents[sub] = consent
            continue
        consent = applicable_consent(entry, merchant, hi)
        if consent is None:
            dropped += len(rows)
        else:
            by_sub[sub].extend(rows)
            consents[sub] = consent
    return by_sub, consents, dropped, resolved


def _fold(
    r: redis.Redis,
    keys: Keys,
    venue: VenueInfo | None,
    scanner: ScannerInfo,
    done: tuple[str, str, int],
    sightings: list[Sighting],
    resolution: tuple[dict[str, str | None], str],
    states: dict[str, str | None],
    dark: frozenset[str],
    lookups: dict[str, str],
    renew_after_s: float | None = None,
) -> tuple[Outcome, list[Occurrence], bool]:
    """Resolve, position and fold one claimed batch; the last write marks the batch done
    (`done`: the marker's key, its value and its time to live; `resolution`: the resolver entries
    of the batch's identifiers and the version of the table they come from; `dark`: the
    venue's zones whose scanners are all silent; `lookups`: each identifier's field in the
    resolver table; `renew_after_s`: see process)."""
    bkey, done_marker, batch_ttl = done
    entries, table_version = resolution
    through = batch_through(sightings, time.time())
    tkey = keys.tracks(venue.id if venue else 0)
    dkey = keys.dropped(venue.id if venue else 0)
    occurrences: list[Occurrence] = []
    event_ids: list[str] = []
    immediate = venue is not None and reacts_within_batch(venue)
    for _attempt in range(MAX_RETRIES):
        by_sub, consents, dropped, subscriber_of = _resolve(venue, sightings, entries)
        subs = sorted(by_sub)
        fields = [str(s) for s in subs]
        unread = [f for f in fields if f not in states]
        if unread:
            states.update(zip(unread, r.hmget(tkey, unread), strict=True))
        if venue is None:
            dropped = 0  # nowhere to count them: the venue is gone
        occurrences = []
        args: list[Any] = [len(subs)]
        wall = time.time()
        # Versions need only differ from every earlier one of the same state: one random base
        # per attempt, one step per subscriber (a random draw each was 1 % of a batch's time).
        base = int.from_bytes(os.urandom(8), "big")
        written_states = []
        for i, (sub, field_) in enumerate(zip(subs, fields, strict=True)):
            assert venue is not None  # subscribers resolve only at a live venue
            raw = states.get(field_)
            prev = _STATES.get(tkey, field_, raw) if raw else {}
            state, events = advance(venue, scanner.name, prev, by_sub[sub], immediate, dark)
            # An exit revokes under the consent its enter was disclosed under.
            held = state.get("c") or consents[sub]
            if any(e.kind == "enter" for e in events):
                state["c"] = consents[sub]
            else:
                events += rescope(state, consents[sub], wall)
            occurrences.extend(
                _occurrences(venue, sub, state, held, events, prev, wall, renew_after_s)
            )
            last = state["p"]["last"]
            version = f"{(base + i) & 0xFFFFFFFFFFFFFFFF:016x}"
            state = {"v": version, **{k: v for k, v in state.items() if k != "v"}}
            written_states.append(state)
            zone = state["p"].get("zone") or ""
            args += (field_, _version(raw), _dumps(state), f"{venue.id}:{sub}", repr(last), zone)
        args += (dropped, batch_ttl, done_marker, table_version, through)
        args += [pending.encode(o) for o in occurrences]
        written = run_script(
            r,
            _WRITE_LUA,
            8,
            tkey,
            keys.last_seen(),
            bkey,
            dkey,
            keys.pending_events(),
            keys.occupants(venue.id if venue else 0),
            keys.resolver(),
            keys.scanner_health(scanner.id),
            *args,
        )
        code = int(written[0])
        if code == 1:
            event_ids = written[1]
            _STATES.put(tkey, fields, written_states)
            _STATES.learn(tkey, subscriber_of)
            break
        if code == 2:
            # The resolver table changed since the claim (a consent may have ended, and its
            # presence been ended): resolve again, and read the states of whoever resolves.
            ids = sorted(entries)
            pipe = r.pipeline(transaction=False)
            pipe.hmget(keys.resolver(), [lookups[i] for i in ids])
            pipe.hget(keys.resolver(), VERSION_FIELD)
            got, version = pipe.execute()
            entries, table_version = dict(zip(ids, got, strict=True)), version or ""
            states = {}
            continue
        # Another writer changed one of these states since they were read: fold again.
        states = dict(zip(fields, r.hmget(tkey, fields) if fields else [], strict=True))
    else:
        raise redis.exceptions.ConnectionError("tracking state kept changing; retry later")
    resolved = len(sightings) - dropped if venue else 0
    outcome = Outcome(
        len(sightings), resolved=resolved, dropped=len(sightings) - resolved, event_ids=event_ids
    )
    return outcome, occurrences, False


def _occurrences(
    venue: VenueInfo,
    sub: int,
    state: dict[str, Any],
    held: dict[str, Any],
    events: list[presence.PresenceEvent],
    prev: dict[str, Any],
    wall: float,
    renew_after_s: float | None = None,
) -> list[Occurrence]:
    """One subscriber's events as occurrences (see disclosures): an exit under the consent
    `held` its enter was disclosed under, and to the devices its zone had at that enter as well
    (PUSHED_TO, which the state keeps while the presence lasts: a zone redrawn meanwhile no
    longer lists them). A disclosed presence whose push is `renew_after_s` old (PUSHED_AT) is
    pushed again, stamped now: devices forget a push at its `expires_at`."""
    out = []
    shown = pushed_to(state)
    pushed_at = state.get(PUSHED_AT)
    for e, d in disclosures(state, prev.get("h", False), events, wall):
        if e.kind == "exit":
            out.append(Occurrence(sub, venue, held, e, d, shown))
        else:
            out.append(Occurrence(sub, venue, state["c"], e, d))
            shown = tuple(venue.devices_by_zone.get(e.zone, ()))
            pushed_at = wall if d else pushed_at
    p = state["p"]
    if shown and p.get("zone"):
        state[PUSHED_TO] = list(shown)
    else:
        state.pop(PUSHED_TO, None)
    if p.get("zone") and not state.get("h") and state.get("c"):
        if pushed_at is None:
            pushed_at = wall  # a presence from before renewals: its push's lifetime runs from now
        elif renew_after_s is not None and wall - pushed_at >= renew_after_s:
            renewal = presence.PresenceEvent("enter", p["zone"], wall, p["since"], RENEWED)
            out.append(Occurrence(sub, venue, state["c"], renewal, True))
            pushed_at = wall
        state[PUSHED_AT] = round(pushed_at, 1)
    else:
        state.pop(PUSHED_AT, None)
    return out


def rescope(
    state: dict[str, Any], consent: dict[str, Any], now: float
) -> list[presence.PresenceEvent]:
    """When the consent that covers a present subscriber is no longer the one her presence was
    disclosed under (it expired, or one given for this merchant now takes precedence over one
    for all), end that presence and begin another in the same zone at once, under the new one:
    the devices get a revoke and the push the new scope allows. Updates the state; `now` is
    the wall clock, by which an expired consent has run out."""
    held, p = state.get("c"), state.get("p", {})
    state["c"] = consent
    if not held or held.get("receipt") == consent.get("receipt") or not p.get("zone"):
        return []
    at = p["last"]
    # A consent that ran out ends the presence the way an expiry does (no visit is recorded).
    until = held.get("until")
    reason = "expired" if until is not None and until <= max(at, now) else "consent_changed"
    zone, since = p["zone"], p["since"]
    p["since"] = at
    return [
        presence.PresenceEvent("exit", zone, at, since, reason),
        presence.PresenceEvent("enter", zone, at, at),
    ]


def disclosures(
    state: dict[str, Any], historic: bool, events: list[presence.PresenceEvent], wall: float
) -> list[tuple[presence.PresenceEvent, bool]]:
    """Which events may reach devices: an enter already over by the time it arrives (a scanner's
    backlog after an outage) is recorded for statistics but never pushed, nor is its exit
    revoked; if such a presence is still going on live, it is disclosed now as a fresh enter.
    Sets state["h"] while the current presence is undisclosed. A presence whose consent has
    run out by the time it arrives (a late batch resolved against a table not yet rebuilt) is
    never disclosed either: nothing reaches a device after the consent's end."""
    out = []
    until = (state.get("c") or {}).get("until")
    lapsed = until is not None and until <= wall
    for e in events:
        if e.kind == "exit":
            out.append((e, not historic))
        else:
            historic = wall - e.at > STALE_S or lapsed
            out.append((e, not historic))
    p = state.get("p", {})
    if historic and not lapsed and p.get("zone") and wall - p.get("last", 0.0) <= STALE_S:
        fresh = presence.PresenceEvent("enter", p["zone"], p["last"], p["since"])
        out.append((fresh, True))
        historic = False
    state["h"] = historic
    return out


def advance(
    venue: VenueInfo,
    scanner: str,
    state: dict[str, Any],
    sightings: list[Sighting],
    immediate: bool | None = None,
    dark: frozenset[str] = presence.NO_ZONES,
) -> tuple[dict[str, Any], list[presence.PresenceEvent]]:
    """Fold one subscriber's sightings from one scanner into its tracking and presence state.

    Positioning runs once per second of readings, exactly as `positioning predict` replays a
    recording: second k holds the readings with k-1 < ts <= k and is estimated at `now = k`.
    Readings are kept in the state ("b") until second k is complete, which is when a reading
    of a later second arrives from any scanner, so the estimate of a second uses every scanner's
    readings of it, not only the first batch's; most batches just append to that buffer. A
    reading of a second already estimated (a slow scanner) joins the next one. Presence steps
    once per second with readings, at that second. Waiting for a second to complete delays
    presence by up to a batch interval, so a venue with a zone that enters in under
    IMMEDIATE_BELOW_S seconds folds each batch at once instead (see _advance_now); `immediate`
    is that test, when the caller made it already (once per batch, not per subscriber). `dark`:
    the venue's zones whose scanners are all silent (presence.darken)."""
    if not sightings:
        return dict(state), []
    if immediate is None:
        immediate = reacts_within_batch(venue)
    if immediate:
        return _advance_now(venue, scanner, state, sightings, dark)
    out = dict(state)
    out.pop("bk", None)  # written by an earlier version
    ceil = math.ceil
    last = out.get("k")
    due = ceil(max([s.ts for s in sightings])) - 1  # the last complete second
    if last is not None and due <= last:
        # Nothing newly complete: append, parse nothing, estimate nothing.
        names: list[str] = list(out.get("bs", ()))
        if scanner not in names:
            names.append(scanner)
        seg = _segment(names.index(scanner), sightings)
        out["b"] = f"{out['b']};{seg}" if out.get("b") else seg
        out["bs"] = names
        return out, []
    # As columns (engine.Columns), in the order a list of the buffer's readings then the new
    # ones would hold them: a second of one emitter is ~125 readings in bench/ingest.py, and a
    # tuple per reading cost ~75 us of a ~410 us second here and in the filter fold.
    names = list(out.get("bs", ()))
    ts, rssi, which = _columns(out.get("b", ""))
    if scanner not in names:
        names.append(scanner)
    ts = np.concatenate((ts, [s.ts for s in sightings]))
    rssi = np.concatenate((rssi, [s.rssi for s in sightings]))
    which = np.concatenate((which, np.full(len(sightings), names.index(scanner))))
    # Each reading's second, once (ceil is monotonic: the last second is the max of them).
    secs = np.ceil(ts).astype(np.int64)
    due = int(secs.max()) - 1
    done = secs <= due
    keep = ~done
    out["b"], out["bs"] = _encode_columns(ts[keep], rssi[keep], which[keep], names)
    pstate = out.get("p") or {}
    events: list[presence.PresenceEvent] = []
    if done.any():
        # A reading of a second already estimated joins the next one.
        late = secs[done] if last is None else np.maximum(secs[done], last + 1)
        ts, rssi, which = ts[done], rssi[done], which[done]
        model, timings = venue.model, venue.timings
        tstate = _start_state(venue, out.get("t"), sightings)
        seconds = np.unique(late).tolist()
        prev = seconds[0] - 1 if last is None else last
        for k in seconds:
            sel = late == k
            tstate = _idle(model, tstate, prev + 1, k)
            chunk = Columns(ts[sel], rssi[sel], which[sel], names)
            tstate, est = track(model, tstate, chunk, float(k))
            zone = est.zone if est else None
            pstate, evs = presence.step(pstate, zone, float(k), timings, dark)
            events.extend(evs)
            prev = k
        out["t"] = _idle(model, tstate, prev + 1, due + 1)
        out["k"] = max(due, prev)
    elif "last" not in pstate:
        # Heard, nothing estimated yet: the sweeper forgets this state if nothing follows.
        pstate = {**pstate, "last": float(due)}
    out["p"] = pstate
    return out, events


def reacts_within_batch(venue: VenueInfo) -> bool:
    """Whether a zone of the venue enters faster than a second could complete (see advance)."""
    return min((t.enter_stable_s for t in venue.timings.values()), default=0.0) < IMMEDIATE_BELOW_S


def _advance_now(
    venue: VenueInfo,
    scanner: str,
    state: dict[str, Any],
    sightings: list[Sighting],
    dark: frozenset[str] = presence.NO_ZONES,
) -> tuple[dict[str, Any], list[presence.PresenceEvent]]:
    """advance() for venues that must react within the batch: one estimate per second of
    readings in this batch, at its newest reading (the tracker itself updates its position at
    most once per second, so batch size still does not change the estimates' rate)."""
    out = dict(state)
    readings = _buffered(out.pop("b", ""), list(out.pop("bs", ())))  # the venue's zones changed
    for key in ("bk", "k"):
        out.pop(key, None)
    readings = sorted(readings + [(s.ts, scanner, s.rssi) for s in sightings])
    pstate = out.get("p", {})
    tstate = _start_state(venue, out.get("t"), sightings)
    events: list[presence.PresenceEvent] = []
    by_sec: dict[int, list[tuple[float, str, float]]] = defaultdict(list)
    for x in readings:
        by_sec[math.floor(x[0])].append(x)
    for second in sorted(by_sec):
        chunk = by_sec[second]
        now = chunk[-1][0]
        tstate, est = track(venue.model, tstate, chunk, now)
        pstate, evs = presence.step(pstate, est.zone if est else None, now, venue.timings, dark)
        events.extend(evs)
    out["t"], out["p"] = tstate, pstate
    return out, events


def _version(raw: str | None) -> str:
    """What the write compares a state against: its version prefix, else all of it ('' if none)."""
    if raw and raw.startswith(VERSION_HEAD):
        return raw[:VERSION_LEN]
    return raw or ""


def _start_state(
    venue: VenueInfo, tstate: dict[str, Any] | None, sightings: list[Sighting]
) -> dict[str, Any]:
    """The tracking state to go on from: a new track starts from the venue's published drift
    per scanner; until the tracker holds a level for the emitter, the power its frames declare
    (a wearable transmits ~10 dB below a phone) is where that starts."""
    if tstate is None or tstate.get("mv") != venue.model_version:
        # A new track, or one whose offsets were learnt against a radio map the venue no
        # longer has (a new survey, a moved scanner): its offsets start from the venue's
        # drift, as published for this map.
        tstate = {k: v for k, v in (tstate or {}).items() if k != "o"}
        tstate["mv"] = venue.model_version
        if venue.drift_seed:
            tstate["o"] = {name: list(seed) for name, seed in venue.drift_seed.items()}
    if "k" in tstate:
        return tstate
    for s in sightings:
        if s.tx is not None:
            return {**tstate, **declared_start(venue.model, declared_level(s.kind, s.tx))}
    return tstate


def _idle(
    model: Any, tstate: dict[str, Any] | None, first: int, stop: int
) -> dict[str, Any] | None:
    """Track the seconds first..stop-1 in which nothing was heard, as predict does. After
    IDLE_STEPS silent seconds the tracker has long gone stale and idempotent, so a long gap
    costs no more than that."""
    for k in range(first, min(stop, first + IDLE_STEPS)):
        tstate, _ = track(model, tstate, [], float(k))
    return tstate


def _segment(index: int, sightings: list[Sighting]) -> str:
    """One scanner's readings as a buffer segment (see _packed): exact, and packed in C
    (formatting two floats per reading as text, then parsing them back, was a tenth of the
    ingest core's CPU)."""
    return _packed(index, [s[0] for s in sightings], [s[3] for s in sightings])


def _packed(index: int, ts: list[float], rssi: list[float]) -> str:
    """`index:` + base64 of the times as little-endian doubles then the RSSI as signed bytes
    when every RSSI is a whole number of dBm (as radios report it: 9 bytes a reading instead
    of 16, and the buffer is most of a tracking state), else `index|` + base64 of doubles
    ts, rssi, ts, rssi..."""
    try:
        # A whole dBm within a signed byte is a key of _BYTE_OF; anything else (a fraction,
        # -130, NaN) is not, and keeps doubles. One lookup a reading, not a test and a cast.
        levels = bytes(map(_BYTE_OF.__getitem__, rssi))
    except KeyError:
        pass
    else:
        return f"{index}:" + b64encode(pack(f"<{len(ts)}d", *ts) + levels).decode()
    vals = [v for pair in zip(ts, rssi, strict=True) for v in pair]
    return f"{index}|" + b64encode(pack(f"<{len(vals)}d", *vals)).decode()


# Whole dBm (float or int keys alike: they hash equal) -> its signed byte, as struct's "b" packs.
_BYTE_OF = {float(v): v & 0xFF for v in range(-128, 128)}


def _buffered(buf: str, names: list[str]) -> list[tuple[float, str, float]]:
    """The (ts, scanner, rssi) readings of a buffer, in buffer order (see _columns)."""
    ts, rssi, which = _columns(buf)
    return list(zip(ts.tolist(), [names[i] for i in which.tolist()], rssi.tolist(), strict=True))


def _columns(buf: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The readings of a buffer written by _segment as columns: times, RSSI and each reading's
    scanner (its index into the state's names). Packed segments are sliced as bytes and decoded
    once, not a tuple per reading; a buffer holding an older segment format is read by
    _columns_of_any."""
    times: list[bytes] = []
    levels: list[bytes] = []
    counts: list[int] = []
    which: list[int] = []
    for seg in buf.split(";") if buf else ():
        index, sep, data = seg.partition(":")
        if not sep:
            return _columns_of_any(buf)
        raw = b64decode(data)
        n = len(raw) // 9
        times.append(raw[: 8 * n])
        levels.append(raw[8 * n : 9 * n])
        counts.append(n)
        which.append(int(index))
    return (
        np.frombuffer(b"".join(times), dtype="<f8").astype(np.float64),
        np.frombuffer(b"".join(levels), dtype=np.int8).astype(np.float64),
        np.repeat(np.array(which, dtype=np.int64), counts),
    )


def _columns_of_any(buf: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """_columns for every segment format: packed (`index:`), and those of states written
    before it, text `index|ts,rssi,ts,rssi...` and base64 doubles `index|...` (rare: only a
    state written across an upgrade holds them, so they are read value by value)."""
    ts: list[float] = []
    rssi: list[float] = []
    which: list[int] = []
    for seg in buf.split(";"):
        # Neither separator is in base64 or in a number: the first one found is the segment's.
        index, sep, data = seg.partition("|")
        if not sep:
            index, sep, data = seg.partition(":")
        if not data:
            continue
        if sep == ":":
            raw = b64decode(data)
            n = len(raw) // 9
            times: Any = unpack(f"<{n}d", raw[: 8 * n])
            levels: Any = unpack(f"<{n}b", raw[8 * n : 9 * n])
        else:
            if "," in data:  # never in base64, always in a text segment
                vals: Any = list(map(float, data.split(",")))
            else:
                raw = b64decode(data)
                vals = unpack(f"<{len(raw) // 8}d", raw)
            times, levels = vals[0::2], vals[1::2]
        ts += times
        rssi += levels
        which += [int(index)] * len(times)
    return (
        np.array(ts, dtype=np.float64),
        np.array(rssi, dtype=np.float64),
        np.array(which, dtype=np.int64),
    )


def _encode_columns(
    ts: np.ndarray, rssi: np.ndarray, which: np.ndarray, names: list[str]
) -> tuple[str, list[str]]:
    """A buffer and its scanner names for readings as columns: a _packed segment per scanner,
    numbered in first-heard order (as _segment numbers them)."""
    order = list(dict.fromkeys(which.tolist()))
    segments = []
    for i, j in enumerate(order):
        sel = which == j
        segments.append(_packed(i, ts[sel].tolist(), rssi[sel].tolist()))
    return ";".join(segments), [names[j] for j in order]


def _loads(raw: str | bytes) -> Any:
    """Decode stored JSON (orjson: several times faster than json on the hot path)."""
    return orjson.loads(raw)


def restamp(state: dict[str, Any]) -> bytes:
    """A state changed outside ingest (the sweeper), encoded under a new version: ingest's
    compare-and-set then folds into it instead of writing over the change."""
    version = f"{int.from_bytes(os.urandom(8), 'big'):016x}"
    return _dumps({"v": version, **{k: v for k, v in state.items() if k != "v"}})


def _dumps(doc: Any) -> bytes:
    """Encode a state as compact JSON that json.loads reads too (numpy scalars as numbers)."""
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY, default=_json_default)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
