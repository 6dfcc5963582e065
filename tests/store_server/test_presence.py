"""Presence state machine: unit rules, and a replayed walk whose exact event sequence is known."""

from __future__ import annotations

import math

from shapely.geometry import box

from beacons.simulator import Leg, SimEmitter, World
from beacons.sources.simulated import SimulatedSource
from store_server import presence, scanner_health
from store_server.ingest import Sighting, advance
from store_server.positioning.live import VenueModel
from store_server.presence import PresenceEvent, ZoneTiming
from store_server.topology import VenueInfo

CHAIR = ZoneTiming(enter_stable_s=3.0, exit_absent_s=8.0)
TIMINGS = {"chair-1": CHAIR, "chair-2": CHAIR}


def kinds(events: list[PresenceEvent]) -> list[tuple[str, str]]:
    return [(e.kind, e.zone) for e in events]


def test_enter_needs_a_stable_zone():
    st, ev = presence.step({}, "chair-1", 100.0, TIMINGS)
    assert ev == []
    st, ev = presence.step(st, "chair-1", 102.9, TIMINGS)
    assert ev == []
    st, ev = presence.step(st, "chair-1", 103.0, TIMINGS)
    assert kinds(ev) == [("enter", "chair-1")]
    assert st["zone"] == "chair-1" and st["since"] == 103.0


def test_a_brief_excursion_does_not_flap():
    st, _ = presence.step({}, "chair-1", 0.0, TIMINGS)
    st, _ = presence.step(st, "chair-1", 3.0, TIMINGS)
    for t, z in ((4.0, "chair-2"), (5.0, "chair-2"), (6.0, "chair-1"), (7.0, "chair-2")):
        st, ev = presence.step(st, z, t, TIMINGS)
        assert ev == []
    assert st["zone"] == "chair-1"


def test_moving_exits_the_old_zone_before_entering_the_new():
    st, _ = presence.step({}, "chair-1", 0.0, TIMINGS)
    st, _ = presence.step(st, "chair-1", 3.0, TIMINGS)
    st, _ = presence.step(st, "chair-2", 10.0, TIMINGS)
    st, ev = presence.step(st, "chair-2", 13.0, TIMINGS)
    assert [(e.kind, e.zone, e.reason) for e in ev] == [
        ("exit", "chair-1", "moved"),
        ("enter", "chair-2", ""),
    ]


def test_late_readings_are_ignored():
    st, _ = presence.step({}, "chair-1", 10.0, TIMINGS)
    st2, ev = presence.step(st, "chair-2", 5.0, TIMINGS)
    assert st2 == st and ev == []


def test_sweep_exits_after_absence_and_forgets_unentered_state():
    st, _ = presence.step({}, "chair-1", 0.0, TIMINGS)
    st, _ = presence.step(st, "chair-1", 3.0, TIMINGS)
    kept, ev = presence.sweep(st, 10.9, TIMINGS)
    assert kept == st and ev == []
    gone, ev = presence.sweep(st, 11.0, TIMINGS)
    assert gone is None
    assert [(e.kind, e.zone, e.reason, e.since, e.at) for e in ev] == [
        ("exit", "chair-1", "absent", 3.0, 3.0)
    ]
    unentered, _ = presence.step({}, "chair-2", 0.0, TIMINGS)
    assert presence.sweep(unentered, 4.0, TIMINGS) == (unentered, [])
    assert presence.sweep(unentered, 8.0, TIMINGS) == (None, [])


def test_absence_is_judged_when_the_scanners_that_heard_her_have_reported_it():
    st, _ = presence.step({}, "chair-1", 0.0, TIMINGS)
    st, _ = presence.step(st, "chair-1", 3.0, TIMINGS)
    # Her scanners last said at 5.0 what they heard: at 20.0 nobody knows yet that she left.
    assert presence.sweep(st, 20.0, TIMINGS, heard_through=5.0) == (st, [])
    assert presence.sweep(st, 20.0, TIMINGS, heard_through=10.9) == (st, [])
    gone, ev = presence.sweep(st, 20.0, TIMINGS, heard_through=11.0)
    assert gone is None and [(e.reason, e.at) for e in ev] == [("absent", 3.0)]
    # A report from the future says no more than now does.
    assert presence.sweep(st, 10.9, TIMINGS, heard_through=50.0) == (st, [])
    # Stuck reports hold the exit no longer than a scanner takes to be judged silent.
    late = 11.0 + presence.HEARD_WAIT_MAX_S
    assert presence.sweep(st, late - 0.1, TIMINGS, heard_through=5.0) == (st, [])
    assert presence.sweep(st, late, TIMINGS, heard_through=5.0)[0] is None
    unentered, _ = presence.step({}, "chair-2", 0.0, TIMINGS)
    assert presence.sweep(unentered, 8.0, TIMINGS, heard_through=4.0) == (unentered, [])
    assert presence.sweep(unentered, 8.0, TIMINGS, heard_through=8.0) == (None, [])


def test_an_exit_waits_for_the_scanners_word_as_long_as_they_take_to_be_judged_silent():
    # Past that, a scanner truly gone is silent and its zone dark: the two bounds are one.
    assert presence.HEARD_WAIT_MAX_S == scanner_health.SILENT_AFTER_S


def test_replayed_walk_gives_the_exact_event_sequence():
    """A simulated subscriber sits in chair 1, walks to chair 2, sits, then leaves the salon."""
    scanners = {"s1": (1.5, 1.5), "s2": (6.0, 1.5)}
    zones = {"chair-1": box(0.5, 0.5, 2.5, 2.5), "chair-2": box(5.0, 0.5, 7.0, 2.5)}
    venue = VenueInfo(1, 1, b"k" * 32, True, VenueModel.uncalibrated(scanners, zones), TIMINGS)
    legs = [
        Leg(0, 40, "salon", 1.5, 1.5),
        Leg(40, 44, "salon", 1.5, 1.5, 6.0, 1.5),
        Leg(44, 90, "salon", 6.0, 1.5),
    ]
    start = 1_800_000_000.0
    world = World([SimEmitter(bytes(16), 10, legs)], start)
    sources = {
        name: SimulatedSource(world, "salon", x, y, seed=i, t0=start, clock=lambda: start)
        for i, (name, (x, y)) in enumerate(scanners.items())
    }
    state: dict = {}
    events: list[PresenceEvent] = []
    for second in range(1, 121):
        now = start + second
        for name, src in sources.items():  # each scanner uploads a batch per second
            heard = [Sighting(a.ts, "eid", "0" * 16, a.rssi) for a in src.adverts_until(now)]
            if heard and state is not None:
                state, evs = advance(venue, name, state, heard)
                events.extend(evs)
        if state is not None:
            pstate, evs = presence.sweep(state.get("p", {}), now, TIMINGS)
            events.extend(evs)
            state = None if pstate is None else state
    assert [(e.kind, e.zone, e.reason) for e in events] == [
        ("enter", "chair-1", ""),
        ("exit", "chair-1", "moved"),
        ("enter", "chair-2", ""),
        ("exit", "chair-2", "absent"),
    ]
    enter1, exit1, enter2, exit2 = events
    assert enter1.at - start <= 5  # enters within the stability time plus a batch
    assert 40 <= exit1.at - start <= 50 and enter2.at == exit1.at
    assert 88 <= exit2.at - start <= 90  # ended when last heard, not when the sweep noticed
    assert not math.isnan(exit2.since)


def test_a_zone_whose_scanners_went_silent_ends_its_presence_and_moves_nobody():
    # Its occupant is then placed by the neighbours' faint readings alone: neither kept there
    # by them nor moved next door.
    st, _ = presence.step({}, "chair-1", 0.0, TIMINGS)
    st, _ = presence.step(st, "chair-1", 3.0, TIMINGS)
    dark = frozenset({"chair-1"})
    st, ev = presence.step(st, "chair-1", 4.0, TIMINGS, dark)
    assert [(e.kind, e.zone, e.reason, e.since, e.at) for e in ev] == [
        ("exit", "chair-1", presence.SCANNER_SILENT, 3.0, 4.0)
    ]
    for t in range(5, 30):
        st, ev = presence.step(st, "chair-2", float(t), TIMINGS, dark)
        assert ev == [] and st.get("zone") is None
    # Back: the estimates mean something again, and the zone is entered as usual.
    st, ev = presence.step(st, "chair-2", 30.0, TIMINGS)
    assert ev == [] and "held" not in st
    st, ev = presence.step(st, "chair-2", 33.0, TIMINGS)
    assert kinds(ev) == [("enter", "chair-2")]


def test_a_dark_zone_is_entered_by_nobody():
    st, ev = {}, []
    for t in range(10):
        st, ev = presence.step(st, "chair-1", float(t), TIMINGS, frozenset({"chair-1"}))
        assert ev == [] and st.get("zone") is None
    st, _ = presence.step(st, "chair-2", 10.0, TIMINGS, frozenset({"chair-1"}))
    st, ev = presence.step(st, "chair-2", 13.0, TIMINGS, frozenset({"chair-1"}))
    assert kinds(ev) == [("enter", "chair-2")]  # a zone whose scanners hear still works


def test_the_sweeper_ends_a_presence_in_a_dark_zone_of_someone_still_heard():
    st, _ = presence.step({}, "chair-1", 0.0, TIMINGS)
    st, _ = presence.step(st, "chair-1", 3.0, TIMINGS)
    kept, ev = presence.sweep(st, 5.0, TIMINGS, frozenset({"chair-1"}))
    assert [(e.kind, e.zone, e.reason, e.at) for e in ev] == [
        ("exit", "chair-1", presence.SCANNER_SILENT, 5.0)
    ]
    assert kept is not None and kept.get("zone") is None and kept["held"] == "chair-1"
    assert presence.sweep(kept, 6.0, TIMINGS, frozenset({"chair-1"})) == (kept, [])
    assert presence.sweep(kept, 9.0, TIMINGS, frozenset({"chair-1"}))[0] is None  # not heard


def test_a_hold_outlasts_a_stale_copy_of_the_dark_zones():
    # Ingest's copy of the dark zones may be read before the zone went dark: released on it,
    # the hold would let the neighbours' readings move her next door after all.
    st, _ = presence.step({}, "chair-1", 0.0, TIMINGS)
    st, _ = presence.step(st, "chair-1", 3.0, TIMINGS)
    st, ev = presence.sweep(st, 4.0, TIMINGS, frozenset({"chair-1"}))
    assert st["held"] == "chair-1"
    for t in (5.0, 6.0):  # a copy from before the zone went dark
        st, ev = presence.step(st, "chair-2", t, TIMINGS)
        assert ev == [] and st["held"] == "chair-1"
    st, ev = presence.step(st, "chair-2", 7.0, TIMINGS)  # lit for real, three seconds on
    assert "held" not in st
