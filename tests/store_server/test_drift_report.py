"""The venue's drift figure from tracking states: medians, counts and when to ask for a survey."""

from __future__ import annotations

import json

from store_server import drift_report
from store_server.redis_store import get_keys


def test_a_resurvey_is_suggested_only_for_a_large_well_founded_drift():
    state = {"t": {"o": {"a": [7.5, 1.0], "b": [-1.0, 2.0]}}, "p": {}}
    other = {"t": {"o": {"a": [6.5, 1.0]}}, "p": {}}
    raws = [json.dumps(state), json.dumps(other), json.dumps({"p": {}}), b"not json"]
    assert drift_report.from_states(raws) == {"a": (7.0, 2), "b": (-1.0, 1)}
    assert not drift_report.needs_resurvey(7.0, 2)
    assert drift_report.needs_resurvey(-6.0, 3) and not drift_report.needs_resurvey(5.9, 30)


def test_a_busy_venue_is_read_as_a_bounded_random_sample(app, redis):
    """However many trackers a venue holds, one report reads SAMPLE of them (real Redis)."""
    keys = get_keys(app)
    venue = 987_654  # no such venue in the session's world: the key is this test's alone
    states = {str(s): json.dumps({"t": {"o": {"door": [s % 5 - 2.0, 1.0]}}}) for s in range(450)}
    redis.hset(keys.tracks(venue), mapping=states)
    try:
        read = drift_report.sample(redis, keys, venue)
        assert len(read) == 2 * drift_report.SAMPLE
        assert set(read[0::2]) <= set(states) and len(set(read[0::2])) == drift_report.SAMPLE
        (db, n) = drift_report.venue_drift(app, venue)["door"]
        assert n == drift_report.SAMPLE and db in (-1.0, 0.0, 1.0)
    finally:
        redis.delete(keys.tracks(venue))


def test_every_venue_is_published_however_many_there_are(app, redis):
    """Venues are read and written in chunks (bounded memory per round), and all get there."""
    keys = get_keys(app)
    venues = list(range(987_000, 987_000 + 2 * drift_report.CHUNK + 20))
    with_trackers = {venues[3]: 2.0, venues[drift_report.CHUNK + 1]: -4.0, venues[-1]: 6.5}
    for venue, db in with_trackers.items():
        states = {
            str(s): json.dumps({"t": {"mv": "map-1", "o": {"door": [db, 1.0]}}}) for s in range(3)
        }
        redis.hset(keys.tracks(venue), mapping=states)
    try:
        figures = drift_report.publish(redis, keys, {v: "map-1" for v in venues})
        assert {v for v, f in figures.items() if f} == set(with_trackers)
        for venue in venues:
            expected = {"door": (with_trackers[venue], 3)} if venue in with_trackers else {}
            assert drift_report.published(redis, keys, venue, "map-1") == expected
        redis.set(keys.venue_drift(venues[0]), b"{not json")
        assert drift_report.published(redis, keys, venues[0], "map-1") == {}  # unreadable
    finally:
        redis.delete(*[keys.tracks(v) for v in with_trackers], keys.venue_drift(venues[0]))
        redis.delete(*[keys.venue_drift(v) for v in with_trackers])


def test_only_venues_someone_is_tracked_at_are_read_for_publishing(app, redis):
    """The jobs load the radio maps of the venues `tracked` names, and no others (real Redis)."""
    keys = get_keys(app)
    venues = [986_001, 986_002, 986_003]
    redis.hset(keys.tracks(venues[1]), "42", json.dumps({"t": {}}))
    try:
        assert drift_report.tracked(redis, keys, venues) == [venues[1]]
        assert drift_report.tracked(redis, keys, []) == []
    finally:
        redis.delete(keys.tracks(venues[1]))
