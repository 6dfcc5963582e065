"""Site-survey calibration: per-scanner path loss and the reference fingerprints, as JSON."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from store_server.positioning import pathloss
from store_server.positioning.fingerprint import reference_fingerprints


def fit(
    scanners: dict[str, tuple[float, float]],
    survey: pd.DataFrame,
    params: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Calibration dict (JSON-serialisable) fitted from a survey with known positions."""
    df = survey.loc[survey["scanner"].isin(list(scanners))]
    names = list(scanners)
    pooled = (pathloss.DEFAULT_RSSI_1M, pathloss.DEFAULT_N)
    if len(df) >= 20:
        d_all = _distances(df, scanners)
        a, n, _ = pathloss.fit(d_all, df["rssi"].to_numpy(float), prior_weight=5.0)
        pooled = (a, n)
    fitted: dict[str, list[float]] = {}
    for s in names:
        sub = df.loc[df["scanner"] == s]
        if len(sub) < 5:
            continue
        a, n, scale = pathloss.fit(
            _distances(sub, scanners),
            sub["rssi"].to_numpy(float),
            pooled,
            prior_weight=float((params or {}).get("n_prior_weight", 20.0)),
        )
        fitted[s] = [round(a, 3), round(n, 4), round(scale, 3)]
    pos, rssi = reference_fingerprints(df, names)
    return {
        "version": 1,
        "pathloss": fitted,
        "fingerprints": {
            "scanners": names,
            "pos": np.round(pos, 3).tolist(),
            "rssi": [[None if np.isnan(v) else round(float(v), 2) for v in row] for row in rssi],
        },
        "params": dict(params or {}),
    }


def _distances(df: pd.DataFrame, scanners: dict[str, tuple[float, float]]) -> np.ndarray:
    sx = df["scanner"].map(lambda s: scanners[s][0]).to_numpy(float)
    sy = df["scanner"].map(lambda s: scanners[s][1]).to_numpy(float)
    return np.hypot(df["x"].to_numpy(float) - sx, df["y"].to_numpy(float) - sy)
