"""Constant-velocity motion prior and the update of velocity from a position posterior."""

from __future__ import annotations

import numpy as np

_TRIU = np.triu_indices(4)


def predict(
    m: np.ndarray, cov: np.ndarray, dt: float, accel: float, damping_s: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Constant-velocity prediction over dt seconds with white-noise acceleration.

    With damping_s > 0 the velocity decays with that time constant: people stop, and a pure
    constant-velocity prior would carry them on through the wall."""
    f = np.eye(4)
    decay = float(np.exp(-dt / damping_s)) if damping_s > 0 else 1.0
    travel = damping_s * (1.0 - decay) if damping_s > 0 else dt
    f[0, 2] = f[1, 3] = travel
    f[2, 2] = f[3, 3] = decay
    q1 = np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]]) * accel**2
    q = np.zeros((4, 4))
    q[np.ix_([0, 2], [0, 2])] = q1
    q[np.ix_([1, 3], [1, 3])] = q1
    return f @ m, f @ cov @ f.T + q


def condition(
    m: np.ndarray, cov: np.ndarray, mean_pos: np.ndarray, cov_pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Replace the position marginal by a posterior one, carrying velocity along its regression."""
    ppp = cov[:2, :2]
    gain = cov[2:, :2] @ np.linalg.inv(ppp)
    out_m = m.copy()
    out_m[:2] = mean_pos
    out_m[2:] = m[2:] + gain @ (mean_pos - m[:2])
    out = np.empty((4, 4))
    out[:2, :2] = cov_pos
    out[2:, :2] = gain @ cov_pos
    out[:2, 2:] = out[2:, :2].T
    out[2:, 2:] = cov[2:, 2:] - gain @ cov[:2, 2:] + gain @ cov_pos @ gain.T
    return out_m, 0.5 * (out + out.T)


def pack(cov: np.ndarray) -> list[float]:
    """Upper triangle of a 4x4 covariance, for a compact JSON state."""
    return [round(float(v), 5) for v in cov[_TRIU]]


def unpack(values: list[float]) -> np.ndarray:
    """Inverse of pack."""
    out = np.zeros((4, 4))
    out[_TRIU] = values
    return out + np.triu(out, 1).T
