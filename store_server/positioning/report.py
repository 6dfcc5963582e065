"""Per-zone accuracy of a calibration, measured by leaving out one survey track at a time."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from shapely.geometry.base import BaseGeometry

from store_server.positioning.evaluate import evaluate, matches
from store_server.positioning.live import VenueModel
from store_server.positioning.predict import predict

TRACK_GAP_S = 5.0


def survey_tracks(survey: pd.DataFrame) -> np.ndarray:
    """Track number per row (a track ends where ts jumps by more than 5 s); halves if only one."""
    ts = survey["ts"].to_numpy(float)
    trk = np.concatenate([[0], np.cumsum(np.diff(ts) > TRACK_GAP_S)]) if ts.size else ts
    if ts.size and trk.max() == 0:
        trk = (ts > np.median(ts)).astype(int)
    return trk.astype(int)


def zone_accuracy_report(
    scanners: dict[str, tuple[float, float]],
    zones: dict[str, BaseGeometry],
    survey: pd.DataFrame,
    params: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Leave-one-track-out figures overall and per true zone: what an installer can expect."""
    survey = survey.sort_values("ts", kind="stable").reset_index(drop=True)
    trk = survey_tracks(survey)
    preds, truths = [], []
    for k in np.unique(trk):
        train, test = survey.loc[trk != k], survey.loc[trk == k]
        if train.empty or test.empty:
            continue
        model = VenueModel.calibrate(scanners, zones, train, params)
        pred, _ = predict(model, test.drop(columns=["x", "y", "zone"], errors="ignore"))
        preds.append(pred)
        truths.append(test)
    if not preds:
        return {"tracks": 0}
    pred = pd.concat(preds, ignore_index=True)
    truth = pd.concat(truths, ignore_index=True)
    overall = evaluate(zones, truth, pred)
    per_zone: dict[str, dict[str, float | int]] = {}
    # Matched as evaluate matches: each emitter's estimate to its own truth row nearby.
    est: list[str] = []
    true_zone: list[str | None] = []
    for p, _tx, _ty, ok, zs in matches(zones, truth, pred):
        est += [str(e) for e, k in zip(p["zone"].fillna(""), ok, strict=True) if k]
        true_zone += [z for z, k in zip(zs, ok, strict=True) if k]
    for name in zones:
        hit = [e == name for e, t in zip(est, true_zone, strict=True) if t == name]
        if hit:
            per_zone[name] = {"seconds": len(hit), "accuracy": round(float(np.mean(hit)), 3)}
    return {"tracks": len(preds), "overall": overall, "zones": per_zone}
