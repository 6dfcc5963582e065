"""k-anonymous taste reports: publish hierarchy labels bottom-up until each row holds >= k people.

A subscriber belongs to the most specific published label on its hierarchy line, so a label is one
row whatever depth its subscribers reach it from.  Labels are decided children-first: a label is
published when the subscribers still unplaced beneath it number at least k; otherwise they rise
to the next label of their line.  If fewer than k are left for `*`, the smallest published label
that would hand its subscribers straight to `*` is withdrawn and the pass re-run, so people are
generalised rather than dropped whenever that is possible.  Everything is computed on per-leaf
counts, so the cost in subscribers is one group-by.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import pandas as pd

from analytics.hierarchy import ROOT, Hierarchy

MIN_K = 5
# What every report starts with, before one column per genre.
REPORT_COLUMNS = ("area", "subscribers")


class ReportError(ValueError):
    """Input that cannot produce a report as asked."""


def _topological_labels(hierarchy: Hierarchy) -> list[str]:
    """Every label, each after all labels below it on any line."""
    children: dict[str, set[str]] = defaultdict(set)
    indegree: dict[str, int] = {}
    for line in hierarchy.lines.values():
        for label in line:
            indegree.setdefault(label, 0)
        for low, high in itertools.pairwise(line):
            if high not in children[low]:
                children[low].add(high)
                indegree[high] += 1
    ready = [label for label, deg in indegree.items() if deg == 0]
    order: list[str] = []
    while ready:
        label = ready.pop()
        order.append(label)
        for up in children[label]:
            indegree[up] -= 1
            if indegree[up] == 0:
                ready.append(up)
    if len(order) != len(indegree):
        raise ReportError("hierarchy: labels are ordered both ways on different lines")
    return order


def assign_leaves(counts: dict[str, int], hierarchy: Hierarchy, k: int) -> dict[str, str | None]:
    """Leaf -> the label its subscribers are published under (None: suppressed)."""
    if k < MIN_K:
        raise ReportError(f"k must be at least {MIN_K}, got {k}")
    order = _topological_labels(hierarchy)
    leaves_of: dict[str, list[str]] = defaultdict(list)
    for leaf, line in hierarchy.lines.items():
        if counts.get(leaf, 0) > 0:
            for label in line:
                leaves_of[label].append(leaf)
    forbidden: set[str] = set()
    while True:
        assigned: dict[str, str | None] = {}
        sizes: dict[str, int] = {}
        for label in order:
            waiting = [leaf for leaf in leaves_of.get(label, ()) if leaf not in assigned]
            total = sum(counts[leaf] for leaf in waiting)
            if total >= k and label not in forbidden:
                sizes[label] = total
                for leaf in waiting:
                    assigned[leaf] = label
        left = sum(counts[leaf] for leaf in leaves_of.get(ROOT, ()) if leaf not in assigned)
        if left == 0 or ROOT in sizes:
            break
        withdraw = _withdrawable(hierarchy, sizes, forbidden)
        if withdraw is None:
            break
        forbidden.add(withdraw)
    return {leaf: assigned.get(leaf) for leaf in hierarchy.lines}


def _withdrawable(hierarchy: Hierarchy, sizes: dict[str, int], forbidden: set[str]) -> str | None:
    """The smallest published label whose subscribers would all rise straight to `*`."""
    above: dict[str, set[str]] = defaultdict(set)
    for line in hierarchy.lines.values():
        for i, label in enumerate(line[:-1]):
            above[label].update(line[i + 1 : -1])
    published = set(sizes)
    candidates = [
        (size, label)
        for label, size in sizes.items()
        if label != ROOT and label not in forbidden and not above[label] & published
    ]
    return min(candidates)[1] if candidates else None


def taste_report(
    subscribers: pd.DataFrame, hierarchy: Hierarchy, k: int, genres: list[str] | None = None
) -> pd.DataFrame:
    """Rows `area, subscribers, <genre means>` with every row >= k distinct subscribers."""
    if k < MIN_K:
        raise ReportError(f"k must be at least {MIN_K}, got {k}")
    for column in ("subscriber", "area"):
        if column not in subscribers.columns:
            raise ReportError(f"subscribers: missing column {column!r}")
    if genres is None:
        genres = [c for c in subscribers.columns if c not in ("subscriber", "area")]
    clash = [genre for genre in genres if genre in REPORT_COLUMNS]
    if clash:
        # The report's own column would be overwritten by the genre's mean, or hide it.
        raise ReportError(f"subscribers: genre column {clash[0]!r} is a column the report uses")
    # sums of huge weights overflow to inf: refused below, without numpy warning lines first
    with np.errstate(over="ignore", invalid="ignore"):
        people = _one_row_per_subscriber(subscribers, genres)
        unknown = ~people["area"].isin(list(hierarchy.lines))
        if unknown.any():
            raise ReportError(
                f"subscribers: area {people.loc[unknown, 'area'].iloc[0]!r} is not a hierarchy leaf"
            )
        per_leaf = people.groupby("area", sort=False)[genres].sum()
        per_leaf["_n"] = people.groupby("area", sort=False).size()
        counts = per_leaf["_n"].to_dict()
        assignment = assign_leaves(counts, hierarchy, k)
        per_leaf["_row"] = per_leaf.index.map(assignment)
        per_leaf = per_leaf[per_leaf["_row"].notna()]
        rows = per_leaf.groupby("_row", sort=False)[[*genres, "_n"]].sum()
        label_rank = {}
        for line in hierarchy.lines.values():
            for label in line:
                label_rank.setdefault(label, len(label_rank))
        rows = rows.loc[sorted(rows.index, key=lambda label: (label == ROOT, label_rank[label]))]
        out = pd.DataFrame({"area": rows.index, "subscribers": rows["_n"].to_numpy(dtype=np.int64)})
        for genre in genres:
            out[genre] = rows[genre].to_numpy(dtype=float) / out["subscribers"].to_numpy()
    out = out.reset_index(drop=True)
    _check_finite(out, genres)
    return out


def _check_finite(report: pd.DataFrame, genres: list[str]) -> None:
    """Refuse a report whose means overflowed: inf or NaN must never reach a CSV or JSON."""
    values = report[genres].to_numpy(dtype=float)
    if values.size and not np.isfinite(values).all():
        raise ReportError("subscribers: genre weights too large to add up (the sum overflows)")


def _one_row_per_subscriber(df: pd.DataFrame, genres: list[str]) -> pd.DataFrame:
    """One row per distinct subscriber; repeated rows of one person average their weights."""
    df = df[["subscriber", "area", *genres]].copy()
    df["subscriber"] = df["subscriber"].astype(str)
    df["area"] = df["area"].astype(str)
    for genre in genres:
        values = pd.to_numeric(df[genre], errors="coerce")
        if values.isna().any():
            raise ReportError(f"subscribers: column {genre!r} has a missing or non-numeric weight")
        values = values.astype(float)
        if not np.isfinite(values.to_numpy()).all():
            # inf, or a literal such as 1e400 that parses to inf: no mean can be published
            raise ReportError(f"subscribers: column {genre!r} has a weight that is not finite")
        df[genre] = values
    if not df["subscriber"].duplicated().any():
        return df
    areas = df.groupby("subscriber", sort=False)["area"].nunique()
    if (areas > 1).any():
        who = areas.index[areas > 1][0]
        raise ReportError(f"subscribers: subscriber {who!r} has more than one area")
    return df.groupby(["subscriber", "area"], sort=False, as_index=False)[genres].mean()
