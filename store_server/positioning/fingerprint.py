"""Survey fingerprints: reference RSSI vectors at known positions and the radio-map residuals."""

from __future__ import annotations

import numpy as np
import pandas as pd

WINDOW_S = 1.0


def reference_fingerprints(
    survey: pd.DataFrame, scanners: list[str], window: float = WINDOW_S
) -> tuple[np.ndarray, np.ndarray]:
    """Survey averaged per emitter and time window: positions (K, 2), RSSI (K, S) NaN if unheard."""
    df = survey.loc[survey["scanner"].isin(scanners)]
    if df.empty:
        return np.empty((0, 2)), np.empty((0, len(scanners)))
    key = np.floor(df["ts"].to_numpy(float) / window).astype(np.int64)
    df = df.assign(_w=key)
    pos = df.groupby(["emitter", "_w"], sort=True)[["x", "y"]].mean()
    rssi = (
        df.pivot_table(index=["emitter", "_w"], columns="scanner", values="rssi", aggfunc="mean")
        .reindex(index=pos.index, columns=scanners)
        .to_numpy(float)
    )
    return pos.to_numpy(float), rssi


def residual_map(
    cells: np.ndarray,
    ref_pos: np.ndarray,
    ref_resid: np.ndarray,
    bandwidth: float,
    shrink: float,
    support: np.ndarray | None = None,
) -> np.ndarray:
    """Kernel-smoothed path-loss residual per cell and scanner, shrunk to 0 far from the survey.

    If support (cells, scanners) is given it is filled with the survey weight behind each value
    (0 where nobody walked), so the caller can tell a measured map from an extrapolated one."""
    out = np.zeros((cells.shape[0], ref_resid.shape[1]))
    if ref_pos.shape[0] == 0:
        return out
    # Imported here: scikit-learn takes seconds to import and most commands never need it.
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(radius=3.0 * bandwidth).fit(ref_pos)
    dist, idx = nn.radius_neighbors(cells, return_distance=True)
    known = np.isfinite(ref_resid)
    filled = np.where(known, ref_resid, 0.0)
    for i, (d, j) in enumerate(zip(dist, idx, strict=True)):
        if j.size == 0:
            continue
        w = np.exp(-0.5 * (d / bandwidth) ** 2)[:, None] * known[j]
        ws = w.sum(axis=0)
        out[i] = (w * filled[j]).sum(axis=0) / (ws + shrink)
        if support is not None:
            support[i] = ws
    return out
