"""Site-survey calibration: per-scanner path loss and the reference fingerprints, as JSON."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from store_server.positioning import pathloss
from store_server.positioning.fingerprint import reference_fingerprints

HEIGHTS_M = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)
# Directional antenna gain per scanner: Fourier terms of the bearing, ridge-shrunk to isotropic.
ANTENNA_HARMONICS = 0
ANTENNA_RIDGE = 5.0
# A survey map's errors are spatially correlated: an emitter lingering near a badly mapped spot
# sees the same error second after second, which independent-reading evidence would count anew
# each time. Its likelihood is tempered (measured: LOTO and the simulated rooms both gain).
SURVEY_TEMPER = 0.7


def fit(
    scanners: dict[str, tuple[float, float]],
    survey: pd.DataFrame,
    params: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Calibration dict (JSON-serialisable) fitted from a survey with known positions."""
    df = survey.assign(scanner=survey["scanner"].astype(str), emitter=survey["emitter"].astype(str))
    df = df.dropna(subset=["ts", "rssi", "x", "y"])
    df = df.loc[df["scanner"].isin(list(scanners))]
    params = dict(params or {})
    params.setdefault("temper", SURVEY_TEMPER)
    if "height_m" not in params:
        params["height_m"] = fit_height(df, scanners)
    height = float(params["height_m"])
    names = list(scanners)
    pooled = (pathloss.DEFAULT_RSSI_1M, pathloss.DEFAULT_N)
    pooled_scale = None
    if len(df) >= 20:
        d_all = _distances(df, scanners, height)
        a, n, pooled_scale, _ = pathloss.fit(d_all, df["rssi"].to_numpy(float), prior_weight=5.0)
        pooled = (a, n)
    fitted: dict[str, list[float]] = {}
    for s in names:
        sub = df.loc[df["scanner"] == s]
        if len(sub) < 5:
            # A scanner the survey barely heard (added later, or offline that day) still gets
            # the venue's pooled path loss rather than textbook values.
            if pooled_scale is not None:
                fitted[s] = [round(pooled[0], 3), round(pooled[1], 4), round(pooled_scale, 3)]
            continue
        a, n, scale, gains = pathloss.fit(
            _distances(sub, scanners, height),
            sub["rssi"].to_numpy(float),
            pooled,
            prior_weight=float(params.get("n_prior_weight", 20.0)),
            bearing=_bearings(sub, scanners),
            harmonics=int(params.get("antenna_harmonics", ANTENNA_HARMONICS)),
            gain_weight=float(params.get("antenna_ridge", ANTENNA_RIDGE)),
        )
        fitted[s] = [round(a, 3), round(n, 4), round(scale, 3)] + [round(g, 3) for g in gains]
    pos, rssi = reference_fingerprints(df, names)
    return {
        "version": 1,
        "pathloss": fitted,
        "fingerprints": {
            "scanners": names,
            "pos": np.round(pos, 3).tolist(),
            "rssi": [[None if np.isnan(v) else round(float(v), 2) for v in row] for row in rssi],
        },
        "params": params,
    }


def fit_height(
    df: pd.DataFrame,
    scanners: dict[str, tuple[float, float]],
    candidates: tuple[float, ...] = HEIGHTS_M,
) -> float:
    """Height gap between scanners and emitters that best explains the survey's path loss.

    Scanners are often mounted high; near one, the horizontal distance goes to 0 but the radio
    distance does not. Chosen by measurement, so a venue with scanners at hand height gets 0."""
    if len(df) < 50:
        return 0.0
    best, best_err = 0.0, np.inf
    for h in candidates:
        err = 0.0
        for s in scanners:
            sub = df.loc[df["scanner"] == s]
            if len(sub) < 5:
                continue
            d = _distances(sub, scanners, h)
            a, n, _, _ = pathloss.fit(d, sub["rssi"].to_numpy(float), prior_weight=1.0)
            r = sub["rssi"].to_numpy(float) - pathloss.expected_rssi(d, a, n)
            err += float(np.sum(np.minimum(r**2, 100.0)))
        if err < best_err - 1e-9:
            best, best_err = h, err
    return best


def _distances(
    df: pd.DataFrame, scanners: dict[str, tuple[float, float]], height: float = 0.0
) -> np.ndarray:
    sx = df["scanner"].map(lambda s: scanners[s][0]).to_numpy(float)
    sy = df["scanner"].map(lambda s: scanners[s][1]).to_numpy(float)
    d = np.hypot(df["x"].to_numpy(float) - sx, df["y"].to_numpy(float) - sy)
    return np.hypot(d, height)


def _bearings(df: pd.DataFrame, scanners: dict[str, tuple[float, float]]) -> np.ndarray:
    sx = df["scanner"].map(lambda s: scanners[s][0]).to_numpy(float)
    sy = df["scanner"].map(lambda s: scanners[s][1]).to_numpy(float)
    return np.arctan2(df["y"].to_numpy(float) - sy, df["x"].to_numpy(float) - sx)
