"""The survey report's coverage: how much of each zone the installer walked near, and where to
walk next (pure functions, and the shared real survey)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from shapely.geometry import box

from store_server.positioning.report import COVERED_M, survey_coverage
from store_server.positioning.venue import load_readings, load_zones


def _walk(points: list[tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts": range(len(points)),
            "scanner": "s",
            "emitter": "e",
            "rssi": -60.0,
            "x": [p[0] for p in points],
            "y": [p[1] for p in points],
        }
    )


def test_coverage_is_the_share_walked_near_and_the_gap_the_spot_furthest_from_the_walk():
    # A 4 x 4 m room walked along y = 0.5: within 1.5 m of it lies y <= 2, half the room.
    room = box(0.0, 0.0, 4.0, 4.0)
    walk = _walk([(x / 10, 0.5) for x in range(41)])
    got = survey_coverage({"room": room, "attic": box(0.0, 10.0, 3.0, 13.0)}, walk)
    assert abs(got["room"]["covered"] - 0.5) < 0.04
    assert 3.2 < got["room"]["gap_m"] < 3.5 and got["room"]["gap_at"][1] > 3.7
    # Nobody went into the attic: none of it is covered, and its far corner is the gap.
    assert got["attic"]["covered"] == 0.0 and got["attic"]["gap_m"] > 12.0
    assert COVERED_M == 1.5


def test_a_zone_smaller_than_the_grid_and_a_survey_without_positions_are_reported():
    tiny = box(1.0, 1.0, 1.1, 1.1)
    got = survey_coverage({"tiny": tiny}, _walk([(1.05, 1.05)]))
    # (positions are pooled to an eighth of a metre: a slow walk repeats them)
    assert got["tiny"]["covered"] == 1.0 and got["tiny"]["gap_m"] < 0.1
    assert got["tiny"]["gap_at"] == [1.05, 1.05]
    none = survey_coverage({"room": box(0, 0, 2, 2)}, _walk([]))
    assert none["room"]["covered"] == 0.0 and none["room"]["gap_m"] is None


def test_the_shared_survey_left_the_far_third_unwalked(shared_data: Path):
    # The unseen walks (bench --unseen) were placed 5-6.5 m off in A3, where nobody surveyed:
    # the report points the installer there, and at C3, which no survey track entered.
    folder = shared_data / "ble" / "position-annotated"
    zones = load_zones(folder / "zones.geojson")
    survey = load_readings(folder / "survey.csv", positions=True)
    got = survey_coverage(zones, survey)
    assert set(got) == set(zones)
    worst = sorted(got, key=lambda z: got[z]["covered"])[:2]
    assert set(worst) == {"A3", "C3"}, got
    assert got["C3"]["covered"] < 0.05 and got["A3"]["covered"] < 0.2
    assert all(z["gap_m"] > 2.0 for z in got.values())
    assert min(z["covered"] for z in got.values() if z is not got["C3"]) > 0.1
