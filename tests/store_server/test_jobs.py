"""Background jobs: a venue's drift, published for new tracks to start from (real Redis, SQL and
signed HTTP batches)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from store_server import drift_report, jobs
from store_server.db import sessions
from store_server.models import Scanner
from store_server.positioning.drift import SEED_VAR_DB2
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import Stack, batch_body, eid_rows, make_stack, signed

FIRST, SECOND = "demo-salon-scanner-1", "demo-salon-scanner-2"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A store server of this module's own: no background jobs touch its keys."""
    s = make_stack(tmp_path_factory.mktemp("jobs"))
    yield s
    s.close()


def _walk_in(
    stack: Stack, name: str, who: str | None = None, after: float = 0.0
) -> tuple[str, dict]:
    """Ten seconds of a consented visitor at the salon (from now, or from just after `after`),
    through the HTTP API: the visitor's state key (new unless `who` is given) and tracker."""
    client = stack.app.test_client()
    r, tkey = get_redis(stack.app), get_keys(stack.app).tracks(_salon(stack))
    before = set(r.hkeys(tkey))
    start = max(time.time(), after + 1.0)
    rows = {
        FIRST: eid_rows(stack.world.emitters[name], start, 10, -52.0),
        SECOND: eid_rows(stack.world.emitters[name], start, 10, -66.0),
    }
    for second in range(10):
        for scanner, mine in rows.items():
            body = batch_body(mine[second : second + 1])
            headers = signed(scanner, stack.secret(scanner), body)
            assert client.post("/api/v1/sightings", data=body, headers=headers).status_code == 200
    if who is None:
        (who,) = set(r.hkeys(tkey)) - before
    tracker = json.loads(r.hget(tkey, who))["t"]
    assert tracker["e"], tracker  # placed: the offsets below are a tracker's, after estimates
    return who, tracker


def _salon(stack: Stack) -> int:
    return get_topology(stack.app).scanner(FIRST).venue_id


@pytest.mark.consent
def test_a_new_track_starts_from_the_drift_earlier_tracks_learnt(stack):
    app, r, keys = stack.app, get_redis(stack.app), get_keys(stack.app)
    topo, venue = get_topology(app), _salon(stack)
    version = topo.venue(venue).model_version
    # Three earlier visitors' trackers learnt that the first scanner reads 7 dB above the survey;
    # a fourth learnt 20 dB, against a radio map the venue no longer has: it does not count.
    earlier = {
        f"90000{i}": json.dumps(
            {"t": {"mv": version, "o": {FIRST: [7.0 + i / 10, 1.0], SECOND: [-1.0, 1.0]}}}
        )
        for i in range(3)
    }
    earlier["900009"] = json.dumps({"t": {"mv": "old", "o": {FIRST: [20.0, 1.0]}}})
    r.hset(keys.tracks(venue), mapping=earlier)
    assert jobs.publish_drift(app) >= 1
    r.hdel(keys.tracks(venue), *earlier)
    published = drift_report.published(r, keys, venue, version)
    assert published == {FIRST: (7.1, 3), SECOND: (-1.0, 3)}
    assert drift_report.published(r, keys, venue, "another map") == {}
    assert 0 < r.ttl(keys.venue_drift(venue)) <= drift_report.PUBLISHED_TTL_S
    # Scanner names and numbers only: nobody's identifier is in what every track starts from.
    doc = json.loads(r.get(keys.venue_drift(venue)))
    assert set(doc) == {"mv", "scanners"} and set(doc["scanners"]) == {FIRST, SECOND}

    topo.invalidate()  # as the next reload (within TTL_S) would read it
    assert topo.venue(venue).drift_seed == {
        FIRST: [7.1, SEED_VAR_DB2],
        SECOND: [-1.0, SEED_VAR_DB2],
    }
    who, alice = _walk_in(stack, "alice")
    assert alice["o"][FIRST][0] > 4.0  # started from 7.1 dB, not from 0
    assert alice["mv"] == version

    # Nothing published (every tracker left long ago): the next newcomer learns from scratch.
    r.delete(keys.venue_drift(venue))
    topo.invalidate()
    assert topo.venue(venue).drift_seed == {}
    _, bob = _walk_in(stack, "bob")
    # The same readings, learnt from 0: the first scanner's offset stays well below the seed,
    # the second's (seeded at -1 dB for alice) goes well above hers.
    assert bob["o"][FIRST][0] < 4.0
    assert bob["o"][SECOND][0] > alice["o"][SECOND][0] + 1.5

    # The installer moves a scanner: offsets learnt against the old radio map no longer apply.
    # Alice's tracker drops hers at her next sighting and learns again, as bob's did.
    with sessions(app)() as db:
        db.scalars(select(Scanner).where(Scanner.name == SECOND)).one().x += 0.5
        db.commit()
    topo.invalidate()
    assert topo.venue(venue).model_version != version
    _, again = _walk_in(stack, "alice", who, after=alice["h"])
    assert again["mv"] == topo.venue(venue).model_version
    assert again["o"][FIRST][0] < 4.0
