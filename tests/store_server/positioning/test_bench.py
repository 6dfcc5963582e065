"""bench/positioning.py's error breakdown by seconds since each track's start."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[3]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_positioning", REPO / "bench/positioning.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_by_start_bins_each_track_from_its_own_first_second() -> None:
    bench = _bench()
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
