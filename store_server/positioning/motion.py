"""Constant-velocity motion prior and the update of velocity from a position posterior.

The readable reference of a filter's step: live tracking runs it compiled, prediction to
conditioning in one call (kernels.motion_step, tested against these functions); engine.py
uses pack and unpack for the state."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_TRIU = np.triu_indices(4)
_TRIL = (_TRIU[1], _TRIU[0])
# The x and y blocks of the white-acceleration noise (position, velocity pairs).
_QX = np.ix_([0, 2], [0, 2])
_QY = np.ix_([1, 3], [1, 3])


def predict(
    m: np.ndarray, cov: np.ndarray, dt: float, accel: float, damping_s: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Constant-velocity prediction over dt seconds with white-noise acceleration.

    With damping_s > 0 the velocity decays with that time constant: people stop, and a pure
    constant-velocity prior would carry them on through the wall."""
    f, q = _transition(float(dt), float(accel), float(damping_s))
    return f @ m, f @ cov @ f.T + q


@lru_cache(maxsize=64)
def _transition(dt: float, accel: float, damping_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Transition and noise matrices, cached: a replay steps every emitter by dt = 1 s."""
    f = np.eye(4)
    decay = float(np.exp(-dt / damping_s)) if damping_s > 0 else 1.0
    travel = damping_s * (1.0 - decay) if damping_s > 0 else dt
    f[0, 2] = f[1, 3] = travel
    f[2, 2] = f[3, 3] = decay
    q1 = np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]]) * accel**2
    q = np.zeros((4, 4))
    q[_QX] = q1
    q[_QY] = q1
    # Shared between calls: read-only, so no caller can alter the cached copy.
    f.flags.writeable = False
    q.flags.writeable = False
    return f, q


def condition(
    m: np.ndarray, cov: np.ndarray, mean_pos: np.ndarray, cov_pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Replace the position marginal by a posterior one, carrying velocity along its regression."""
    i00, i01, i11 = inverse2(cov[:2, :2])
    gain = cov[2:, :2] @ np.array([[i00, i01], [i01, i11]])
    out_m = m.copy()
    out_m[:2] = mean_pos
    out_m[2:] = m[2:] + gain @ (mean_pos - m[:2])
    out = np.empty((4, 4))
    out[:2, :2] = cov_pos
    out[2:, :2] = gain @ cov_pos
    out[:2, 2:] = out[2:, :2].T
    out[2:, 2:] = cov[2:, 2:] - gain @ cov[:2, 2:] + gain @ cov_pos @ gain.T
    return out_m, 0.5 * (out + out.T)


def inverse2(cov: np.ndarray) -> tuple[float, float, float]:
    """(a, b, c) of the inverse [[a, b], [b, c]] of a symmetric positive-definite 2x2 matrix.

    Written out: LAPACK's general inverse and solve cost 15-30 us each on a 2x2, and a filter's
    step needs three (the manoeuvre gate, the motion prior, the conditioning)."""
    s00, s01, s11 = float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1])
    det = s00 * s11 - s01 * s01
    return s11 / det, -s01 / det, s00 / det


def mahalanobis2(cov: np.ndarray, g0: float, g1: float) -> float:
    """Squared Mahalanobis length of the gap (g0, g1) under a symmetric 2x2 covariance."""
    i00, i01, i11 = inverse2(cov)
    return i00 * g0 * g0 + 2.0 * i01 * g0 * g1 + i11 * g1 * g1


def pack(cov: np.ndarray) -> list[float]:
    """Upper triangle of a 4x4 covariance, for a compact JSON state."""
    return [round(v, 5) for v in cov[_TRIU].tolist()]


def unpack(values: list[float]) -> np.ndarray:
    """Inverse of pack."""
    out = np.empty((4, 4))
    out[_TRIU] = values
    out[_TRIL] = values
    return out
