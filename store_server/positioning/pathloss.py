"""Log-distance path loss: expected RSSI from distance and its robust per-scanner fit."""

from __future__ import annotations

import numpy as np

from beacons.frames import EDDYSTONE_RANGING_ABOVE_1M_DB

DEFAULT_RSSI_1M = -59.0
DEFAULT_N = 2.7
MIN_DISTANCE_M = 0.5
# What a frame's power field is above the power at 1 m: Eddystone's ranging data is the power
# at 0 m, an iBeacon's measured power is the power at 1 m itself.
POWER_AT_1M_BELOW_FRAME_DB = {"eid": EDDYSTONE_RANGING_ABOVE_1M_DB, "ibeacon": 0.0}
DECLARED_LEVEL_LIMIT_DB = 20.0


def declared_level(kind: str, tx_power: float) -> float:
    """How many dB louder than the radio map's reference emitter (a phone at DEFAULT_RSSI_1M)
    an emitter says it transmits, from the calibrated power its frames carry; clipped, since a
    misconfigured app may claim anything."""
    at_1m = tx_power - POWER_AT_1M_BELOW_FRAME_DB[kind]
    limit = DECLARED_LEVEL_LIMIT_DB
    return float(min(max(at_1m - DEFAULT_RSSI_1M, -limit), limit))


def expected_rssi(distance: np.ndarray, rssi_1m: float, n: float) -> np.ndarray:
    """RSSI expected at a distance under log-distance path loss."""
    d = np.maximum(np.asarray(distance, dtype=float), MIN_DISTANCE_M)
    return rssi_1m - 10.0 * n * np.log10(d)


def distance_from_rssi(
    rssi: float, rssi_1m: float = DEFAULT_RSSI_1M, n: float = DEFAULT_N
) -> float:
    """Distance in metres implied by an RSSI under log-distance path loss."""
    return float(10.0 ** ((rssi_1m - rssi) / (10.0 * n)))


def directional(bearing: np.ndarray, harmonics: int) -> np.ndarray:
    """Fourier basis of the bearing from scanner to emitter: cos θ, sin θ, cos 2θ, sin 2θ, ..."""
    b = np.asarray(bearing, dtype=float)
    cols = []
    for h in range(1, harmonics + 1):
        cols += [np.cos(h * b), np.sin(h * b)]
    return np.stack(cols, axis=-1) if cols else np.zeros((*b.shape, 0))


def fit(
    distance: np.ndarray,
    rssi: np.ndarray,
    prior: tuple[float, float] = (DEFAULT_RSSI_1M, DEFAULT_N),
    prior_weight: float = 20.0,
    n_bounds: tuple[float, float] = (1.2, 5.0),
    bearing: np.ndarray | None = None,
    harmonics: int = 0,
    gain_weight: float = 5.0,
) -> tuple[float, float, float, list[float]]:
    """Huber-robust fit of (rssi_1m, n), shrunk towards a prior; returns also the residual scale
    and, with harmonics > 0 and bearings given, the antenna's directional gain coefficients.

    Real scanners are not isotropic (antenna pattern, enclosure, the wall they hang on): a gain
    that varies smoothly with the bearing is fitted as a short Fourier series, shrunk to 0."""
    x = -10.0 * np.log10(np.maximum(np.asarray(distance, dtype=float), MIN_DISTANCE_M))
    y = np.asarray(rssi, dtype=float)
    a_prior, n_prior = prior
    extra = directional(bearing, harmonics) if bearing is not None and harmonics > 0 else None
    design = np.column_stack([np.ones_like(x), x] + ([extra] if extra is not None else []))
    k_extra = design.shape[1] - 2
    ridge = prior_weight * np.diag([0.01, 1.0] + [0.0] * k_extra)
    ridge[2:, 2:] = gain_weight * np.eye(k_extra)
    target = np.concatenate([prior_weight * np.array([0.01 * a_prior, n_prior]), np.zeros(k_extra)])
    w = np.ones_like(y)
    coef = np.array([a_prior, n_prior] + [0.0] * k_extra)
    scale = 5.0
    for _ in range(8):
        # The prior acts as pseudo-observations so a scanner with few readings stays sensible.
        lhs = design.T @ (design * w[:, None]) + ridge
        rhs = design.T @ (w * y) + target
        coef = np.linalg.solve(lhs, rhs)
        coef[1] = float(np.clip(coef[1], *n_bounds))
        resid = y - design @ coef
        scale = max(1.4826 * float(np.median(np.abs(resid - np.median(resid)))), 1.0)
        k = 1.5 * scale
        w = np.where(np.abs(resid) <= k, 1.0, k / np.maximum(np.abs(resid), 1e-9))
    return float(coef[0]), float(coef[1]), scale, [float(v) for v in coef[2:]]
