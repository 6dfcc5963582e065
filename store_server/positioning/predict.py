"""Replay a recording through the live tracker, once per second, causally."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pandas as pd

from store_server.positioning import drift
from store_server.positioning.live import VenueModel, track


def predict(
    model: VenueModel, recording: pd.DataFrame, start: dict[str, Any] | None = None
) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """Estimates `ts,emitter,x,y,zone` per emitter and second, and the drift seen per emitter.

    The estimate stamped `ts = k` (an integer second) uses only readings with ts <= k, so the
    seconds run from the first reading's ceiling to the last reading's ceiling. Each emitter's
    track starts from `start` if given (live: the venue's drift, `drift.venue_seed`)."""
    rows: list[tuple[float, str, float, float, str]] = []
    offsets: dict[str, dict[str, float]] = {}
    for emitter, df in recording.groupby("emitter", sort=True):
        ts = df["ts"].to_numpy(float)
        scanners = df["scanner"].astype(str).to_numpy()
        rssi = df["rssi"].to_numpy(float)
        order = np.argsort(ts, kind="stable")
        ts, scanners, rssi = ts[order], scanners[order], rssi[order]
        state: dict[str, Any] | None = copy.deepcopy(start) if start else None
        last: tuple[float, float, str] | None = None
        start = 0
        for k in range(math.ceil(ts[0]), math.ceil(ts[-1]) + 1):
            stop = int(np.searchsorted(ts, k, side="right"))
            batch = list(
                zip(
                    ts[start:stop].tolist(),
                    scanners[start:stop].tolist(),
                    rssi[start:stop].tolist(),
                    strict=True,
                )
            )
            start = stop
            state, est = track(model, state, batch, float(k))
            if est is not None:
                last = (round(est.x, 3), round(est.y, 3), est.zone or "")
            if last is not None:
                rows.append((float(k), str(emitter), *last))
        offsets[str(emitter)] = drift.learnt_offsets(state or {})
    out = pd.DataFrame(rows, columns=["ts", "emitter", "x", "y", "zone"])
    return out, offsets


def drift_report(offsets: dict[str, dict[str, float]]) -> dict[str, float]:
    """Venue-level drift per scanner (dB, live minus survey) from the emitters' adapted offsets."""
    return drift.summarise(list(offsets.values()))
