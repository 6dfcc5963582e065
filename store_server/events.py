"""Presence events are queued in Redis in the same transaction as the state that caused them, and
removed only once delivered (outboxes with their audit entries and visits in the journal, emit).
If delivery fails before that — the database is down, the process dies — the events are
delivered later, so no enter or revoke is ever lost; once it is done, SQL refusing the audit
entries and visits no longer sends the devices the same events again (journal.py).
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
            "dv": list(o.devices),
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


def _take(
    r: redis.Redis, keys: Keys, items: list[tuple[str, Occurrence | None]]
) -> tuple[list[Occurrence], list[str]]:
    """Claim pending events (id, occurrence; None when nobody is left to deliver to); returns
    what this caller delivers and the ids it holds. An enter delivered late, after the revoke
    that ended its presence, is withheld by `deliver` itself (push.py: its push is appended
    only while the presence holds)."""
    held = claim(r, keys, [entry_id for entry_id, _ in items])
    mine = [(entry_id, o) for (entry_id, o), ok in zip(items, held, strict=True) if ok]
    return [o for _, o in mine if o is not None], [entry_id for entry_id, _ in mine]


def _deliver_taken(
    app: Flask, r: redis.Redis, keys: Keys, occurrences: list[Occurrence], ids: list[str]
) -> None:
    """Deliver what this caller took, then drop it from the pending stream (delivery drops it
    as it writes the outboxes: a failure after that must not deliver it again). The claims stay
    until they expire: an inline delivery that comes late (its flush ran first) must still
    find the event taken. On failure they go, so the retry job takes the events over at its
    next round instead of after CLAIM_S."""
    try:
        deliver(app, occurrences, ids)
    except BaseException:
        with contextlib.suppress(redis.RedisError):
            r.delete(*[keys.delivering(i) for i in ids])
        raise
    r.xdel(keys.pending_events(), *ids)


def deliver_now(app: Flask, occurrences: list[Occurrence], ids: list[str]) -> None:
    """Deliver events that were just committed, then drop them from the pending stream."""
    if not occurrences:
        return
    r, keys = get_redis(app), get_keys(app)
    mine, held = _take(r, keys, list(zip(ids, occurrences, strict=True)))
    if held:
        _deliver_taken(app, r, keys, mine, held)


def flush(app: Flask, min_age_s: float = RETRY_AFTER_S, limit: int = 200) -> int:
    """Deliver pending events older than `min_age_s`; returns how many were delivered."""
    r, keys, topo = get_redis(app), get_keys(app), get_topology(app)
    cutoff_ms = int((time.time() - min_age_s) * 1000)
    entries = r.xrange(keys.pending_events(), "-", f"{cutoff_ms}", count=limit)
    if not entries:
        return 0
    items: list[tuple[str, Occurrence | None]] = []
    for entry_id, fields in entries:
        doc = json.loads(fields["o"])
        venue = topo.venue(doc["v"])
        if venue is None:
            items.append((entry_id, None))  # the venue is gone: nobody left to deliver to
            continue
        kind, zone, at, since, reason = doc["e"]
        event = PresenceEvent(kind, zone, at, since, reason)
        occurrence = Occurrence(
            doc["s"], venue, doc["c"], event, doc.get("d", True), tuple(doc.get("dv", ()))
        )
        items.append((entry_id, occurrence))
    occurrences, ids = _take(r, keys, items)
    if not ids:
        return 0  # another process is delivering them now
    _deliver_taken(app, r, keys, occurrences, ids)
    log.info("redelivered pending presence events", extra={"count": len(ids)})
    return len(ids)
