"""Background jobs of a store server process: the exit sweeper, the resolver refresh, the
venues' published drift and dark zones, and the retention rounds.

Several processes may run them; a Redis lock lasting most of a job's period makes one of them
do each round, and a job that fails releases it (and does not hold up the round's others).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from store_server import (
    drift_report,
    journal,
    presence,
    resolver,
    retention,
    scanner_health,
    streaming,
)
from store_server import events as pending
from store_server.db import sessions
from store_server.ingest import restamp
from store_server.models import Scanner, Venue
from store_server.push import Occurrence, pushed_to
from store_server.redis_store import get_keys, get_redis
from store_server.topology import VenueInfo, get_topology, model_version

log = logging.getLogger(__name__)
EXPIRY_CHECK_S = 5.0
# Venue ids per IN (...) list of the drift job: well under SQLite's bound on bound parameters.
VENUES_PER_QUERY = 500
FLUSH_S = 2.0
PROFILE_REFRESH_S = 3600.0
# Visits and the disclosure log past RETENTION_DAYS go within the hour they pass it.
RETENTION_EVERY_S = 3600.0
# After a failed profile refresh (the streaming service down) or retention round (SQL down),
# any process tries again this much later.
SLOW_RETRY_S = 60.0
DARK_CHECK_S = 1.0
# Heard this close to the end of their consent, a subscriber fell silent because ingest dropped
# what came after (a second's estimate lags its readings by up to a second, batching by more).
HEARD_TO_END_S = 2.0


def sweep_once(app: Flask, now: float | None = None) -> int:
    """Exit subscribers not heard for their zone's absence time; returns the number of exits."""
    r, keys, topo = get_redis(app), get_keys(app), get_topology(app)
    now = time.time() if now is None else now
    # 1 s is the shortest absence any zone uses; members younger than that cannot be due.
    members = r.zrangebyscore(keys.last_seen(), "-inf", now - 1.0)
    parsed = [tuple(int(x) for x in m.split(":")) for m in members]
    if not parsed:
        return 0
    tkeys = sorted({keys.tracks(v) for v, _ in parsed})
    dark = scanner_health.read(r, keys)
    occurrences: list[Occurrence] = []
    for _attempt in range(8):
        occurrences = []
        try:
            with r.pipeline(transaction=True) as pipe:
                # WATCH: a sighting folded in meanwhile must win over this exit.
                pipe.watch(*tkeys)
                reader = r.pipeline(transaction=False)
                for venue_id, sub in parsed:
                    reader.hget(keys.tracks(venue_id), str(sub))
                # Once per round: a venue reloaded meanwhile must not name a scanner whose
                # health was not read.
                venues = {v: topo.venue(v) for v in sorted({v for v, _ in parsed})}
                scanner_ids = sorted(
                    {s for v in venues.values() if v is not None for s in v.scanner_ids.values()}
                )
                for sid in scanner_ids:
                    reader.hgetall(keys.scanner_health(sid))
                raws = reader.execute()
                healths = dict(zip(scanner_ids, raws[len(parsed) :], strict=True))
                raws = raws[: len(parsed)]
                pipe.multi()
                for member, (venue_id, sub), raw in zip(members, parsed, raws, strict=True):
                    venue = venues[venue_id]
                    if raw is None or venue is None:
                        # A deleted venue's states go with it: nothing would ever end them.
                        pipe.hdel(keys.tracks(venue_id), str(sub))
                        pipe.hdel(keys.occupants(venue_id), str(sub))
                        pipe.zrem(keys.last_seen(), member)
                        continue
                    state = json.loads(raw)
                    pstate, events = presence.sweep(
                        state.get("p", {}),
                        now,
                        venue.timings,
                        dark.get(venue_id, frozenset()),
                        scanner_health.heard_through(_heard_by(venue, state, healths), now),
                    )
                    until = (state.get("c") or {}).get("until")
                    last = (state.get("p") or {}).get("last", 0.0)
                    if until is not None and until <= now and last >= until - HEARD_TO_END_S:
                        # Not heard since the consent ran out because ingest dropped what was:
                        # said as it is, not as if they had left.
                        events = [
                            replace(e, reason="expired") if e.reason == "absent" else e
                            for e in events
                        ]
                    if pstate is None:
                        pipe.hdel(keys.tracks(venue_id), str(sub))
                        pipe.hdel(keys.occupants(venue_id), str(sub))
                        pipe.zrem(keys.last_seen(), member)
                    elif events:
                        # Out of its zone (its scanners went silent) but still heard: kept,
                        # with no zone to be found in.
                        pipe.hset(keys.tracks(venue_id), str(sub), restamp({**state, "p": pstate}))
                        pipe.hdel(keys.occupants(venue_id), str(sub))
                    occurrences.extend(
                        # A presence never disclosed (scanner backlog) is never revoked either.
                        Occurrence(sub, venue, state["c"], e, not state.get("h"), pushed_to(state))
                        for e in events
                        if state.get("c")
                    )
                pending.queue(pipe, keys, occurrences)
                event_ids = pending.committed_ids(pipe.execute(), len(occurrences))
            break
        except redis.WatchError:
            continue
    else:
        return 0  # busy venues: the next round will sweep
    pending.deliver_now(app, occurrences, event_ids)
    return len(occurrences)


def _heard_by(
    venue: VenueInfo, state: dict[str, Any], healths: dict[int, dict[str, str]]
) -> list[dict[str, str]]:
    """The health reports of the scanners whose word a subscriber's absence waits for: those
    her tracker heard lately, and her zone's own, which her tracker forgets after 10 s of its
    silence while the others still hear her (its uplink may be the one that is cut)."""
    names = set((state.get("t") or {}).get("f", ()))
    ids = {venue.scanner_ids[n] for n in names if n in venue.scanner_ids}
    ids.update(venue.zone_scanners.get((state.get("p") or {}).get("zone") or "", ()))
    return [healths.get(i, {}) for i in sorted(ids)]


def publish_dark(app: Flask, now: float | None = None) -> dict[int, list]:
    """Publish each venue's dark zones (every scanner of theirs silent) for ingest and the
    sweeper, judged at `now` (default: the clock); returns them."""
    with sessions(app)() as db:
        rows = db.execute(select(Scanner.id, Scanner.venue_id, Scanner.reports_health)).all()
    scanners = {sid: vid for sid, vid, _ in rows}
    reporting = {sid for sid, _, reports in rows if reports}
    topo = get_topology(app)

    def own(venue_id: int) -> dict[str, tuple[int, ...]] | None:
        venue = topo.venue(venue_id)
        return venue.zone_scanners if venue else None

    return scanner_health.publish(
        get_redis(app), get_keys(app), scanners, own, reporting=reporting, now=now
    )


def refresh_resolver(app: Flask) -> int:
    """Rebuild the resolver table from SQL."""
    # Until the next periodic rebuild, and the one after should that one be late or fail.
    lasts_s = 2 * app.config["RESOLVER_REFRESH_S"]
    with sessions(app)() as db:
        return resolver.refresh(
            get_redis(app),
            get_keys(app),
            db,
            app.config["DATA_KEY"],
            app.config["RESOLVER_WINDOW"],
            lasts_s,
        )


def publish_drift(app: Flask) -> int:
    """Publish every venue's drift for new tracks to start from; returns how many had one."""
    r, keys = get_redis(app), get_keys(app)
    versions: dict[int, str] = {}
    with sessions(app)() as db:
        # Only venues someone is tracked at can have a drift: an idle venue's radio map (its
        # survey calibration, tens of KB) is neither loaded nor hashed every PUBLISH_S.
        busy = drift_report.tracked(r, keys, list(db.scalars(select(Venue.id))))
        for i in range(0, len(busy), VENUES_PER_QUERY):
            # Zones and scanners in two more queries per chunk, not two per venue.
            query = (
                select(Venue)
                .where(Venue.id.in_(busy[i : i + VENUES_PER_QUERY]))
                .options(selectinload(Venue.zones), selectinload(Venue.scanners))
            )
            versions |= {v.id: model_version(v) for v in db.scalars(query)}
    figures = drift_report.publish(r, keys, versions)
    return sum(1 for f in figures.values() if f)


def _locked(app: Flask, name: str, ttl_ms: int) -> bool:
    # At least 1 ms: Redis refuses a zero expiry, and a tiny period (tests) must not fail.
    return bool(get_redis(app).set(get_keys(app).lock(name), 1, nx=True, px=max(1, ttl_ms)))


def _run(app: Flask, name: str, lock_s: float, job: Callable[[], object]) -> bool:
    """Run a job if this process takes its lock; True if it ran and succeeded. A failure is
    logged and releases the lock, so any process tries again at its next round (held, a job
    failing while the database is down would wait out its whole period after it is back), and
    the other jobs of the round still run."""
    if not _locked(app, name, int(lock_s * 1000)):
        return False
    try:
        job()
    except Exception:
        log.exception("background job failed", extra={"job": name})
        with contextlib.suppress(redis.RedisError):
            get_redis(app).delete(get_keys(app).lock(name))
        return False
    return True


def _due(app: Flask, name: str, period_s: float, job: Callable[[], object]) -> bool:
    """Run a job unless some process did within its period; returns whether this call ran it."""
    r, key = get_redis(app), get_keys(app).lock(name)
    # The lock is the schedule, shared by every jobs process: held for the whole period, not
    # only while the job runs, else each process (its own clock starting at zero) would run
    # its own round every period.
    if not r.set(key, 1, nx=True, px=int(period_s * 1000)):
        return False
    try:
        job()
    except Exception:
        with contextlib.suppress(redis.RedisError):
            r.pexpire(key, int(SLOW_RETRY_S * 1000))
        raise
    return True


def refresh_profiles_due(app: Flask) -> bool:
    """Refresh the streaming profiles unless some process did within the hour; returns whether
    this call refreshed them."""
    return _due(app, "profiles", PROFILE_REFRESH_S, lambda: streaming.refresh_profiles(app))


def retention_due(app: Flask) -> bool:
    """Purge what is past retention unless some process did within RETENTION_EVERY_S; returns
    whether this call purged."""

    def purge() -> None:
        log.info("retention round", extra=retention.run(app))

    return _due(app, "retention", RETENTION_EVERY_S, purge)


def _slow_jobs_loop(app: Flask, stop: threading.Event) -> None:
    # A thread of its own: one streaming call per subscriber can take minutes, and so can a
    # purge of a large log; meanwhile the per-second jobs must go on (dark zones lapse after
    # DARK_TTL_S, exits are due).
    while not stop.is_set():
        for job, what in ((refresh_profiles_due, "profile refresh"), (retention_due, "retention")):
            try:
                job(app)
            except Exception:  # a failed round must not end the rounds to come
                log.exception("background job failed", extra={"job": what})
        stop.wait(app.config["SWEEP_INTERVAL_S"])


def start(app: Flask, stop: threading.Event) -> threading.Thread:
    """Run the periodic jobs in daemon threads until `stop` is set; the thread returned ends
    once they all have."""
    slow = threading.Thread(
        target=_slow_jobs_loop, args=(app, stop), name="cm-jobs-slow", daemon=True
    )

    def loop() -> None:
        next_refresh = next_expiry = next_flush = next_drift = next_dark = 0.0
        interval = app.config["SWEEP_INTERVAL_S"]
        resolver_s = app.config["RESOLVER_REFRESH_S"]

        def flush() -> None:
            try:
                pending.flush(app)  # deliveries that failed earlier (SQL down, a crash)
            finally:
                # Audit entries and visits SQL refused then: drained even if one pending
                # event's delivery keeps failing.
                journal.drain(app)

        while not stop.is_set():
            try:
                now = time.monotonic()
                # Each lock lasts 0.9 of its job's period: with several jobs processes, one of
                # them runs each round (a shorter lock let each run its own every period).
                if now >= next_refresh and _run(
                    app, "resolver", resolver_s * 0.9, lambda: refresh_resolver(app)
                ):
                    next_refresh = now + resolver_s
                if now >= next_expiry and _run(
                    # Ingest already refuses expired consents; this ends presences they left.
                    app,
                    "expiry",
                    EXPIRY_CHECK_S * 0.9,
                    lambda: retention.end_expired_presences(app),
                ):
                    next_expiry = now + EXPIRY_CHECK_S
                if now >= next_drift and _run(
                    app, "drift", drift_report.PUBLISH_S * 0.9, lambda: publish_drift(app)
                ):
                    next_drift = now + drift_report.PUBLISH_S
                if now >= next_dark and _run(
                    app, "dark", DARK_CHECK_S * 0.9, lambda: publish_dark(app)
                ):
                    next_dark = now + DARK_CHECK_S
                _run(app, "sweep", interval * 0.9, lambda: sweep_once(app))
                if now >= next_flush and _run(app, "flush", 5.0, flush):
                    next_flush = now + FLUSH_S
            except Exception:  # Redis itself unreachable: the next round tries again
                log.exception("background job round failed")
            stop.wait(interval)
        # Whoever joins this thread waits for a refresh under way too, as for any other job.
        slow.join()

    t = threading.Thread(target=loop, name="cm-jobs", daemon=True)
    slow.start()
    t.start()
    return t
