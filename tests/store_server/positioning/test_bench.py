"""bench/positioning.py's error breakdown by seconds since each track's start, its crossing
delays, and the real walks its --unseen mode scores."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
from shapely.geometry import box


def test_by_start_bins_each_track_from_its_own_first_second(bench: ModuleType) -> None:
    # Two tracks 100 s apart; the walker stands at (0, 0) and the estimate is 3 m off for the
    # first 5 s of each track, 1 m off until 10 s, then 0.5 m off.
    ts = np.concatenate([np.arange(0.0, 30.0), np.arange(130.0, 160.0)])
    survey = pd.DataFrame({"ts": ts, "x": 0.0, "y": 0.0, "emitter": "e"})
    trk = bench.tracks(survey)
    assert trk.tolist() == [0] * 30 + [1] * 30
    preds = []
    for k in (0, 1):
        t = ts[trk == k]
        since = t - t[0]
        off = np.where(since < 5, 3.0, np.where(since < 10, 1.0, 0.5))
        preds.append(pd.DataFrame({"ts": t, "emitter": "e", "x": off, "y": 0.0, "zone": ""}))
    out = bench.by_start(survey, trk, preds)
    assert out == {"0-5": 3.0, "5-10": 1.0, "10-20": 0.5, "20+": 0.5}


def test_crossing_delays_count_seconds_until_the_estimate_enters_the_room(
    bench: ModuleType,
) -> None:
    zones = {"a": box(0, 0, 4, 4), "b": box(4, 0, 8, 4), "c": box(8, 0, 12, 4)}
    # The walker crosses into b at t = 10.5 and into c at t = 20.5, then stays in c.
    path = pd.DataFrame(
        {"ts": [0.0, 10.0, 11.0, 20.0, 21.0, 40.0], "x": [2.0, 3.5, 4.5, 7.5, 8.5, 10.0], "y": 2.0}
    )
    ts = np.arange(0.0, 41.0)
    # The estimate enters b 2 s late and reaches c at t = 25, 4 s late.
    zone = np.where(ts < 13, "a", np.where(ts < 25, "b", "c"))
    pred = pd.DataFrame({"ts": ts, "emitter": "e", "x": 0.0, "y": 0.0, "zone": zone})
    assert bench.crossing_delays(zones, path, pred) == [2, 4]
    # A room the estimate skips while the walker is in it counts as missed, not as a delay.
    skip = np.where(ts < 21, "a", "c")
    pred = pred.assign(zone=skip)
    assert bench.crossing_delays(zones, path, pred) == [None, 0]


def test_the_unseen_walks_are_survey_shaped_and_not_in_the_survey(
    bench: ModuleType, shared_data: Path
) -> None:
    from store_server.positioning.venue import load_readings, load_scanners, load_zones, zone_of

    data = shared_data / "ble" / "position-annotated"
    zones = load_zones(data / "zones.geojson")
    scanners = set(load_scanners(data / "scanners.csv"))
    survey = load_readings(data / "survey.csv", positions=True)
    for name in bench.UNSEEN_WALKS:
        walk = load_readings(bench.UNSEEN / f"{name}.csv", positions=True)
        assert len(walk) > 1000 and walk["emitter"].unique().tolist() == ["e78f135624ce"]
        assert set(walk["scanner"]) <= scanners and walk["rssi"].between(-110, -40).all()
        assert walk["ts"].is_monotonic_increasing and walk["ts"].diff().max() < 1.0
        # the true zone is the one evaluate derives from the true position
        assert walk["zone"].tolist() == zone_of(walk["x"], walk["y"], zones)
        # a walk of its own: no survey reading falls within its span
        inside = survey["ts"].between(walk["ts"].min() - 5.0, walk["ts"].max() + 5.0)
        assert not inside.any(), name
