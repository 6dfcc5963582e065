"""The two ingest scripts on a real Redis, at their edges: resolver entries not in resolver.py's
key order, and more states in one write than Lua's unpack takes at once."""

from __future__ import annotations

import json
import time

from store_server import ingest
from store_server.keys import Keys
from store_server.redis_store import run_script


def _keys() -> Keys:
    return Keys(f"cmt:scripts:{time.monotonic_ns()}:")


def _claim(redis, keys: Keys, ids: list[str], held: tuple[str, ...] = (), batch: str = "b") -> list:  # type: ignore[no-untyped-def]
    return run_script(
        redis,
        ingest._CLAIM_LUA,
        5,
        keys.nonce(1, batch * 16),
        keys.batch(1, batch * 16),
        keys.resolver(),
        keys.tracks(1),
        keys.ratelimit("scripts"),
        600,
        120,
        0,
        ingest.BATCH_PENDING,
        ingest.BATCH_DONE,
        len(held) // 2,
        *held,
        *ids,
    )


def test_claim_finds_each_subscriber_once_whatever_the_entry_key_order(redis) -> None:  # type: ignore[no-untyped-def]
    keys = _keys()
    redis.hset(
        keys.resolver(),
        mapping={
            "aa": json.dumps({"s": 7, "e": 1, "c": []}),  # as resolver.py writes it
            "bb": json.dumps({"e": 2, "c": [], "s": 8}),  # any other order: decoded instead
            "cc": json.dumps({"s": 7, "e": 3, "c": []}),  # a second identifier of 7
        },
    )
    redis.hset(keys.tracks(1), mapping={"7": '{"v":"x"}', "8": '{"v":"y"}'})
    redis.hset(keys.resolver(), "version", "v1")
    code, entries, subs, states, version = _claim(redis, keys, ["aa", "bb", "cc", "zz"])
    assert code == ingest.CLAIMED and version == "v1"
    assert entries[3] is None  # nobody we may know: no subscriber for it
    assert subs == ["7", "8"] and states == ['{"v":"x"}', '{"v":"y"}']
    redis.delete(*redis.keys(keys.pattern()))


def test_claim_sends_a_held_state_back_as_its_version_until_it_changes(redis) -> None:  # type: ignore[no-untyped-def]
    keys = _keys()
    redis.hset(
        keys.resolver(),
        mapping={"aa": json.dumps({"s": 7, "c": []}), "bb": json.dumps({"s": 8, "c": []})},
    )
    mine = '{"v":"00000000000000aa","p":{}}'
    redis.hset(keys.tracks(1), mapping={"7": mine, "8": '{"v":"00000000000000bb","p":{}}'})
    version = mine[: ingest.VERSION_LEN]
    # 7 is held at its current version: its version alone; 8 is not held: whole.
    _, _, subs, states, _ = _claim(redis, keys, ["aa", "bb"], ("7", version))
    assert subs == ["7", "8"] and states == [version, '{"v":"00000000000000bb","p":{}}']
    # Another writer changed 7: the whole new state comes back.
    theirs = '{"v":"00000000000000cc","p":{"zone":"z"}}'
    redis.hset(keys.tracks(1), "7", theirs)
    _, _, subs, states, _ = _claim(redis, keys, ["aa"], ("7", version), batch="c")
    assert states == [theirs]
    redis.delete(*redis.keys(keys.pattern()))


def test_write_moves_a_declared_through_forward_only_and_queues_every_event(redis) -> None:  # type: ignore[no-untyped-def]
    keys = _keys()
    health = keys.scanner_health(1)

    def write(batch: str, through: str) -> list:
        return run_script(
            redis, ingest._WRITE_LUA, 8, keys.tracks(1), keys.last_seen(), keys.batch(1, batch),
            keys.dropped(1), keys.pending_events(), keys.occupants(1), keys.resolver(), health,
            0, 0, 60, ingest.BATCH_DONE, "v1", through, "event-1", "event-2",
        )  # fmt: skip

    # A scanner that never said `through` (an older daemon) gets none from its batches.
    assert len(write("a" * 16, "100.5")[1]) == 2
    assert not redis.hexists(health, "through")
    redis.hset(health, "through", "90.0")
    write("b" * 16, "100.5")
    assert redis.hget(health, "through") == "100.5"
    write("c" * 16, "95.0")  # an older batch's word never moves it back
    assert redis.hget(health, "through") == "100.5"
    assert len(write("d" * 16, "")[1]) == 2  # an empty batch says nothing; events still queue
    assert redis.hget(health, "through") == "100.5"
    assert redis.xlen(keys.pending_events()) == 8
    redis.delete(*redis.keys(keys.pattern()))


def test_write_sets_more_states_than_one_unpack_takes(redis) -> None:  # type: ignore[no-untyped-def]
    keys = _keys()
    n = 4500  # 9,000 field/value values: over the 8,000 that one unpack may return
    args: list = [n]
    for i in range(n):
        zone = f"zone-{i % 3}" if i % 2 else ""
        args += [str(i), "", json.dumps({"v": f"{i:016x}"}), f"1:{i}", "1795932052.5", zone]
    args += [0, 60, ingest.BATCH_DONE, "v1", ""]
    tkey, batch = keys.tracks(1), keys.batch(1, "c" * 16)
    redis.hset(keys.resolver(), "version", "v2")

    def write() -> list:
        return run_script(
            redis, ingest._WRITE_LUA, 8, tkey, keys.last_seen(), batch, keys.dropped(1),
            keys.pending_events(), keys.occupants(1), keys.resolver(), keys.scanner_health(1),
            *args,
        )  # fmt: skip

    # Resolved against a table since replaced: nothing is written.
    assert int(write()[0]) == 2 and not redis.exists(tkey) and not redis.exists(batch)
    redis.hset(keys.resolver(), "version", "v1")
    written = write()
    assert int(written[0]) == 1
    assert redis.hlen(tkey) == n and redis.zcard(keys.last_seen()) == n
    # Only subscribers in a zone are in the occupant index, under that zone.
    assert redis.hlen(keys.occupants(1)) == n // 2
    assert redis.hget(keys.occupants(1), str(n - 1)) == f"zone-{(n - 1) % 3}"
    assert json.loads(redis.hget(tkey, str(n - 1))) == {"v": f"{n - 1:016x}"}
    assert redis.get(batch) == ingest.BATCH_DONE
    redis.delete(*redis.keys(keys.pattern()))
