"""Differential-privacy building blocks: integer noise, fixed weekly windows, a budget ledger.

Noise is added to integers only (counts, and genre sums quantised to 1/1000), with the discrete
Laplace or discrete Gaussian of Canonne, Kamath and Steinke (2020), because floating-point
Laplace leaks through its low bits (Mironov 2012).  Windows are fixed ISO weeks so two reports can
never cover overlapping spans whose difference is a small cell, and the ledger refuses a second
report for a window already released, or one that would exceed a merchant's budget (basic
composition of (epsilon, delta)).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

WEEK = pd.Timedelta(days=7)


class PrivacyError(ValueError):
    """A release the privacy rules forbid."""


class BudgetExceeded(PrivacyError):
    """A report that would spend more than the merchant's privacy budget."""


def secure_rng() -> np.random.Generator:
    """A generator seeded from the OS entropy pool, for noise nobody can replay."""
    return np.random.default_rng(secrets.randbits(128))


def discrete_laplace(scale: float, size: int | tuple, rng: np.random.Generator) -> np.ndarray:
    """Integers with P(x) proportional to exp(-|x|/scale)."""
    if scale <= 0:
        raise PrivacyError("noise scale must be positive")
    p = 1.0 - math.exp(-1.0 / scale)
    # the difference of two i.i.d. geometric counts is two-sided geometric = discrete Laplace
    return (rng.geometric(p, size) - rng.geometric(p, size)).astype(np.int64)


def discrete_gaussian(sigma: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Integers with P(x) proportional to exp(-x^2 / (2 sigma^2)), by rejection from Laplace."""
    if sigma <= 0:
        raise PrivacyError("noise sigma must be positive")
    sigma2 = sigma * sigma
    t = math.floor(sigma) + 1
    out = np.empty(size, dtype=np.int64)
    filled = 0
    while filled < size:
        y = discrete_laplace(t, size - filled, rng)
        gamma = (np.abs(y) - sigma2 / t) ** 2 / (2 * sigma2)
        keep = y[rng.random(len(y)) < np.exp(-gamma)]
        out[filled : filled + len(keep)] = keep
        filled += len(keep)
    return out


def gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """Sigma giving (epsilon, delta)-DP through rho-zCDP, which the discrete Gaussian meets."""
    if not (epsilon > 0 and 0 < delta < 1):
        raise PrivacyError("the Gaussian mechanism needs epsilon > 0 and 0 < delta < 1")
    log_term = math.log(1 / delta)
    rho = (math.sqrt(log_term + epsilon) - math.sqrt(log_term)) ** 2
    return sensitivity / math.sqrt(2 * rho)


def noise_tail(mechanism: str, scale: float, delta: float) -> int:
    """Smallest m with P(noise > m) <= delta, used to set the release threshold."""
    if mechanism == "laplace":
        # P(X > m) = e^{-(m+1)/s} / (1 + e^{-1/s}) <= e^{-(m+1)/s}
        return max(0, math.ceil(scale * math.log(1 / delta)) - 1)
    # sub-Gaussian tail of the discrete Gaussian (CKS20, Prop. 19)
    return math.ceil(scale * math.sqrt(2 * math.log(1 / delta)))


def week_window(start: pd.Timestamp | str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The fixed ISO week [Monday 00:00, next Monday 00:00) starting at start, or refuse."""
    begin = pd.Timestamp(start)
    if begin != begin.normalize() or begin.weekday() != 0:
        raise PrivacyError(f"report windows are whole ISO weeks starting on a Monday, not {begin}")
    return begin, begin + WEEK


@dataclass
class Release:
    """One report charged to a merchant's budget."""

    merchant: str
    window: tuple[pd.Timestamp, pd.Timestamp]
    epsilon: float
    delta: float


@dataclass
class PrivacyLedger:
    """Per-merchant (epsilon, delta) budget under basic composition; one release per window."""

    epsilon_budget: float
    delta_budget: float = 1e-6
    releases: list[Release] = field(default_factory=list)

    def __post_init__(self) -> None:
        # every comparison with NaN is false, so a NaN budget would never refuse anything
        for name, value in (("epsilon", self.epsilon_budget), ("delta", self.delta_budget)):
            if not (math.isfinite(value) and value >= 0):
                raise PrivacyError(f"the {name} budget must be a finite number >= 0, not {value}")

    def spent(self, merchant: str) -> tuple[float, float]:
        """Total epsilon and delta already released for the merchant."""
        mine = [r for r in self.releases if r.merchant == merchant]
        return sum(r.epsilon for r in mine), sum(r.delta for r in mine)

    def charge(self, merchant: str, week_start: pd.Timestamp | str, epsilon: float,
               delta: float = 0.0) -> Release:  # fmt: skip
        """Record a release, or refuse it if the window was released or the budget would burst."""
        window = week_window(week_start)
        if not (math.isfinite(epsilon) and math.isfinite(delta)) or epsilon < 0 or delta < 0:
            # an exact (k-anonymous only) report spends 0 but still takes its window; NaN would
            # slip past every budget comparison below
            raise PrivacyError("a release must spend a finite, non-negative epsilon and delta")
        if any(r.merchant == merchant and r.window == window for r in self.releases):
            # a second draw for the same week would let noise be averaged away
            raise PrivacyError(f"week {window[0].date()} was already released for {merchant}")
        eps, dlt = self.spent(merchant)
        if eps + epsilon > self.epsilon_budget + 1e-12 or dlt + delta > self.delta_budget + 1e-18:
            raise BudgetExceeded(
                f"{merchant}: spending epsilon {epsilon:g} would exceed the budget "
                f"({eps:g} of {self.epsilon_budget:g} used)"
            )
        release = Release(merchant, window, epsilon, delta)
        self.releases.append(release)
        return release
