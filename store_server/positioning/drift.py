"""Online per-scanner RSSI offsets: the radio map drifts by several dB between days."""

from __future__ import annotations

import math

import numpy as np

RATE = 0.02
CLIP_DB = 12.0
# A new track starts from the venue's drift with this variance (dB²): below the offsets' prior
# (3 dB sd), so what earlier visitors learnt counts from the first second, yet each track still
# learns its own (measured: sd 1 dB gained less on the simulated venues, sd 2 dB the most).
SEED_VAR_DB2 = 4.0
SEED_MIN_EMITTERS = 3
# How long what a track learnt still counts for newcomers after it was last heard (live: how
# long a venue's published drift outlives its trackers).
SEED_MEMORY_S = 600


def adapt(
    offsets: np.ndarray,
    observed: np.ndarray,
    expected: np.ndarray,
    rate: float = RATE,
    clip: float = CLIP_DB,
) -> np.ndarray:
    """Move each observed scanner's offset a small step towards its innovation."""
    innovation = observed - expected - offsets
    # A single multipath spike must not shift the map: innovations are clipped before use.
    step = rate * np.clip(innovation, -8.0, 8.0)
    return np.clip(offsets + step, -clip, clip)


def kalman(
    offsets: np.ndarray,
    variances: np.ndarray,
    observed: np.ndarray,
    expected: np.ndarray,
    noise_var: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-scanner offset as a scalar Kalman filter: learns fast while unsure, then settles.

    noise_var is the innovation's own variance (RSSI noise plus what the position uncertainty
    does to the expected value), so an unsure position moves the offsets little."""
    innovation = observed - expected - offsets
    total = variances + noise_var
    # Huber-style guard: a reading far outside the predicted spread pulls only as far as 2.5 sd.
    lim = 2.5 * np.sqrt(total)
    innovation = np.clip(innovation, -lim, lim)
    gain = variances / total
    return np.clip(offsets + gain * innovation, -CLIP_DB, CLIP_DB), (1.0 - gain) * variances


def common(
    innovations: np.ndarray, noise_var: np.ndarray, variance: float, coherent_var: float = 0.0
) -> tuple[float, float]:
    """Kalman step for a level shared by every scanner; returns (shift, new variance).

    coherent_var is noise shared by all scanners (it does not shrink with their number)."""
    precision = float(np.sum(1.0 / noise_var))
    level = float(np.sum(np.clip(innovations, -15.0, 15.0) / noise_var)) / precision
    gain = variance / (variance + 1.0 / precision + coherent_var)
    return gain * level, (1.0 - gain) * variance


def summarise(per_emitter: list[dict[str, float]]) -> dict[str, float]:
    """Median drift per scanner across emitters, the venue-level figure an operator reads."""
    return {k: v for k, (v, _) in per_scanner(per_emitter).items()}


def per_scanner(per_emitter: list[dict[str, float]]) -> dict[str, tuple[float, int]]:
    """Per scanner: the median drift across the emitters that learnt one, and how many did."""
    keys = sorted({k for d in per_emitter for k in d})
    out = {}
    for k in keys:
        values = [d[k] for d in per_emitter if k in d]
        out[k] = (round(float(np.median(values)), 2), len(values))
    return out


def venue_seed(
    per_scanner_drift: dict[str, tuple[float, int]],
    min_emitters: int = SEED_MIN_EMITTERS,
    variance: float = SEED_VAR_DB2,
) -> dict[str, list[float]]:
    """The per-scanner offsets a new track starts from (a state's "o" entry): the venue's drift
    where at least min_emitters tracks learnt it. A drift is the scanner's, not a visitor's, so
    each newcomer need not find it out again from scratch (a single track learns a few dB of it
    only slowly, against positions that the drift itself has pulled)."""
    return {
        name: [round(float(db), 2), variance]
        for name, (db, n) in sorted(per_scanner_drift.items())
        if n >= min_emitters and math.isfinite(db)
    }


def learnt_offsets(state: dict) -> dict[str, float]:
    """The per-scanner offsets (dB) a tracking state has learnt, by scanner name."""
    return {k: float(v[0]) for k, v in (state.get("o") or {}).items()}
