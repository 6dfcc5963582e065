"""Period reports: the exact k-anonymous taste report, its noisy (DP) variant, the weekly pipeline.

The job (`python -m analytics run --period ...`) loads visits and tastes from the database and calls
`weekly_report`; everything here is pure and takes DataFrames.

A weekly bundle with a catchment publishes its taste rows over the catchment's own cells: two
groupings of the same people (hierarchy labels for tastes, merged neighbours for the catchment)
would let a reader subtract a row from a cell that contains it and read a group under k.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import mapping

from analytics.catchment import Catchment, NoiseOptions, catchment, release_threshold
from analytics.hierarchy import Hierarchy
from analytics.privacy import (
    PrivacyError,
    PrivacyLedger,
    discrete_gaussian,
    discrete_laplace,
    gaussian_sigma,
    noise_tail,
    secure_rng,
    week_window,
)
from analytics.segments import describe_report, suggest_titles, taste_segments
from analytics.taste import (
    MIN_K,
    ReportError,
    _check_finite,
    _one_row_per_subscriber,
    assign_leaves,
    taste_report,
)

QUANTUM = 1000  # genre weights are released as integer thousandths so noise stays discrete
MECHANISMS = ("laplace", "gaussian")


def _noise(mechanism: str, scale: float, size: int, rng: np.random.Generator) -> np.ndarray:
    if mechanism == "laplace":
        return discrete_laplace(scale, size, rng)
    return discrete_gaussian(scale, size, rng)


def _scales(mechanism: str, epsilon: float, delta: float) -> tuple[float, float]:
    """Noise scale for counts (sensitivity 1) and for quantised genre sums (sensitivity QUANTUM)."""
    # half the budget for who is counted, half for what they like
    if mechanism == "laplace":
        return 2.0 / epsilon, 2.0 * QUANTUM / epsilon
    return gaussian_sigma(epsilon / 2, delta / 2), gaussian_sigma(epsilon / 2, delta / 2, QUANTUM)


def dp_taste_report(
    subscribers: pd.DataFrame,
    hierarchy: Hierarchy,
    k: int,
    epsilon: float,
    delta: float = 1e-6,
    mechanism: str = "laplace",
    rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """Noisy taste report: noisy leaf counts decide the rows, noisy sums give the shares.

    Contribution bounding: one row per subscriber, genre weights clipped at 0 and scaled to sum
    1. Rows are chosen from noisy counts against the threshold k + the noise's delta-tail, so the
    choice is itself private; a row whose true count is under k (probability <= delta) is still
    dropped, because PRODUCT.md makes k an invariant of every cell.
    """
    if k < MIN_K:
        raise ReportError(f"k must be at least {MIN_K}, got {k}")
    if mechanism not in MECHANISMS:
        raise PrivacyError(f"mechanism must be one of {', '.join(MECHANISMS)}")
    if epsilon <= 0 or not 0 < delta < 1:
        raise PrivacyError("need epsilon > 0 and 0 < delta < 1")
    rng = rng if rng is not None else secure_rng()
    genres = [c for c in subscribers.columns if c not in ("subscriber", "area")]
    people = _one_row_per_subscriber(subscribers, genres)
    unknown = ~people["area"].isin(list(hierarchy.lines))
    if unknown.any():
        raise ReportError(f"area {people.loc[unknown, 'area'].iloc[0]!r} is not a hierarchy leaf")
    weights = people[genres].to_numpy(dtype=float).clip(min=0.0)
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
    quantised = np.floor(weights * QUANTUM).astype(np.int64)
    count_scale, sum_scale = _scales(mechanism, epsilon, delta)
    leaves = hierarchy.leaves
    exact = people.groupby("area").size().reindex(leaves, fill_value=0).to_numpy()
    noisy = np.maximum(exact + _noise(mechanism, count_scale, len(leaves), rng), 0)
    threshold = k + noise_tail(mechanism, count_scale, delta)
    assignment = assign_leaves(dict(zip(leaves, noisy.tolist(), strict=True)), hierarchy, threshold)
    row_of_person = people["area"].map(assignment)
    noisy_by_leaf = dict(zip(leaves, noisy.tolist(), strict=True))
    rows = []
    for label in dict.fromkeys(v for v in assignment.values() if v is not None):
        members = (row_of_person == label).to_numpy()
        if members.sum() < k:
            continue
        count = sum(noisy_by_leaf[leaf] for leaf, row in assignment.items() if row == label)
        sums = quantised[members].sum(axis=0) + _noise(mechanism, sum_scale, len(genres), rng)
        shares = np.clip(sums / QUANTUM / max(count, 1), 0.0, 1.0)
        rows.append(
            {"area": label, "subscribers": int(count), **dict(zip(genres, shares, strict=True))}
        )
    out = pd.DataFrame(rows, columns=["area", "subscribers", *genres])
    out.attrs.update(k=k, epsilon=epsilon, delta=delta, mechanism=mechanism, threshold=threshold)
    return out


def _sum_scale(mechanism: str, epsilon: float, delta: float) -> float:
    """Noise scale for quantised genre sums (sensitivity QUANTUM) on the whole of epsilon."""
    if mechanism == "laplace":
        return QUANTUM / epsilon
    return gaussian_sigma(epsilon, delta, QUANTUM)


def taste_over_cells(
    subscribers: pd.DataFrame,
    cells: Catchment,
    k: int,
    epsilon: float = 0.0,
    delta: float = 1e-6,
    mechanism: str = "laplace",
    rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """Taste rows `area, subscribers, <genres>` with one row per published catchment cell.

    The row of a cell holds exactly the cell's people, so no row and cell of one bundle differ
    by fewer than k subscribers; people of withheld cells are in no row.  Exact: genre means and
    the cell's own count.  Noisy (epsilon > 0): the cell's already noisy count is reused (a second
    draw of one count could be averaged) and all of epsilon goes to the quantised genre sums.
    """
    if k < MIN_K:
        raise ReportError(f"k must be at least {MIN_K}, got {k}")
    genres = [c for c in subscribers.columns if c not in ("subscriber", "area")]
    people = _one_row_per_subscriber(subscribers, genres)
    cell_of = {
        area: cid for cid, areas in zip(cells.cells.index, cells.cells["areas"], strict=True)
        for area in areas
    }  # fmt: skip
    row = people["area"].map(cell_of)
    noisy = epsilon > 0
    if noisy:
        if mechanism not in MECHANISMS:
            raise PrivacyError(f"mechanism must be one of {', '.join(MECHANISMS)}")
        if not 0 < delta < 1:
            raise PrivacyError("need epsilon > 0 and 0 < delta < 1")
        rng = rng if rng is not None else secure_rng()
        scale = _sum_scale(mechanism, epsilon, delta)
        weights = people[genres].to_numpy(dtype=float).clip(min=0.0)
        totals = weights.sum(axis=1, keepdims=True)
        weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
        quantised = np.floor(weights * QUANTUM).astype(np.int64)
    rows = []
    for cid in cells.cells.index:
        members = (row == cid).to_numpy()
        true_count = int(members.sum())
        published = cells.cells.loc[cid, "subscribers"]
        if true_count < k or (not noisy and true_count != published):
            # the catchment published this cell for exactly these people; anything else means
            # the two inputs disagree, and a row that differs from its cell must not leave
            raise ReportError(f"cell {cid!r}: taste rows and catchment cells disagree")
        if noisy:
            count = float(published)
            sums = quantised[members].sum(axis=0) + _noise(mechanism, scale, len(genres), rng)
            shares = np.clip(sums / QUANTUM / max(count, 1.0), 0.0, 1.0)
        else:
            count = true_count
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused below
                shares = people.loc[members, genres].to_numpy(dtype=float).mean(axis=0)
        rows.append(
            {"area": cid, "subscribers": int(count), **dict(zip(genres, shares, strict=True))}
        )
    out = pd.DataFrame(rows, columns=["area", "subscribers", *genres])
    _check_finite(out, genres)
    if noisy:
        out.attrs.update(
            k=k, epsilon=epsilon, delta=delta, mechanism=mechanism, threshold=cells.threshold
        )
    return out


@dataclass
class WeeklyReport:
    """A report as stored for the portal, with the guarantees it was produced under."""

    merchant: str
    week: tuple[pd.Timestamp, pd.Timestamp]
    k: int
    epsilon: float  # 0 for an exact k-anonymous report
    delta: float
    mechanism: str | None
    subscribers: int  # distinct consented visitors in the week (exact; not published when DP)
    table: pd.DataFrame
    catchment: Catchment | None = None

    def to_dict(self, n_segments: int = 3, n_titles: int = 5) -> dict:
        """JSON-ready form for storage and the portal: guarantees, rows, segments, suggestions."""
        genres = [c for c in self.table.columns if c not in ("area", "subscribers")]
        described = describe_report(self.table, n_segments=n_segments) if len(self.table) else None
        _, profiles = taste_segments(self.table, n_segments)
        out: dict = {
            "merchant": self.merchant,
            "week": [self.week[0].isoformat(), self.week[1].isoformat()],
            "guarantees": {
                "k": self.k,
                "epsilon": self.epsilon,
                "delta": self.delta,
                "mechanism": self.mechanism,
                "threshold": self.table.attrs.get("threshold"),
            },
            "taste": [] if described is None else _records(described),
            "segments": _records(profiles),
            "suggestions": [],
            "catchment": None,
        }
        if len(self.table) and genres:
            # the merchant's overall taste: rows weighted by the people they speak for
            weight = self.table["subscribers"].to_numpy(dtype=float)
            overall = dict(zip(genres, self.table[genres].to_numpy().T @ weight / weight.sum(),
                               strict=True))  # fmt: skip
            out["suggestions"] = _records(suggest_titles(overall, n=n_titles))
        if self.catchment is not None:
            cells = pd.DataFrame(self.catchment.cells.drop(columns="geometry")).reset_index()
            out["catchment"] = {
                "share": self.catchment.share,
                "suppressed_visits": self.catchment.suppressed_visits,
                "polygon": None if self.catchment.polygon is None
                else mapping(self.catchment.polygon),
                "cells": _records(cells),
            }  # fmt: skip
        return out


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as plain dicts with NaN turned into None, so json.dumps accepts them."""
    clean = frame.astype(object).where(frame.notna(), None)
    return [
        {key: (value.item() if hasattr(value, "item") else value) for key, value in row.items()}
        for row in clean.to_dict(orient="records")
    ]


def weekly_report(
    visits: pd.DataFrame,
    tastes: pd.DataFrame,
    hierarchy: Hierarchy,
    merchant: str,
    week_start: pd.Timestamp | str,
    k: int,
    ledger: PrivacyLedger,
    epsilon: float = 0.0,
    delta: float = 1e-6,
    mechanism: str = "laplace",
    rng: np.random.Generator | None = None,
    areas: gpd.GeoDataFrame | None = None,
    share: float = 0.7,
) -> WeeklyReport:
    """Taste report (and, given area polygons, catchment) of one merchant over one ISO week.

    visits: subscriber, time[, consent][, dwell]; tastes: subscriber, area, <genre weights>.  The
    ledger refuses any window that is not a whole Monday-to-Monday week or was already released,
    which is what stops overlapping or repeated reports from being differenced into small cells.
    Given areas, the taste rows are the catchment's published cells (`taste_over_cells`), so the
    bundle groups people one way only; without areas they follow the hierarchy.  With epsilon > 0
    the taste rows and the catchment are both noisy, each on half the budget; visits before the
    week only mark returning visitors.
    """
    window = week_window(week_start)
    v = visits
    if "consent" in v.columns:
        v = v[v["consent"].astype(bool)]
    times = pd.to_datetime(v["time"])
    visitors = set(v.loc[(times >= window[0]) & (times < window[1]), "subscriber"].astype(str))
    people = tastes[tastes["subscriber"].astype(str).isin(visitors)]
    # both parts see the same people, so with a catchment each gets half the budget
    parts = 2 if areas is not None else 1
    area_of = None
    noise = (
        NoiseOptions(epsilon / parts, delta / parts, mechanism, rng=rng) if epsilon > 0 else None
    )
    if areas is not None and people.empty:
        # nobody placeable came, and catchment() refuses an empty week.  A noisy bundle still
        # states the threshold its cells would have had to reach: another one (the hierarchy
        # report's) would tell this week from one whose few visitors were all withheld
        table = taste_report(people, hierarchy, k)
        if noise is not None:
            table.attrs.update(threshold=float(release_threshold(k, noise)))
    elif areas is not None:
        first = tastes.drop_duplicates("subscriber")
        home = pd.Series(
            first["area"].astype(str).to_numpy(), index=first["subscriber"].astype(str)
        )
        area_of = catchment(
            v.assign(area=v["subscriber"].astype(str).map(home)).dropna(subset=["area"]),
            areas, share=share, k=k, period_start=window[0], period_end=window[1], noise=noise,
        )  # fmt: skip
        # one partition for the whole bundle: the catchment's cells are the taste rows
        table = taste_over_cells(people, area_of, k, epsilon / parts, delta / parts, mechanism, rng)
    elif epsilon > 0:
        table = dp_taste_report(people, hierarchy, k, epsilon, delta, mechanism, rng)
    else:
        table = taste_report(people, hierarchy, k)
    # charged only once the report exists, and nothing leaves this function if the charge fails
    ledger.charge(merchant, window[0], epsilon, delta if epsilon > 0 else 0.0)
    return WeeklyReport(
        merchant=merchant,
        week=window,
        k=k,
        epsilon=epsilon,
        delta=delta if epsilon > 0 else 0.0,
        mechanism=mechanism if epsilon > 0 else None,
        subscribers=len(visitors),
        table=table,
        catchment=area_of,
    )
