"""The compiled per-cell loops compute the numpy expressions they replaced (engine.py before
kernels.py), on random inputs, to float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest

from store_server.positioning import kernels, motion

CELLS, SCANNERS = 300, 6


@pytest.fixture
def grid() -> dict[str, np.ndarray]:
    """A random radio map: expected RSSI, inverse sd and log sd ratio per (cell, scanner)."""
    rng = np.random.default_rng(7)
    return {
        "mu": rng.normal(-70.0, 8.0, (CELLS, SCANNERS)).astype(np.float32),
        "inv_sigma": (1.0 / rng.uniform(3.0, 8.0, (CELLS, SCANNERS))).astype(np.float32),
        "log_ratio": rng.uniform(0.0, 0.3, (CELLS, SCANNERS)).astype(np.float32),
        "logprior": np.where(rng.random(CELLS) < 0.2, -2.0, 0.0),
        "x": rng.uniform(0.0, 12.0, CELLS),
        "y": rng.uniform(0.0, 9.0, CELLS),
    }


@pytest.mark.parametrize("level", [False, True])
def test_likelihood_is_the_huber_loss_with_the_shared_level(grid, level):
    idx = np.array([0, 2, 3, 5])
    target = np.array([-65.0, -72.5, -80.0, -61.0], dtype=np.float32)
    weights = np.array([1.0, 0.5, 1.0, 2.0], dtype=np.float32)
    prec = np.array([0.04, 0.03, 0.05, 0.02], dtype=np.float32)
    coef = prec / -(prec.sum() + 3.0**-2) if level else np.zeros(4, dtype=np.float32)
    pen_scale = 0.5 / 3.0**2 if level else 0.0
    per = np.empty((CELLS, 4), dtype=np.float32)
    got = kernels.likelihood(
        grid["mu"], grid["inv_sigma"], grid["log_ratio"], grid["logprior"],
        idx, target, weights, coef, pen_scale, 2.0, per,
    )  # fmt: skip
    # The numpy form it replaced.
    ref = grid["mu"][:, idx] - target
    shared = ref @ coef
    ref += shared[:, None]
    np.abs(ref, out=ref)
    ref *= grid["inv_sigma"][:, idx]
    hk = np.minimum(ref, np.float32(2.0))
    ref -= 0.5 * hk
    ref *= hk
    want = grid["logprior"] - (
        ref @ weights + grid["log_ratio"][:, idx] @ weights + pen_scale * shared.astype(float) ** 2
    )
    np.testing.assert_allclose(per, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert np.ptp(got) > 1.0  # the cells really differ: nothing passed by being constant


def test_moments_and_prior_match_the_weighted_sums(grid):
    logpost = grid["logprior"] - 0.05 * (grid["x"] - 4.0) ** 2 - 0.2 * (grid["y"] - 6.0) ** 2
    logpost[:10] -= 100.0  # beyond the span: these cells weigh exactly nothing
    kernels.add_prior(logpost, grid["x"], grid["y"], 5.0, 5.0, 0.5, 0.1, 0.25)
    mx, my, sxx, sxy, syy, w = kernels.moments(logpost, grid["x"], grid["y"], 30.0)
    dx, dy = grid["x"] - 5.0, grid["y"] - 5.0
    ref_lp = (
        grid["logprior"]
        - 0.05 * (grid["x"] - 4.0) ** 2
        - 0.2 * (grid["y"] - 6.0) ** 2
        - np.where(np.arange(CELLS) < 10, 100.0, 0.0)
        - 0.5 * (0.5 * dx * dx + 2 * 0.1 * dx * dy + 0.25 * dy * dy)
    )
    np.testing.assert_allclose(logpost, ref_lp, rtol=1e-12)
    keep = ref_lp > ref_lp.max() - 30.0
    ref_w = np.where(keep, np.exp(ref_lp - ref_lp.max()), 0.0)
    ref_w /= ref_w.sum()
    np.testing.assert_allclose(w, ref_w, rtol=1e-12, atol=1e-300)
    assert (w[:10] == 0).all() and (w[10:] > 0).all()
    pts = np.column_stack([grid["x"], grid["y"]])
    mean = ref_w @ pts
    d = pts - mean
    cov = (d * ref_w[:, None]).T @ d
    np.testing.assert_allclose([mx, my], mean, rtol=1e-12)
    np.testing.assert_allclose([[sxx, sxy], [sxy, syy]], cov, rtol=1e-10)


def test_leave_one_out_and_level_spread_over_the_active_cells(grid):
    rng = np.random.default_rng(3)
    idx = np.array([1, 4, 5])
    per = rng.uniform(0.0, 3.0, (CELLS, 3)).astype(np.float32)
    logpost = -rng.uniform(0.0, 40.0, CELLS)
    weights = np.array([1.0, 0.8, 1.2])
    active = np.where(logpost > -30.0, rng.uniform(0.1, 1.0, CELLS), 0.0)
    active /= active.sum()
    seen, spread = kernels.leave_one_out(
        logpost, per, grid["log_ratio"], grid["mu"], idx, weights, active
    )
    sel = active > 0
    loo = logpost[sel][:, None] + (per[sel] + grid["log_ratio"][sel][:, idx]) * weights
    loo = np.exp(loo - loo.max(axis=0))
    loo /= loo.sum(axis=0)
    mu = grid["mu"][sel][:, idx]
    ref_seen = (loo * mu).sum(axis=0)
    np.testing.assert_allclose(seen, ref_seen, rtol=1e-10)
    np.testing.assert_allclose(spread, (loo * (mu - ref_seen) ** 2).sum(axis=0), rtol=1e-9)
    mix = np.array([0.5, 0.3, 0.2])
    level = grid["mu"][:, idx] @ mix
    ref = float(active @ (level - active @ level) ** 2)
    assert kernels.level_spread(grid["mu"], idx, active, mix) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize(("damping_s", "adapt_gate"), [(0.0, 4.0), (3.0, 4.0), (0.0, 0.0)])
def test_motion_step_is_the_reference_filter_step(grid, damping_s, adapt_gate):
    """motion.predict, the manoeuvre gate, the prior on the grid, its moments and
    motion.condition, as engine.py composed them before one compiled call did it all."""
    rng = np.random.default_rng(5)
    cx, cy = grid["x"], grid["y"]
    widened = 0
    for _ in range(20):
        prev = rng.normal(0.0, 1.0, 4) + np.array([6.0, 4.5, 0.0, 0.0])
        a = rng.normal(0.0, 0.5, (4, 4))
        cov = a @ a.T + np.eye(4) * 0.1
        centre = rng.uniform([0.0, 0.0], [12.0, 9.0])
        spread = rng.uniform(0.3, 4.0)
        logpost = -0.5 * ((cx - centre[0]) ** 2 + (cy - centre[1]) ** 2) / spread
        gate = np.array([*centre, 1.0, 0.1, 1.5])
        m4, p4, mean, cov2, w = kernels.motion_step(
            prev, cov, True, 1.0, 0.1, damping_s, gate, adapt_gate, logpost.copy(), cx, cy,
            30.0, 0.01, 0.64,
        )  # fmt: skip
        kf = motion.predict(prev, cov, 1.0, 0.1, damping_s)
        nis = motion.mahalanobis2(kf[1][:2, :2] + [[1.0, 0.1], [0.1, 1.5]], *(centre - kf[0][:2]))
        if adapt_gate and nis > adapt_gate:
            kf = (kf[0], kf[1] * (nis / adapt_gate))
            widened += 1
        ref = logpost.copy()
        kernels.add_prior(ref, cx, cy, kf[0][0], kf[0][1], *motion.inverse2(kf[1][:2, :2]))
        mx, my, sxx, sxy, syy, ref_w = kernels.moments(ref, cx, cy, 30.0)
        ref_cov = np.array([[sxx + 0.01, sxy], [sxy, syy + 0.01]])
        ref_m, ref_p = motion.condition(kf[0], kf[1], np.array([mx, my]), ref_cov)
        assert np.allclose(mean, [mx, my], rtol=0, atol=1e-12)
        assert np.allclose(cov2, ref_cov, rtol=0, atol=1e-12)
        assert np.allclose(m4, ref_m, rtol=0, atol=1e-10)
        assert np.allclose(p4, ref_p, rtol=0, atol=1e-10)
        assert np.allclose(w, ref_w, rtol=1e-9, atol=1e-300)
    assert widened > 0 if adapt_gate else widened == 0
    # A first step has no prior: the likelihood's posterior, at rest with the initial speed sd.
    m4, p4, mean, _, _ = kernels.motion_step(
        np.zeros(4), np.zeros((4, 4)), False, 0.0, 0.1, 0.0, np.full(5, np.nan), 4.0,
        logpost.copy(), cx, cy, 30.0, 0.01, 0.64,
    )  # fmt: skip
    assert m4[2:].tolist() == [0.0, 0.0] and p4[2, 2] == p4[3, 3] == 0.64
    assert np.allclose(mean, kernels.moments(logpost.copy(), cx, cy, 30.0)[:2])
