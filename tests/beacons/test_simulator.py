"""Simulator: the world script, the radio maths, and seeded determinism of a scanner's view."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from beacons.eid import compute_eid
from beacons.frames import EddystoneEID, decode
from beacons.simulator import (
    Leg,
    SimEmitter,
    World,
    demo_world,
    path_loss_rssi,
    ranging_tx_power,
    world_from_doc,
    world_from_file,
)
from beacons.sources.simulated import SimulatedSource

KEY = bytes(range(16))
T0 = 1_700_000_000.0


def _one(legs: list[Leg], loop_s: float | None = None, **kw: float) -> World:
    return World([SimEmitter(KEY, 10, legs, **kw)], start=T0, loop_s=loop_s)


def test_position_follows_legs_walks_and_loops() -> None:
    world = _one(
        [Leg(0, 10, "salon", 0, 0), Leg(10, 20, "salon", 0, 0, to_x=10, to_y=0)], loop_s=30
    )
    assert world.position(0, T0 - 1) is None
    assert world.position(0, T0 + 5) == ("salon", 0, 0)
    assert world.position(0, T0 + 15) == ("salon", 5.0, 0.0)
    assert world.position(0, T0 + 25) is None  # between the script's end and the loop
    assert world.position(0, T0 + 35) == ("salon", 0, 0)


def test_emitters_advertise_their_current_eid_as_a_provisioned_phone_would() -> None:
    world = _one([Leg(0, 1e9, "salon", 1, 1)], time_base=1_000, tx_power_1m=-59.0)
    now = T0 + 12.7
    frame = decode(world.advert(0, now))
    assert isinstance(frame, EddystoneEID)
    assert frame.eid == compute_eid(KEY, 10, int(now) - 1_000)
    assert frame.tx_power == ranging_tx_power(-59.0) == -18


def test_log_distance_path_loss() -> None:
    assert path_loss_rssi(-59.0, 1.0, 2.7) == -59.0
    assert path_loss_rssi(-59.0, 10.0, 2.7) == pytest.approx(-86.0)
    assert path_loss_rssi(-59.0, 0.0, 2.0) == path_loss_rssi(-59.0, 0.1, 2.0)  # no log(0)


def test_scanner_view_matches_the_model_on_average() -> None:
    world = _one([Leg(0, 1e9, "salon", 4.0, 0.0)])
    sim = SimulatedSource(world, "salon", 0.0, 0.0, seed=3, sigma_db=3.0, t0=T0)
    heard = sim.adverts_until(T0 + 600)
    rssi = [a.rssi for a in heard]
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(heard)]
    assert statistics.mean(rssi) == pytest.approx(-59 - 27 * math.log10(4), abs=0.5)
    assert 2.0 < statistics.stdev(rssi) < 4.0
    assert min(gaps) >= 0.1 and max(gaps) <= 1.01 and max(gaps) - min(gaps) <= 0.0101
    assert len({a.address for a in heard}) == 1


def test_far_emitters_and_other_venues_are_not_heard() -> None:
    world = World(
        [
            SimEmitter(KEY, 10, [Leg(0, 1e9, "salon", 500.0, 0.0)]),
            SimEmitter(KEY, 10, [Leg(0, 1e9, "cinema", 0.0, 0.0)]),
        ],
        start=T0,
    )
    assert SimulatedSource(world, "salon", 0, 0, sigma_db=0.0, t0=T0).adverts_until(T0 + 60) == []


def test_same_seed_same_capture_whatever_the_polling_cadence() -> None:
    def run(seed: int, step: float) -> list:
        world = demo_world(T0, emitters=5, seed=11)
        sim = SimulatedSource(world, "salon", 5.0, 4.0, seed=seed, t0=T0)
        out, t = [], T0
        while t < T0 + 120:
            t += step
            out += sim.adverts_until(t)
        return [(a.ts, a.rssi, a.data, a.address) for a in out if a.ts <= T0 + 120]

    a = run(1, 0.25)
    assert len(a) > 200
    assert a == run(1, 7.0)
    assert a != run(2, 0.25)


def test_scenario_documents_are_validated() -> None:
    doc = {
        "loop_s": 60,
        "emitters": [
            {"identity_key": KEY.hex(), "exponent": 10,
             "legs": [{"t0": 0, "t1": 60, "venue": "salon", "x": 1, "y": 2}]}
        ],
    }  # fmt: skip
    world = world_from_doc(doc, T0)
    assert world.position(0, T0 + 61) == ("salon", 1, 2)
    doc["emitters"][0]["identity_key"] = "00"
    with pytest.raises(ValueError):
        world_from_doc(doc, T0)
    with pytest.raises(ValueError):
        world_from_doc({"emitters": [{"legs": []}]}, T0)
    doc["emitters"][0]["identity_key"] = KEY.hex()
    # Wrong types once passed here and failed on every read of the running source, forever.
    for leg_change, top in (({"x": "a"}, {}), ({"to_y": True}, {}), ({}, {"loop_s": "10"})):
        bad = {**doc, **top, "emitters": [{**doc["emitters"][0]}]}
        bad["emitters"][0]["legs"] = [{**doc["emitters"][0]["legs"][0], **leg_change}]
        with pytest.raises(ValueError, match="bad scenario"):
            world_from_doc(bad, T0)


def test_a_scenario_file_nested_past_the_recursion_limit_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="cannot read scenario"):
        world_from_file(path, T0)


def test_a_live_source_does_not_replay_a_long_stall() -> None:
    now = [T0]
    world = _one([Leg(0, 1e9, "salon", 1.0, 0.0)])
    sim = SimulatedSource(world, "salon", 0.0, 0.0, clock=lambda: now[0], interval_s=(0.5, 0.5))
    now[0] += 3600.0  # an hour without reading (or the clock jumped): not 7,200 adverts at once
    heard = sim.read(0)
    assert 100 <= len(heard) <= 121 and heard[0].ts >= now[0] - 60.5
