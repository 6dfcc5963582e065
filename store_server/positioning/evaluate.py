"""Scoring of estimates against ground truth: zone accuracy, error percentiles and flaps."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pandas as pd
from shapely.geometry.base import BaseGeometry

from store_server.positioning.venue import zone_of

MATCH_WINDOW_S = 2.0
SEGMENT_GAP_S = 5.0


def _zone_label(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value)
    return text if text else None


def evaluate(
    zones: dict[str, BaseGeometry], truth: pd.DataFrame, predictions: pd.DataFrame
) -> dict[str, float | int | None]:
    """Score predictions (`ts,emitter,x,y,zone`) against truth (`ts,emitter,x,y`)."""
    errors: list[np.ndarray] = []
    hits = scored = 0
    flaps = 0
    minutes = 0.0
    for pred, tx, ty, ok, true_zone in matches(zones, truth, predictions):
        px = pred["x"].to_numpy(float)
        py = pred["y"].to_numpy(float)
        pzone = [_zone_label(z) for z in pred["zone"].tolist()]
        err = np.hypot(px - tx, py - ty)[ok]
        errors.append(err[np.isfinite(err)])
        same = np.array([a == b for a, b in zip(pzone, true_zone, strict=True)])
        hits += int(same[ok].sum())
        scored += int(ok.sum())
        f, m = _flaps(
            pred["ts"].to_numpy(float)[ok],
            np.array(pzone, dtype=object)[ok],
            np.array(true_zone, dtype=object)[ok],
        )
        flaps += f
        minutes += m
    allerr = np.concatenate(errors) if errors else np.empty(0)
    return {
        "zone_accuracy": round(hits / scored, 4) if scored else None,
        "median_error_m": round(float(np.median(allerr)), 3) if allerr.size else None,
        "p90_error_m": round(float(np.percentile(allerr, 90)), 3) if allerr.size else None,
        "flaps_per_min": round(flaps / minutes, 3) if minutes > 0 else 0.0,
        "scored": scored,
    }


def matches(
    zones: dict[str, BaseGeometry], truth: pd.DataFrame, predictions: pd.DataFrame
) -> Iterator[tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, list[str | None]]]:
    """Per emitter: its estimates by time, the matched truth x and y, whether each is scored
    (the same emitter's nearest truth row is within MATCH_WINDOW_S) and the true zones."""
    # Grouped once: filtering the whole truth per emitter was quadratic, minutes for a day of
    # rotating identifiers (thousands of emitters).
    truths = dict(iter(truth.groupby("emitter", sort=False)))
    for emitter, pred in predictions.groupby("emitter", sort=True):
        tru = truths.get(emitter)
        if tru is None or tru.empty or pred.empty:
            continue
        tru = tru.sort_values("ts", kind="stable")
        pred = pred.sort_values("ts", kind="stable")
        idx, ok = _nearest(tru["ts"].to_numpy(float), pred["ts"].to_numpy(float))
        tx = tru["x"].to_numpy(float)[idx]
        ty = tru["y"].to_numpy(float)[idx]
        yield pred, tx, ty, ok, zone_of(tx, ty, zones)


def _nearest(truth_ts: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos = np.searchsorted(truth_ts, ts)
    lo = np.clip(pos - 1, 0, len(truth_ts) - 1)
    hi = np.clip(pos, 0, len(truth_ts) - 1)
    pick = np.where(np.abs(truth_ts[hi] - ts) < np.abs(truth_ts[lo] - ts), hi, lo)
    return pick, np.abs(truth_ts[pick] - ts) <= MATCH_WINDOW_S


def _flaps(ts: np.ndarray, est: np.ndarray, true: np.ndarray) -> tuple[int, float]:
    """Excess estimated zone changes over true ones, per continuous segment, and the minutes."""
    if ts.size == 0:
        return 0, 0.0
    cuts = np.flatnonzero(np.diff(ts) > SEGMENT_GAP_S) + 1
    flaps = 0
    minutes = 0.0
    for seg in np.split(np.arange(ts.size), cuts):
        e = est[seg]
        t = true[seg]
        est_changes = int(sum(a != b for a, b in itertools.pairwise(e)))
        true_changes = int(sum(a != b for a, b in itertools.pairwise(t)))
        flaps += max(0, est_changes - true_changes)
        minutes += float(ts[seg[-1]] - ts[seg[0]]) / 60.0
    return flaps, minutes
