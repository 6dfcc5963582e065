"""The compiled per-cell loops compute the numpy expressions they replaced (engine.py before
kernels.py), on random inputs, to float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest

from store_server.positioning import kernels

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
