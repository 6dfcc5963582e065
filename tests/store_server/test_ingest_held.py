"""The tracking states a worker holds between batches (ingest.StateCache): what a claim is told,
and that no copy outlives its subscriber's presence for long."""

from __future__ import annotations

import time

import pytest

from store_server import ingest
from store_server.ingest import VERSION_LEN, StateCache
from store_server.occupancy import end_presence
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import Stack, eid_rows, make_stack
from tests.helpers import ingest_rows


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _state(version: int) -> dict:
    return {"v": f"{version:016x}", "p": {"zone": "chair-1"}}


def test_held_names_the_states_of_the_identifiers_heard_with_their_versions():
    cache = StateCache(clock=Clock())
    cache.learn("t:1", {"id-a": 7, "id-b": 7, "id-c": 8})
    cache.put("t:1", ["7"], [_state(0xAA)])
    pairs = cache.held("t:1", ["id-a", "id-b", "id-c", "id-z"])
    # 7 once (two identifiers of one subscriber), 8 not at all: nothing of 8 is held.
    assert pairs == ["7", '{"v":"00000000000000aa"']
    assert len(pairs[1]) == VERSION_LEN
    assert cache.held("t:2", ["id-a"]) == []  # another venue's states are another key
    # The claim answers with the version: the held copy itself comes back; anything else is
    # decoded as it is.
    assert cache.get("t:1", "7", pairs[1]) is cache._states[("t:1", "7")][1]
    assert cache.get("t:1", "7", '{"v":"00000000000000bb","p":{}}') == {
        "v": "00000000000000bb",
        "p": {},
    }


@pytest.mark.privacy
def test_copies_expire_hold_s_after_their_last_write():
    clock = Clock()
    cache = StateCache(hold_s=30.0, clock=clock)
    cache.learn("t:1", {"id-a": 7, "id-b": 8})
    cache.put("t:1", ["7"], [_state(1)])
    clock.now += 20
    cache.put("t:1", ["8"], [_state(2)])  # 8 is still being heard
    clock.now += 15  # 35 s after 7's last write, 15 s after 8's
    assert cache.held("t:1", ["id-a", "id-b"]) == []  # the identifiers were learnt at 1000
    cache.learn("t:1", {"id-b": 8})
    assert cache.held("t:1", ["id-b"]) == ["8", '{"v":"0000000000000002"']
    assert ("t:1", "7") not in cache._states
    clock.now += 31
    cache.expire()
    assert len(cache) == 0


def test_the_least_recently_written_go_first_beyond_size():
    cache = StateCache(size=2, clock=Clock())
    for sub in ("1", "2", "1", "3"):  # 1 is re-written after 2: 2 is now the oldest
        cache.put("t", [sub], [_state(int(sub))])
    assert sorted(k[1] for k in cache._states) == ["1", "3"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:  # type: ignore[misc]
    """A store server of this module's own."""
    s = make_stack(tmp_path_factory.mktemp("ingest_held"))
    yield s
    s.close()


@pytest.mark.privacy
def test_an_ended_presence_leaves_no_held_copy_in_this_process(stack):
    app, keys = stack.app, get_keys(stack.app)
    topo = get_topology(app)
    scanner = topo.scanner("demo-salon-scanner-1")
    assert scanner is not None
    rows = eid_rows(stack.world.emitters["alice"], time.time(), 3)
    ingest_rows(get_redis(app), keys, topo, scanner, rows, batch_ttl=60)
    tkey = keys.tracks(scanner.venue_id)
    (sub,) = get_redis(app).hkeys(tkey)
    ids = sorted({r["id"] for r in rows})
    assert ingest._STATES.held(tkey, ids)[0] == sub  # held after its write
    end_presence(app, int(sub), "withdrawn")
    assert ingest._STATES.held(tkey, ids) == []
    assert not [k for k in ingest._STATES._states if k[1] == sub]
    assert not [v for v in ingest._STATES._subs.values() if v[0] == sub]
