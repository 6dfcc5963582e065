"""Per-zone accuracy of a calibration, measured by leaving out one survey track at a time, and
how much of each zone the survey walked near."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry
from sklearn.neighbors import NearestNeighbors

from store_server.positioning.calibration import survey_tracks
from store_server.positioning.evaluate import evaluate, matches
from store_server.positioning.live import VenueModel
from store_server.positioning.predict import predict

# Surveyed, for the radio map: within about two of its kernel's widths (engine: bandwidth_m
# 0.7) of a position the installer walked. Further out the map is path loss extrapolated, and
# real walks there were placed 5–6.5 m off (bench --unseen, positioning README).
COVERED_M = 1.5
GAP_STEP_M = 0.25
GAP_MAX_POINTS = 20_000


def survey_coverage(
    zones: dict[str, BaseGeometry], survey: pd.DataFrame, reach_m: float = COVERED_M
) -> dict[str, dict[str, Any]]:
    """Per zone, how much of it the survey walked near (`covered`: the share of its area within
    `reach_m` of a surveyed position) and its spot furthest from any (`gap_m` at `gap_at`):
    where the installer should walk next."""
    pos = survey[["x", "y"]].dropna().to_numpy(float)
    # Half a step of rounding: a slow walk repeats positions, which say nothing more.
    pos = np.unique(np.round(pos / (GAP_STEP_M / 2)), axis=0) * (GAP_STEP_M / 2)
    nearest = NearestNeighbors(n_neighbors=1).fit(pos) if len(pos) else None
    out: dict[str, dict[str, Any]] = {}
    for name, poly in zones.items():
        pts = _inside(poly)
        if nearest is None:
            d = np.full(len(pts), np.inf)
        else:
            d = nearest.kneighbors(pts, return_distance=True)[0][:, 0]
        far = int(np.argmax(d))
        out[name] = {
            "covered": round(float(np.mean(d <= reach_m)), 3),
            "gap_m": round(float(d[far]), 2) if np.isfinite(d[far]) else None,
            "gap_at": [round(float(pts[far, 0]), 2), round(float(pts[far, 1]), 2)],
        }
    return out


def _inside(poly: BaseGeometry) -> np.ndarray:
    """Points of a regular grid inside the zone (its representative point if none): a few
    centimetres to a few decimetres apart, at most GAP_MAX_POINTS."""
    x0, y0, x1, y1 = poly.bounds
    step = max(GAP_STEP_M, float(np.sqrt(max(poly.area, 1e-9) / GAP_MAX_POINTS)))
    xs = np.arange(x0 + step / 2, x1, step)
    ys = np.arange(y0 + step / 2, y1, step)
    gx, gy = (a.ravel() for a in np.meshgrid(xs, ys))
    keep = shapely.contains_xy(poly, gx, gy)
    if not keep.any():
        p = poly.representative_point()
        return np.array([[p.x, p.y]])
    return np.column_stack([gx[keep], gy[keep]])


def zone_accuracy_report(
    scanners: dict[str, tuple[float, float]],
    zones: dict[str, BaseGeometry],
    survey: pd.DataFrame,
    params: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Leave-one-track-out figures overall and per true zone: what an installer can expect.
    The survey's time shift (calibration.best_shift) is searched once, on the whole survey,
    unless `params` gives it (the calibrated model's): a search per fold would cost each fold a
    map per walk and per shift tried, seconds in the setup page's request."""
    survey = survey.sort_values("ts", kind="stable").reset_index(drop=True)
    params = dict(params or {})
    if "survey_shift_s" not in params:
        params["survey_shift_s"] = VenueModel.calibrate(
            scanners, zones, survey, params
        ).survey_shift_s
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
    coverage = survey_coverage(zones, survey)
    if not preds:
        return {"tracks": 0, "coverage": coverage}
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
    return {"tracks": len(preds), "overall": overall, "zones": per_zone, "coverage": coverage}
