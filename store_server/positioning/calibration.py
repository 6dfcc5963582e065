"""Site-survey calibration: per-scanner path loss and the reference fingerprints, as JSON."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from store_server.positioning import pathloss
from store_server.positioning.fingerprint import reference_fingerprints, residual_map

HEIGHTS_M = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)
# Directional antenna gain per scanner: Fourier terms of the bearing, ridge-shrunk to isotropic.
ANTENNA_HARMONICS = 0
ANTENNA_RIDGE = 5.0
# A survey map's errors are spatially correlated: an emitter lingering near a badly mapped spot
# sees the same error second after second, which independent-reading evidence would count anew
# each time. Its likelihood is tempered (measured: LOTO and the simulated rooms both gain).
SURVEY_TEMPER = 0.7
# The time shift of the survey's marked positions against the radio, learnt from the survey's
# own walks (params "survey_shift_search": 0 turns it off, a fixed "survey_shift_s" skips the
# search). Measured (README, "Eighteenth session"): LOTO meets its four targets and the unseen
# walks' zone accuracy gains, their position loses 0.22 m. SHIFTS_S are the shifts tried; a walk
# ends where ts jumps by > TRACK_GAP_S.
SURVEY_SHIFT_SEARCH = 1
SHIFTS_S = tuple(round(0.1 * k, 1) for k in range(-20, 21))
TRACK_GAP_S = 5.0
# The map's kernel as engine.DEFAULTS has it (calibration must not import the engine).
MAP_BANDWIDTH_M, MAP_SHRINK = 0.7, 0.5


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
    params.setdefault("survey_shift_search", SURVEY_SHIFT_SEARCH)
    if "height_m" not in params:
        params["height_m"] = fit_height(df, scanners)
    height = float(params["height_m"])
    if params.get("survey_shift_search") and "survey_shift_s" not in params:
        kernel = (
            float(params.get("bandwidth_m", MAP_BANDWIDTH_M)),
            float(params.get("shrink", MAP_SHRINK)),
        )
        params["survey_shift_s"] = best_shift(df, scanners, height, kernel=kernel)[0]
    if params.get("survey_shift_s"):
        df = shift_positions(df, float(params["survey_shift_s"]))
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


def survey_walks(survey: pd.DataFrame) -> np.ndarray:
    """Walk number per row: a walk ends where ts jumps by more than TRACK_GAP_S."""
    ts = survey["ts"].to_numpy(float)
    if not ts.size:
        return np.zeros(0, dtype=int)
    order = np.argsort(ts, kind="stable")
    walk = np.empty(ts.size, dtype=int)
    walk[order] = np.concatenate([[0], np.cumsum(np.diff(ts[order]) > TRACK_GAP_S)])
    return walk


def survey_tracks(survey: pd.DataFrame) -> np.ndarray:
    """Track number per row (a track ends where ts jumps by more than 5 s); halves if only one."""
    trk = survey_walks(survey)
    if trk.size and trk.max() == 0:
        ts = survey["ts"].to_numpy(float)
        trk = (ts > np.median(ts)).astype(int)
    return trk


def shift_positions(df: pd.DataFrame, shift_s: float) -> pd.DataFrame:
    """The survey with each reading's position taken from its walk's marks shift_s later
    (interpolated, held at the walk's ends): the marks may lag (shift > 0) or lead the radio."""
    if not shift_s or df.empty:
        return df
    ts = df["ts"].to_numpy(float)
    x, y = df["x"].to_numpy(float), df["y"].to_numpy(float)
    new_x, new_y = x.copy(), y.copy()
    groups = pd.Series(np.arange(len(df))).groupby([survey_walks(df), df["emitter"].to_numpy()])
    for rows in groups.indices.values():
        rows = rows[np.argsort(ts[rows], kind="stable")]
        new_x[rows] = np.interp(ts[rows] + shift_s, ts[rows], x[rows])
        new_y[rows] = np.interp(ts[rows] + shift_s, ts[rows], y[rows])
    return df.assign(x=new_x, y=new_y)


def held_out_residual(
    df: pd.DataFrame,
    scanners: dict[str, tuple[float, float]],
    height: float,
    kernel: tuple[float, float] = (MAP_BANDWIDTH_M, MAP_SHRINK),
) -> float:
    """RMS (dB, each residual capped at 10 dB) of each survey walk's per-second means against a
    map (path loss + kernel residual map) built from the other walks; NaN with < 2 walks.

    Walks, not the halves survey_tracks makes of a single walk: those cover different rooms, so
    the map only extrapolates to them, and on exact simulated positions they chose 0.2-0.3 s."""
    walks = survey_walks(df)
    names = list(scanners)
    sq, count = 0.0, 0
    if np.unique(walks).size < 2:
        return float("nan")
    pos_s = np.array([scanners[s] for s in names], dtype=float)
    for w in np.unique(walks):
        train, test = df.loc[walks != w], df.loc[walks == w]
        a = np.full(len(names), pathloss.DEFAULT_RSSI_1M)
        n = np.full(len(names), pathloss.DEFAULT_N)
        for i, s in enumerate(names):
            sub = train.loc[train["scanner"] == s]
            if len(sub) >= 5:
                a[i], n[i], _, _ = pathloss.fit(
                    _distances(sub, scanners, height), sub["rssi"].to_numpy(float)
                )
        ref_pos, ref = reference_fingerprints(train, names)
        pos, rssi = reference_fingerprints(test, names)
        if ref_pos.shape[0] == 0 or pos.shape[0] == 0:
            continue
        resid = ref - _expected(ref_pos, pos_s, a, n, height)
        rmap = residual_map(pos, ref_pos, resid, *kernel)
        r = rssi - _expected(pos, pos_s, a, n, height) - rmap
        r = r[np.isfinite(r)]
        sq += float(np.sum(np.minimum(r**2, 100.0)))
        count += r.size
    return float(np.sqrt(sq / count)) if count else float("nan")


def best_shift(
    df: pd.DataFrame,
    scanners: dict[str, tuple[float, float]],
    height: float,
    shifts: tuple[float, ...] = SHIFTS_S,
    kernel: tuple[float, float] = (MAP_BANDWIDTH_M, MAP_SHRINK),
) -> tuple[float, dict[float, float]]:
    """The time shift of the survey's positions whose map best predicts each held-out walk, and
    the held-out residual at every shift tried (0 and nothing tried with fewer than two walks).

    Coarse to fine: every fifth shift, then the ones around the best of those, as the held-out
    residual is smooth in the shift and each costs a map per walk."""
    curve: dict[float, float] = {}
    if np.unique(survey_walks(df)).size < 2:
        return 0.0, curve

    def score(candidates: tuple[float, ...]) -> float:
        for s in candidates:
            if s not in curve:
                curve[s] = held_out_residual(shift_positions(df, s), scanners, height, kernel)
        finite = {s: curve[s] for s in candidates if np.isfinite(curve[s])}
        return min(finite, key=lambda s: (finite[s], abs(s))) if finite else 0.0

    coarse = score(shifts[::5])
    i = shifts.index(coarse)
    best = score(shifts[max(i - 4, 0) : i + 5])
    return best, dict(sorted(curve.items()))


def _expected(
    points: np.ndarray, pos: np.ndarray, a: np.ndarray, n: np.ndarray, height: float
) -> np.ndarray:
    d = np.hypot(
        np.hypot(points[:, None, 0] - pos[None, :, 0], points[:, None, 1] - pos[None, :, 1]),
        height,
    )
    return pathloss.expected_rssi(d, 0.0, 1.0) * n[None, :] + a[None, :]
