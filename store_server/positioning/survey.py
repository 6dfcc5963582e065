"""Survey recording: put the installer's marked positions onto a capture of sightings."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from shapely.geometry.base import BaseGeometry

from store_server.positioning.venue import MAX_COORD_M, zone_of

MAX_GAP_S = 30.0
# One separator (a comma, a semicolon or spaces) between two fields; written so that no two
# parts can match the same spaces, as overlapping ones backtrack quadratically on a long line.
_MARK = re.compile(r"\s*([^\s,;]+)(?:\s*[,;]\s*|\s+)([^\s,;]+)\s*")
MAX_MARK_LINE = 200


def record(
    sightings: pd.DataFrame,
    marks: pd.DataFrame,
    zones: dict[str, BaseGeometry] | None = None,
    emitter: str | None = None,
    max_gap_s: float = MAX_GAP_S,
) -> pd.DataFrame:
    """Survey rows `ts,scanner,emitter,rssi,x,y,zone`, positions interpolated between marks.

    Sightings outside the marked span, or between two marks further apart than max_gap_s (the
    installer stopped marking), are dropped: a guessed position would poison the calibration."""
    marks = marks.sort_values("ts", kind="stable")
    mt = marks["ts"].to_numpy(float)
    df = sightings if emitter is None else sightings.loc[sightings["emitter"] == emitter]
    ts = df["ts"].to_numpy(float)
    if mt.size == 0 or ts.size == 0:
        return pd.DataFrame(columns=["ts", "scanner", "emitter", "rssi", "x", "y", "zone"])
    after = np.searchsorted(mt, ts, side="left")
    inside = (ts >= mt[0]) & (ts <= mt[-1])
    lo = np.clip(after - 1, 0, mt.size - 1)
    hi = np.clip(after, 0, mt.size - 1)
    exact = mt[hi] == ts
    gap = np.where(exact, 0.0, mt[hi] - mt[lo])
    keep = inside & (gap <= max_gap_s)
    out = df.loc[keep, ["ts", "scanner", "emitter", "rssi"]].copy()
    out["x"] = np.round(np.interp(out["ts"], mt, marks["x"].to_numpy(float)), 3)
    out["y"] = np.round(np.interp(out["ts"], mt, marks["y"].to_numpy(float)), 3)
    found = zone_of(out["x"].to_numpy(), out["y"].to_numpy(), zones) if zones else None
    out["zone"] = [z or "" for z in found] if found is not None else ""
    return out.reset_index(drop=True)


def parse_mark(line: str) -> tuple[float, float]:
    """An installer's typed position, `x y` or `x,y` in metres; ValueError if it is not one."""
    if len(line) > MAX_MARK_LINE:
        raise ValueError(f"longer than {MAX_MARK_LINE} characters")
    m = _MARK.fullmatch(line)
    if m is None:
        raise ValueError("expected 'x y' in metres")
    x, y = float(m.group(1)), float(m.group(2))
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError("x and y must be finite")
    if abs(x) > MAX_COORD_M or abs(y) > MAX_COORD_M:
        # The bound load_marks applies: a mark kept here would make the whole file unusable.
        raise ValueError(f"x and y must be metres within ±{MAX_COORD_M:.0e}")
    return x, y
