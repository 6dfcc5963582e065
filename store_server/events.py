"""Presence events are queued in Redis in the same transaction as the state that caused them, and
removed only once delivered (outboxes, emit, audit, visits). If delivery fails — the database is
down, the process dies — the events are delivered later, so no enter or revoke is ever lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

import redis
from flask import Flask

from store_server.keys import Keys
from store_server.presence import PresenceEvent
from store_server.push import Occurrence, deliver
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology

log = logging.getLogger(__name__)
RETRY_AFTER_S = 10.0  # an inline delivery still running is never raced by the retry job
# How long a claim on a pending event holds: far above any delivery's time, so only one that
# died is taken over, and then only by a retry after this.
CLAIM_S = 60.0


def encode(o: Occurrence) -> str:
    """Compact JSON of an occurrence (the venue by id; its topology is reloaded on delivery)."""
    e = o.event
    return json.dumps(
        {
            "s": o.subscriber_id,
            "v": o.venue.id,
            "c": o.consent,
            "e": [e.kind, e.zone, e.at, e.since, e.reason],
            "d": o.disclose,
        }
    )


def queue(pipe: redis.client.Pipeline, keys: Keys, occurrences: list[Occurrence]) -> None:
    """Add the events to a (transaction) pipeline that also commits their cause."""
    for o in occurrences:
        pipe.xadd(keys.pending_events(), {"o": encode(o)})


def committed_ids(results: list[Any], count: int) -> list[str]:
    """The stream ids of the `count` events queued last in a pipeline's results."""
    return list(results[-count:]) if count else []


def claim(r: redis.Redis, keys: Keys, ids: list[str]) -> list[bool]:
    """Take the delivery of these pending events; True for each one this caller now holds.

    Whoever delivers an event claims it first: the retry job, a scanner's retry flushing the
    pending events and an inline delivery could otherwise deliver the same one twice (two
    revokes, two visits)."""
    if not ids:
        return []
    pipe = r.pipeline(transaction=False)
    for entry_id in ids:
        pipe.set(keys.delivering(entry_id), 1, nx=True, px=int(CLAIM_S * 1000))
    return [bool(x) for x in pipe.execute()]


def _done(r: redis.Redis, keys: Keys, ids: list[str]) -> None:
    """Drop delivered events from the pending stream. Their claims stay until they expire: an
    inline delivery that comes late (its flush ran first) must still find the event taken."""
    if ids:
        r.xdel(keys.pending_events(), *ids)


def _deliver_claimed(
    app: Flask, r: redis.Redis, keys: Keys, occurrences: list[Occurrence], ids: list[str]
) -> None:
    """Deliver events this caller claimed; on failure their claims go, so the retry job
    takes them over at its next round instead of after CLAIM_S."""
    try:
        deliver(app, still_present(r, keys, occurrences))
    except BaseException:
        with contextlib.suppress(redis.RedisError):
            r.delete(*[keys.delivering(i) for i in ids])
        raise
    _done(r, keys, ids)


def still_present(r: redis.Redis, keys: Keys, occurrences: list[Occurrence]) -> list[Occurrence]:
    """The occurrences minus enters whose presence has ended since they were committed (one
    round trip, only if there are enters).

    An enter delivered late (its first delivery failed, or a withdrawal came between its
    commit and its delivery) would push a profile after the revoke that ended it: after a
    withdrawal, or after the person left. What ended it was delivered already."""
    enters = [o for o in occurrences if o.event.kind == "enter"]
    if not enters:
        return occurrences
    pipe = r.pipeline(transaction=False)
    for o in enters:
        pipe.hget(keys.tracks(o.venue.id), str(o.subscriber_id))
    ended = {
        id(o) for o, raw in zip(enters, pipe.execute(), strict=True) if not _holds(raw, o.event)
    }
    return [o for o in occurrences if id(o) not in ended]


def _holds(raw: str | None, event: PresenceEvent) -> bool:
    """Whether a tracking state is still in the presence an enter began."""
    if raw is None:
        return False
    p = json.loads(raw).get("p", {})
    return p.get("zone") == event.zone and p.get("since") == event.since


def deliver_now(app: Flask, occurrences: list[Occurrence], ids: list[str]) -> None:
    """Deliver events that were just committed, then drop them from the pending stream."""
    if not occurrences:
        return
    r, keys = get_redis(app), get_keys(app)
    held = claim(r, keys, ids)
    mine = [o for o, ok in zip(occurrences, held, strict=True) if ok]
    if mine:
        _deliver_claimed(app, r, keys, mine, [i for i, ok in zip(ids, held, strict=True) if ok])


def flush(app: Flask, min_age_s: float = RETRY_AFTER_S, limit: int = 200) -> int:
    """Deliver pending events older than `min_age_s`; returns how many were delivered."""
    r, keys, topo = get_redis(app), get_keys(app), get_topology(app)
    cutoff_ms = int((time.time() - min_age_s) * 1000)
    entries = r.xrange(keys.pending_events(), "-", f"{cutoff_ms}", count=limit)
    if not entries:
        return 0
    held = claim(r, keys, [entry_id for entry_id, _ in entries])
    occurrences, ids = [], []
    for (entry_id, fields), ok in zip(entries, held, strict=True):
        if not ok:
            continue  # another process is delivering it now
        doc = json.loads(fields["o"])
        venue = topo.venue(doc["v"])
        ids.append(entry_id)
        if venue is None:
            continue  # the venue is gone: nobody left to deliver to
        kind, zone, at, since, reason = doc["e"]
        event = PresenceEvent(kind, zone, at, since, reason)
        occurrences.append(Occurrence(doc["s"], venue, doc["c"], event, doc.get("d", True)))
    if not ids:
        return 0
    _deliver_claimed(app, r, keys, occurrences, ids)
    log.info("redelivered pending presence events", extra={"count": len(ids)})
    return len(ids)
