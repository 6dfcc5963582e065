"""The per-cell loops of a tracking step, compiled with numba.

A step scores every cell of the venue grid against every scanner heard (1,000-4,000 cells): as
numpy expressions that took some 40 passes over (cells, scanners) arrays and most of a step's
time; each loop here makes one or two. The arithmetic is engine.py's, written per cell; sums run
in a fixed order, so a result does not depend on anything but its inputs.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# cache: compiled once per machine into __pycache__, not at every process start.
_JIT = {"nogil": True, "cache": True}


@numba.njit(**_JIT)
def likelihood(
    mu: np.ndarray,
    inv_sigma: np.ndarray,
    log_ratio: np.ndarray,
    logprior: np.ndarray,
    idx: np.ndarray,
    target: np.ndarray,
    weights: np.ndarray,
    coef: np.ndarray,
    pen_scale: float,
    huber_k: float,
    per: np.ndarray,
) -> np.ndarray:
    """Log-likelihood of each cell (plus its prior) for the readings of the scanners `idx`.

    Per reading: the gap between the map and the target, less the shared level each cell may
    explain (coef, all 0 when the level is not integrated out), scaled by the cell's sd, under a
    Huber loss; weighted, with the cell's log scale ratio. `per` receives each reading's loss.
    """
    n_cells, n = per.shape
    out = np.empty(n_cells)
    k = np.float32(huber_k)
    half = np.float32(0.5)
    for c in range(n_cells):
        shared = np.float32(0.0)
        for j in range(n):
            shared += (mu[c, idx[j]] - target[j]) * coef[j]
        data = np.float32(0.0)
        ratio = np.float32(0.0)
        for j in range(n):
            v = abs(mu[c, idx[j]] - target[j] + shared) * inv_sigma[c, idx[j]]
            h = min(v, k)
            v = (v - half * h) * h
            per[c, j] = v
            data += v * weights[j]
            ratio += log_ratio[c, idx[j]] * weights[j]
        s = np.float64(shared)
        out[c] = logprior[c] - (np.float64(data + ratio) + pen_scale * s * s)
    return out


@numba.njit(**_JIT)
def add_prior(
    logpost: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    mx: float,
    my: float,
    i00: float,
    i01: float,
    i11: float,
) -> None:
    """Add the Gaussian motion prior (mean (mx, my), inverse covariance i..) in place."""
    for c in range(logpost.shape[0]):
        dx = cx[c] - mx
        dy = cy[c] - my
        logpost[c] -= 0.5 * (i00 * dx * dx + 2.0 * i01 * dx * dy + i11 * dy * dy)


@numba.njit(**_JIT)
def moments(
    logpost: np.ndarray, cx: np.ndarray, cy: np.ndarray, span: float
) -> tuple[float, float, float, float, float, np.ndarray]:
    """Mean (x, y), covariance (xx, xy, yy) and weights of the normalised posterior, over the
    cells within `span` of its top; the others weigh exactly 0."""
    n_cells = logpost.shape[0]
    top = -np.inf
    for c in range(n_cells):
        top = max(top, logpost[c])
    w = np.zeros(n_cells)
    total = 0.0
    for c in range(n_cells):
        if logpost[c] > top - span:
            w[c] = math.exp(logpost[c] - top)
            total += w[c]
    mx = 0.0
    my = 0.0
    for c in range(n_cells):
        w[c] /= total
        mx += w[c] * cx[c]
        my += w[c] * cy[c]
    sxx = 0.0
    sxy = 0.0
    syy = 0.0
    for c in range(n_cells):
        dx = cx[c] - mx
        dy = cy[c] - my
        sxx += w[c] * dx * dx
        sxy += w[c] * dx * dy
        syy += w[c] * dy * dy
    return mx, my, sxx, sxy, syy, w


@numba.njit(**_JIT)
def leave_one_out(
    logpost: np.ndarray,
    per: np.ndarray,
    log_ratio: np.ndarray,
    mu: np.ndarray,
    idx: np.ndarray,
    weights: np.ndarray,
    active: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """For each scanner heard, its map value expected under the posterior without its own
    reading, and the spread of the map around that, over the active cells (weight > 0)."""
    n_cells, n = per.shape
    seen = np.zeros(n)
    spread = np.zeros(n)
    e = np.empty(n_cells)
    for j in range(n):
        s = idx[j]
        top = -np.inf
        for c in range(n_cells):
            if active[c] > 0.0:
                v = logpost[c] + np.float64(per[c, j] + log_ratio[c, s]) * weights[j]
                e[c] = v
                top = max(top, v)
        total = 0.0
        first = 0.0
        for c in range(n_cells):
            if active[c] > 0.0:
                e[c] = math.exp(e[c] - top)
                total += e[c]
                first += e[c] * mu[c, s]
        mean = first / total
        second = 0.0
        for c in range(n_cells):
            if active[c] > 0.0:
                d = mu[c, s] - mean
                second += e[c] * d * d
        seen[j] = mean
        spread[j] = second / total
    return seen, spread


@numba.njit(**_JIT)
def level_spread(mu: np.ndarray, idx: np.ndarray, w: np.ndarray, mix: np.ndarray) -> float:
    """Variance under the posterior weights `w` of the map's level mixed over the scanners heard
    (`mix`, summing to 1): how much a position error moves every scanner's level alike."""
    n_cells = w.shape[0]
    level = np.empty(n_cells)
    mean = 0.0
    for c in range(n_cells):
        v = 0.0
        for j in range(idx.shape[0]):
            v += np.float64(mu[c, idx[j]]) * mix[j]
        level[c] = v
        mean += w[c] * v
    out = 0.0
    for c in range(n_cells):
        d = level[c] - mean
        out += w[c] * d * d
    return out


@numba.njit(**_JIT)
def fold_filters(
    ts: np.ndarray,
    rssi: np.ndarray,
    sidx: np.ndarray,
    order: np.ndarray,
    value: np.ndarray,
    last: np.ndarray,
    state: np.ndarray,
    sums: np.ndarray,
    seen: np.ndarray,
    tau: float,
    clip: float,
) -> tuple[float, int]:
    """Fold readings (taken in `order`, time-sorted) into each scanner's clipped exponential
    filter (value, last) and step sums (sums[s] = total, count), in place: engine._fold's
    arithmetic, one reading at a time in the same order, so the results are bitwise the same.

    state[s] is 0 for a scanner with no filter yet, 1 with one, 2 once a reading was folded;
    `seen` receives the scanners folded into (sidx >= 0, finite RSSI), in the order of their
    first such reading. Returns the newest time folded (-inf if none) and how many `seen` holds."""
    reset = 5.0 * tau
    heard = -np.inf
    n_seen = 0
    for j in range(order.shape[0]):
        i = order[j]
        s = sidx[i]
        r = rssi[i]
        if s < 0 or not math.isfinite(r):
            continue
        if state[s] != 2:
            seen[n_seen] = s
            n_seen += 1
        t = ts[i]
        if state[s] == 0:
            sums[s, 0] += r
            value[s] = r
            last[s] = t
        else:
            gap = t - last[s]
            step = r - value[s]
            if step > -clip:
                if step >= clip:
                    step = clip
            else:
                step = -clip
            sums[s, 0] += r if gap > 5.0 else value[s] + step
            dt = gap if gap > 0.0 else 0.0
            if dt > reset:
                value[s] = r
            else:
                value[s] += (1.0 - math.exp(-(dt + 0.25) / tau)) * step
            if t > last[s]:
                last[s] = t
        state[s] = 2
        sums[s, 1] += 1.0
        if t > heard:
            heard = t
    return heard, n_seen


@numba.njit(**_JIT)
def motion_step(
    prev: np.ndarray,
    prev_cov: np.ndarray,
    has_prev: bool,
    dt: float,
    accel: float,
    damping_s: float,
    gate: np.ndarray,
    adapt_gate: float,
    logpost: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    span: float,
    pad: float,
    speed_var: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One constant-velocity filter step (motion.predict, the manoeuvre gate, add_prior,
    moments, motion.condition) in one call: the 4 x 4 algebra as small numpy calls cost ~35 us
    a filter, more than the cell loops. `gate` is the likelihood's own (x, y, xx, xy, yy); a
    NaN first entry (or adapt_gate 0) leaves the gate off. The prior is added to `logpost` in
    place. Returns the new state, its covariance, the posterior mean, covariance and weights."""
    m = np.zeros(4)
    cov4 = np.zeros((4, 4))
    if has_prev:
        decay = math.exp(-dt / damping_s) if damping_s > 0 else 1.0
        travel = damping_s * (1.0 - decay) if damping_s > 0 else dt
        f = np.eye(4)
        f[0, 2] = travel
        f[1, 3] = travel
        f[2, 2] = decay
        f[3, 3] = decay
        for i in range(4):
            for k in range(4):
                m[i] += f[i, k] * prev[k]
        fp = np.zeros((4, 4))
        for i in range(4):
            for j in range(4):
                for k in range(4):
                    fp[i, j] += f[i, k] * prev_cov[k, j]
        for i in range(4):
            for j in range(4):
                for k in range(4):
                    cov4[i, j] += fp[i, k] * f[j, k]
        a2 = accel * accel
        q00, q01, q11 = dt**3 / 3.0 * a2, dt**2 / 2.0 * a2, dt * a2
        for base in range(2):
            cov4[base, base] += q00
            cov4[base, base + 2] += q01
            cov4[base + 2, base] += q01
            cov4[base + 2, base + 2] += q11
        if adapt_gate > 0 and not math.isnan(gate[0]):
            s00 = cov4[0, 0] + gate[2]
            s01 = cov4[0, 1] + gate[3]
            s11 = cov4[1, 1] + gate[4]
            det = s00 * s11 - s01 * s01
            g0, g1 = gate[0] - m[0], gate[1] - m[1]
            nis = (s11 * g0 * g0 - 2.0 * s01 * g0 * g1 + s00 * g1 * g1) / det
            if nis > adapt_gate:
                cov4 *= nis / adapt_gate
        det = cov4[0, 0] * cov4[1, 1] - cov4[0, 1] * cov4[0, 1]
        i00, i01, i11 = cov4[1, 1] / det, -cov4[0, 1] / det, cov4[0, 0] / det
        add_prior(logpost, cx, cy, m[0], m[1], i00, i01, i11)
    mx, my, sxx, sxy, syy, w = moments(logpost, cx, cy, span)
    mean = np.array([mx, my])
    cov = np.array([[sxx + pad, sxy], [sxy, syy + pad]])
    out_m = np.zeros(4)
    out = np.zeros((4, 4))
    out_m[0], out_m[1] = mx, my
    out[:2, :2] = cov
    if not has_prev:
        out[2, 2] = speed_var
        out[3, 3] = speed_var
        return out_m, out, mean, cov, w
    # Velocity follows the position along its regression on it (gain = P_vp P_pp^-1).
    gain = np.zeros((2, 2))
    for i in range(2):
        gain[i, 0] = cov4[2 + i, 0] * i00 + cov4[2 + i, 1] * i01
        gain[i, 1] = cov4[2 + i, 0] * i01 + cov4[2 + i, 1] * i11
    d0, d1 = mx - m[0], my - m[1]
    out_m[2] = m[2] + gain[0, 0] * d0 + gain[0, 1] * d1
    out_m[3] = m[3] + gain[1, 0] * d0 + gain[1, 1] * d1
    gc = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            gc[i, j] = gain[i, 0] * cov[0, j] + gain[i, 1] * cov[1, j]
    for i in range(2):
        for j in range(2):
            out[2 + i, j] = gc[i, j]
            out[j, 2 + i] = gc[i, j]
            vv = cov4[2 + i, 2 + j]
            vv -= gain[i, 0] * cov4[0, 2 + j] + gain[i, 1] * cov4[1, 2 + j]
            vv += gc[i, 0] * gain[j, 0] + gc[i, 1] * gain[j, 1]
            out[2 + i, 2 + j] = vv
    for i in range(4):
        for j in range(i + 1, 4):
            sym = 0.5 * (out[i, j] + out[j, i])
            out[i, j] = sym
            out[j, i] = sym
    return out_m, out, mean, cov, w


def warm() -> None:
    """Compile (or load from the cache) every kernel now, on toy inputs: a server calls this at
    start-up, so its first sighting batch does not wait seconds for the compiler."""
    cells, idx = np.zeros((2, 1), dtype=np.float32), np.zeros(1, dtype=np.int64)
    flat, xy = np.zeros(2), np.array([0.0, 1.0])
    one = np.ones(1, dtype=np.float32)
    per = np.empty((2, 1), dtype=np.float32)
    logpost = likelihood(cells, cells, cells, flat, idx, one, one, one, 0.0, 2.0, per)
    add_prior(logpost, xy, xy, 0.0, 0.0, 1.0, 0.0, 1.0)
    *_, w = moments(logpost, xy, xy, 30.0)
    leave_one_out(logpost, per, cells, cells, idx, np.ones(1), w)
    level_spread(cells, idx, w, np.ones(1))
    gate = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    motion_step(
        np.zeros(4), np.eye(4), True, 1.0, 0.1, 0.0, gate, 4.0, logpost, xy, xy, 30.0, 0.0, 1.0
    )
    one_f, one_i = np.zeros(1), np.zeros(1, dtype=np.int64)
    fold_filters(
        one_f,
        one_f,
        one_i,
        one_i,
        one_f,
        one_f,
        np.zeros(1, dtype=np.int8),
        np.zeros((1, 2)),
        one_i,
        1.0,
        8.0,
    )
