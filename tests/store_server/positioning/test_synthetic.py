"""Generalisation check on a simulated flat: real-room zones, walls, another scanner layout."""

from __future__ import annotations

import itertools
from types import ModuleType

import pandas as pd
import pytest
from shapely.geometry import LineString, Point, box

from store_server.positioning import drift, simulate
from store_server.positioning.evaluate import evaluate
from store_server.positioning.live import VenueModel
from store_server.positioning.predict import predict
from store_server.positioning.report import zone_accuracy_report


def test_rooms_venue_reaches_presence_grade_accuracy() -> None:
    venue = simulate.flat()
    survey = venue.readings(simulate.survey_path(), emitter="installer", seed=1)
    model = VenueModel.calibrate(venue.scanners, venue.zones, survey)
    scores = []
    for seed in (2, 3):
        visit = venue.readings(simulate.visit_path(), emitter="guest", seed=seed)
        pred, _ = predict(model, visit.drop(columns=["x", "y"]))
        scores.append(evaluate(venue.zones, visit, pred))
    for s in scores:
        assert s["zone_accuracy"] >= 0.88, s
        assert s["flaps_per_min"] <= 0.8, s
        assert s["median_error_m"] <= 0.9, s
    assert sum(s["zone_accuracy"] for s in scores) / len(scores) >= 0.92, scores


def test_a_drift_earlier_visitors_learnt_places_the_next_one_better() -> None:
    """A new track starts from the drift the venue's earlier tracks learnt (live: published by
    the jobs; predict: the emitters heard before it in the recording). On a day when four
    scanners read 3-6 dB off the survey, a visitor placed from it is placed better than one who
    must find the drift out alone."""
    venue = simulate.flat()
    survey = venue.readings(simulate.survey_path(), emitter="installer", seed=1)
    model = VenueModel.calibrate(venue.scanners, venue.zones, survey)
    shifted = {"kit-1": 6.0, "liv-b": -5.0, "bath": 4.0, "liv-a": -3.0}
    span = float(simulate.visit_path()["ts"].iloc[-1] - simulate.visit_path()["ts"].iloc[0])
    earlier = pd.concat(
        venue.readings(
            simulate.visit_path(t0=1_700_010_000.0 - span - 60.0),
            emitter=f"earlier-{s}",
            seed=s,
            drift=shifted,
        )
        for s in (12, 13, 14)
    )
    _, learnt = predict(model, earlier.drop(columns=["x", "y"]))
    seed = drift.venue_seed(drift.per_scanner(list(learnt.values())))
    assert seed["kit-1"][0] > 1.5 and seed["liv-b"][0] < -1.5  # learnt, if only in part
    alone, helped, started = [], [], []
    for s in (2, 3, 4):
        visit = venue.readings(simulate.visit_path(), emitter="guest", seed=s, drift=shifted)
        recording = visit.drop(columns=["x", "y"])
        alone.append(evaluate(venue.zones, visit, predict(model, recording)[0]))
        both = pd.concat([earlier.drop(columns=["x", "y"]), recording])
        pred = predict(model, both)[0]
        helped.append(evaluate(venue.zones, visit, pred.loc[pred["emitter"] == "guest"]))
        # The same start, given explicitly (what the bench's earlier drift amounts to).
        started.append(evaluate(venue.zones, visit, predict(model, recording, {"o": seed})[0]))
    mean = lambda scores, k: sum(x[k] for x in scores) / len(scores)  # noqa: E731
    assert mean(helped, "zone_accuracy") > mean(alone, "zone_accuracy") + 0.01
    assert mean(helped, "median_error_m") < mean(alone, "median_error_m")
    # Within the aim for unseen venues (<= 0.5 flaps/min): the zone follows a walker's agile
    # filter, and one doorway crossing more or less in three visits is not the point here.
    assert mean(helped, "flaps_per_min") <= 0.5
    assert mean(started, "zone_accuracy") == pytest.approx(mean(helped, "zone_accuracy"), abs=0.01)


def test_tracks_starting_together_or_long_after_the_others_are_not_seeded_by_them() -> None:
    venue = simulate.flat()
    survey = venue.readings(simulate.survey_path(), emitter="installer", seed=1)
    model = VenueModel.calibrate(venue.scanners, venue.zones, survey)
    shifted = {"kit-1": 6.0, "liv-b": -5.0}
    visits = [
        venue.readings(simulate.visit_path(), emitter=f"v{s}", seed=s, drift=shifted)
        for s in (2, 3, 4, 5)
    ]
    recording = pd.concat(visits).drop(columns=["x", "y"])
    together, _ = predict(model, recording)
    for v in visits:  # four visits starting in the same second: none learns from the others
        name = v["emitter"].iloc[0]
        alone, _ = predict(model, v.drop(columns=["x", "y"]))
        pd.testing.assert_frame_equal(
            together.loc[together["emitter"] == name].reset_index(drop=True), alone
        )
    # A fifth an hour later: what the four learnt is forgotten (drift.SEED_MEMORY_S).
    late = venue.readings(simulate.visit_path(t0=1_700_020_000.0), emitter="late", seed=6)
    assert late["ts"].min() - recording["ts"].max() > drift.SEED_MEMORY_S
    pred, _ = predict(model, pd.concat([recording, late.drop(columns=["x", "y"])]))
    alone, _ = predict(model, late.drop(columns=["x", "y"]))
    pd.testing.assert_frame_equal(pred.loc[pred["emitter"] == "late"].reset_index(drop=True), alone)


def test_a_track_silent_longer_than_the_memory_seeds_nobody_even_if_heard_again_later() -> None:
    # Three visitors learn a drift, leave, and come back long after a newcomer arrived. Once,
    # the newcomer started from their drift because they were heard again later: its rows up
    # to a second depended on readings after it, and cutting the recording there changed them.
    venue = simulate.flat()
    survey = venue.readings(simulate.survey_path(), emitter="installer", seed=1)
    model = VenueModel.calibrate(venue.scanners, venue.zones, survey)
    shifted = {"kit-1": 5.0, "liv-a": -4.0, "bath": 6.0, "liv-b": 3.0}
    t0 = 1_700_010_000.0
    visits = [
        venue.readings(
            simulate.walk([(2, 2), (10, 2), (2, 8)], speed=0.7, t0=t0 + back + i),
            emitter=f"regular-{i}",
            drift=shifted,
            seed=10 + i + back,
        )
        for i in range(3)
        for back in (0, 2000)
    ]
    newcomer = venue.readings(
        simulate.walk([(2, 8), (10, 5)], speed=0.7, t0=t0 + 1000), "newcomer", drift=shifted
    )
    assert newcomer["ts"].min() - t0 - 40 > drift.SEED_MEMORY_S  # the regulars' silence
    recording = pd.concat([*visits, newcomer]).drop(columns=["x", "y"])
    recording = recording.sort_values("ts", kind="stable").reset_index(drop=True)
    full, _ = predict(model, recording)
    cut = t0 + 1500
    head, _ = predict(model, recording.loc[recording["ts"] <= cut])
    alone, _ = predict(model, newcomer.drop(columns=["x", "y"]))
    for pred in (full, head):
        got = pred.loc[pred["emitter"] == "newcomer"].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, alone)


def test_a_venue_of_rooms_far_apart_places_a_visitor_in_the_room_she_is_in() -> None:
    # Two shops of one venue 600 m apart: the grid once spread its cells over the empty square
    # between them, the far shop held none, and a visitor standing in it was in no zone.
    far = 600.0
    venue = simulate.Venue(
        scanners={"west": (1.5, 1.5), "east": (far + 1.5, far + 1.5)},
        zones={"west": box(0, 0, 3, 3), "east": box(far, far, far + 3, far + 3)},
        walls=[],
    )
    loop = [(0.5, 0.5), (2.5, 0.5), (2.5, 2.5), (0.5, 2.5), (0.5, 0.5)]
    walks = [
        simulate.walk([(x + d, y + d) for x, y in loop], speed=0.5, t0=1_700_000_000.0 + d)
        for d in (0.0, far)
    ]
    survey = venue.readings(pd.concat(walks, ignore_index=True), emitter="installer", seed=1)
    model = VenueModel.calibrate(venue.scanners, venue.zones, survey)
    path = simulate.walk([(far + 1, far + 1), (far + 2, far + 2)], speed=0.05, t0=1_700_010_000.0)
    visit = venue.readings(path, emitter="guest", seed=2)
    pred, _ = predict(model, visit.drop(columns=["x", "y"]))
    scores = evaluate(venue.zones, visit, pred)
    assert scores["zone_accuracy"] >= 0.9 and scores["median_error_m"] < 0.8, scores


def test_calibration_beats_textbook_defaults_and_reports_per_zone() -> None:
    venue = simulate.flat()
    survey = venue.readings(simulate.survey_path(), emitter="installer", seed=1)
    visit = venue.readings(simulate.visit_path(), emitter="guest", seed=4)
    calibrated = VenueModel.calibrate(venue.scanners, venue.zones, survey)
    textbook = VenueModel.uncalibrated(venue.scanners, venue.zones)
    got = [
        evaluate(venue.zones, visit, predict(m, visit.drop(columns=["x", "y"]))[0])
        for m in (calibrated, textbook)
    ]
    assert got[0]["median_error_m"] < got[1]["median_error_m"]
    assert got[0]["zone_accuracy"] > got[1]["zone_accuracy"]
    report = zone_accuracy_report(venue.scanners, venue.zones, survey)
    assert report["tracks"] == 2
    assert set(report["zones"]) == set(venue.zones)
    assert all(0.0 <= z["accuracy"] <= 1.0 and z["seconds"] > 0 for z in report["zones"].values())


def _crosses_a_wall(grid: simulate.RoomGrid, path: pd.DataFrame) -> bool:
    xy = path[["x", "y"]].to_numpy(float)
    legs = [LineString([a, b]) for a, b in itertools.pairwise(xy) if any(a != b)]
    return any(leg.crosses(wall) for leg in legs for wall in grid.venue.walls)


def test_random_room_venues_are_walked_through_their_doors() -> None:
    grid = simulate.room_grid(7, rows=2, cols=3, per_room=(1, 2))
    venue = grid.venue
    assert len(venue.zones) == 6 and len(grid.doors) == 7
    for name, (x, y) in venue.scanners.items():
        assert venue.zones[name.split("-")[0]].contains(Point(x, y)), name
    survey = grid.survey_path()
    visited = {
        z
        for z, room in venue.zones.items()
        for x, y in survey[["x", "y"]].to_numpy()
        if room.contains(Point(x, y))
    }
    assert visited == set(venue.zones)
    visit = grid.visit_path(seed=3)
    assert visit["ts"].is_monotonic_increasing
    assert not _crosses_a_wall(grid, survey) and not _crosses_a_wall(grid, visit)
    # The same seed draws the same venue and walk: the bench's figures can be reproduced.
    again = simulate.room_grid(7, rows=2, cols=3, per_room=(1, 2))
    assert again.venue.scanners == venue.scanners
    pd.testing.assert_frame_equal(again.visit_path(seed=3), visit)


def test_random_room_venues_reach_presence_grade_accuracy() -> None:
    # Two venues the defaults were never tuned on (bench/positioning.py --rooms scores twelve).
    scores = []
    for seed, (rows, cols), per_room in ((30, (2, 2), (2, 2)), (2, (2, 3), (1, 2))):
        grid = simulate.room_grid(seed, rows, cols, per_room)
        venue = grid.venue
        survey = venue.readings(grid.survey_path(), emitter="installer", seed=seed + 100)
        model = VenueModel.calibrate(venue.scanners, venue.zones, survey)
        path = grid.visit_path(seed * 10)
        visit = venue.readings(path, emitter="guest", seed=seed * 10)
        pred, _ = predict(model, visit.drop(columns=["x", "y"]))
        scores.append(evaluate(venue.zones, visit, pred))
    for s in scores:
        assert s["zone_accuracy"] >= 0.9, s
        assert s["flaps_per_min"] <= 0.5, s


def test_the_zone_follows_a_walker_through_a_door_sooner(bench: ModuleType) -> None:
    """While the steady filter sees a walk, the zone follows a second, agile filter: through a
    door it enters the next room sooner than the steady filter alone would let it."""
    delays: dict[str, list[int]] = {"agile": [], "steady": []}
    accuracy: dict[str, list[float]] = {"agile": [], "steady": []}
    for seed, (rows, cols), per_room in ((30, (2, 2), (2, 2)), (21, (3, 3), (1, 1))):
        grid = simulate.room_grid(seed, rows, cols, per_room)
        venue = grid.venue
        survey = venue.readings(grid.survey_path(), emitter="installer", seed=seed + 100)
        for name, params in (("agile", {}), ("steady", {"walk_accel_mps2": 0.0})):
            model = VenueModel.calibrate(venue.scanners, venue.zones, survey, params)
            for k in range(2):
                path = grid.visit_path(seed * 10 + k)
                visit = venue.readings(path, emitter="guest", seed=seed * 10 + k)
                pred, _ = predict(model, visit.drop(columns=["x", "y"]))
                delays[name] += [
                    d for d in bench.crossing_delays(venue.zones, path, pred) if d is not None
                ]
                accuracy[name].append(evaluate(venue.zones, visit, pred)["zone_accuracy"])
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    # Measured: 1.71 s against 2.26 s, accuracy 0.933 against 0.914 (bench/positioning.py
    # --rooms: 1.91 against 2.33 s).
    assert mean(delays["agile"]) < mean(delays["steady"]) - 0.25, delays
    assert mean(accuracy["agile"]) > mean(accuracy["steady"]), accuracy


def test_the_agile_filter_decides_the_zone_only_while_walking() -> None:
    """A visitor standing still keeps the steady filter's zone: an agile estimate wanders with
    the noise and, where drifted scanners pull it towards a wall, across it and back."""
    venue = simulate.flat()
    survey = venue.readings(simulate.survey_path(), emitter="installer", seed=1)
    shifted = {"kit-1": 6.0, "liv-b": -5.0, "bath": 4.0, "liv-a": -3.0}
    flaps: dict[str, float] = {}
    for name, params in (("walking", {}), ("always", {"walk_mps": 0.0})):
        model = VenueModel.calibrate(venue.scanners, venue.zones, survey, params)
        flaps[name] = 0.0
        for s in (2, 3, 4):
            visit = venue.readings(simulate.visit_path(), emitter="guest", seed=s, drift=shifted)
            pred, _ = predict(model, visit.drop(columns=["x", "y"]))
            flaps[name] += evaluate(venue.zones, visit, pred)["flaps_per_min"]
    # Measured: 0.6 against 1.9 flaps per minute, summed over the three visits.
    assert flaps["walking"] < flaps["always"] - 1.0, flaps
