"""Catchment area: the home areas that together bring a share of a merchant's visits.

Only visits with statistics consent count.  An area with fewer than k distinct visiting
subscribers is never shown alone: it is merged with an adjacent polygon (the visited neighbour
with the fewest visitors, then the longest shared border) until the merged cell reaches k; cells
that cannot are left out.  Cells are then taken by decreasing visits until the share is reached, and
dissolved into one polygon.  Shares are of the visits in published cells only: a total that
counted the left-out cells would give their visit count away by subtraction.  A cell's
returning/new split is two more cells over the same people, so each side must pass the rule a
cell passes or the split is withheld.  Geometry work is done in Lambert-93 (EPSG:2154) so that
buffers and border lengths are in metres; the result is handed back in the input CRS.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from shapely.geometry.base import BaseGeometry

from analytics.privacy import (
    discrete_gaussian,
    discrete_laplace,
    gaussian_sigma,
    noise_tail,
    secure_rng,
)

METRIC_CRS = "EPSG:2154"
MIN_K = 5


class CatchmentError(ValueError):
    """Visits or areas that cannot produce a catchment as asked."""


@dataclass
class Catchment:
    """Published cells (>= k subscribers each) and the dissolved catchment polygon."""

    cells: gpd.GeoDataFrame  # one row per published cell, most visited first
    polygon: BaseGeometry | None  # union of the cells inside the catchment, input CRS
    share: float  # share of the published cells' visits the catchment holds
    k: int
    # visits from cells that could not reach k; None when fewer than k people made them, since
    # "3 visits were left out" would then describe one to four people, and always with noise
    suppressed_visits: int | None
    # the count a cell had to reach to be published: k, or k + the noise's delta-tail
    threshold: float = 0.0


def adjacency(areas: gpd.GeoDataFrame, code: str = "code", min_border_m: float = 50.0) -> dict:
    """(code_a, code_b) -> shared border in metres, for polygons sharing more than a point."""
    metric = areas[[code, "geometry"]].to_crs(METRIC_CRS).reset_index(drop=True)
    # coverages are edge-to-edge only up to simplification, so borders are matched within 5 m
    grown = metric.assign(geometry=metric.geometry.buffer(5.0))
    pairs = gpd.sjoin(grown, metric, predicate="intersects", how="inner")
    pairs = pairs[pairs[f"{code}_left"] != pairs[f"{code}_right"]]
    out: dict[tuple[str, str], float] = {}
    for left, right, i, j in zip(
        pairs[f"{code}_left"],
        pairs[f"{code}_right"],
        pairs.index,
        pairs["index_right"],
        strict=True,
    ):
        border = metric.geometry.iloc[j].boundary.intersection(grown.geometry.iloc[i]).length
        if border >= min_border_m:
            out[(str(left), str(right))] = float(border)
    return out


def _merge_small_cells(
    counts: dict[str, float], codes: list[str], borders: dict, k: float
) -> dict[str, str]:
    """Area code -> cell id after merging cells whose count is under k with adjacent ones."""
    cell_of = {c: c for c in codes}
    members = {c: {c} for c in codes}
    size = {c: float(counts.get(c, 0)) for c in codes}
    neighbours: dict[str, list[tuple[str, float]]] = {c: [] for c in codes}
    for (a, b), length in borders.items():
        if a in neighbours and b in cell_of:
            neighbours[a].append((b, length))
    while True:
        small = sorted((n, cid) for cid, n in size.items() if 0 < n < k)
        merged = False
        for _, cid in small:
            touching: dict[str, float] = {}
            for area in members[cid]:
                for b, length in neighbours[area]:
                    if cell_of[b] != cid:
                        touching[cell_of[b]] = touching.get(cell_of[b], 0.0) + length
            # empty neighbours add no one, and absorbing them would grow shapeless cells
            touching = {t: length for t, length in touching.items() if size[t] > 0}
            if not touching:
                continue
            # prefer merging small with small so busy neighbours keep their detail
            target = min(touching, key=lambda t: (size[t], -touching[t], t))
            for area in members[target]:
                cell_of[area] = cid
            members[cid] |= members.pop(target)
            size[cid] += size.pop(target)
            merged = True
            break
        if not merged:
            # a merged cell is named by all its areas so no one reads it as a single commune
            return {area: "+".join(sorted(members[cid])) for area, cid in cell_of.items()}


def releasable(count: ArrayLike, true_count: ArrayLike, threshold: float, k: int) -> np.ndarray:
    """Which released counts may be published: count >= threshold and true count >= k."""
    # the released count may be noisy; its tail threshold keeps noise from lifting a small group
    # over the line often, and the true count makes sure it never does (exact: both are the same)
    released = np.asarray(count, dtype=float)
    true = np.asarray(true_count, dtype=float)
    return (released >= threshold) & (true >= k)


@dataclass
class NoiseOptions:
    """Differential privacy for a catchment: epsilon split evenly over four released sums."""

    epsilon: float
    delta: float = 1e-6
    mechanism: str = "laplace"
    max_visits: int = 7  # per subscriber and period: contribution bound
    max_dwell: int = 4 * 3600  # seconds per visit, clipped
    rng: np.random.Generator | None = None


def _prepare(
    visits: pd.DataFrame,
    areas: gpd.GeoDataFrame,
    code: str,
    period_start: pd.Timestamp | None,
    period_end: pd.Timestamp | None,
) -> tuple[pd.DataFrame, set]:
    """Consented visits of the period, one home area per subscriber, and who is returning."""
    missing = {"subscriber", "area", "time", "dwell"} - set(visits.columns)
    if missing:
        raise CatchmentError(f"visits: missing column {sorted(missing)[0]!r}")
    v = visits
    if "consent" in v.columns:
        v = v[v["consent"].astype(bool)]
    v = v.assign(area=v["area"].astype(str), time=pd.to_datetime(v["time"]))
    if period_end is not None:
        # later visits belong to a later window; they must not leak into this one
        v = v[v["time"] < period_end]
    unknown = set(v["area"]) - set(areas[code].astype(str))
    if unknown:
        raise CatchmentError(f"visits: area {sorted(unknown)[0]!r} has no polygon")
    first_seen = v.groupby("subscriber")["time"].min()
    if period_start is not None:
        # earlier visits only tell who is returning; they are not counted in the period
        returning = set(first_seen.index[first_seen < period_start])
        v = v[v["time"] >= period_start]
    else:
        days = v.assign(day=v["time"].dt.floor("D")).groupby("subscriber")["day"].nunique()
        returning = set(days.index[days > 1])
    if v.empty:
        raise CatchmentError("no consented visits in the period")
    v = v.sort_values("time", kind="stable")
    # one home area per subscriber, so each person counts in exactly one cell
    home = v.groupby("subscriber")["area"].first()
    v = v.assign(area=v["subscriber"].map(home))
    return v, returning


def catchment(
    visits: pd.DataFrame,
    areas: gpd.GeoDataFrame,
    share: float = 0.7,
    k: int = MIN_K,
    period_start: pd.Timestamp | None = None,
    code: str = "code",
    period_end: pd.Timestamp | None = None,
    noise: NoiseOptions | None = None,
) -> Catchment:
    """Catchment of one merchant's visits (subscriber, area, time, dwell[, consent]).

    With period_start, earlier visits only mark subscribers as returning; without it, a
    subscriber is returning when seen on more than one day.  Use privacy.week_window for the
    period so catchments, like taste reports, come in fixed weeks.  With noise, every released
    number is noisy, cells are formed and released from noisy counts (threshold k + the noise's
    delta-tail) of the visited areas whose noisy count reaches 2 + that tail, a cell whose true
    count is under k is still withheld, and the suppressed visits are not stated.  The
    returning/new split of a cell is released only when both sides pass that same rule.
    """
    if k < MIN_K:
        raise CatchmentError(f"k must be at least {MIN_K}")
    if not 0.0 < share <= 1.0:
        raise CatchmentError("share must be in (0, 1]")
    v, returning = _prepare(visits, areas, code, period_start, period_end)
    codes = sorted(areas[code].astype(str))
    if noise is not None:
        v = v.groupby("subscriber", sort=False).head(noise.max_visits)
        v = v.assign(dwell=v["dwell"].clip(0, noise.max_dwell).round())
    people = v.groupby("area")["subscriber"].nunique().reindex(codes, fill_value=0)
    threshold: float = k
    if noise is not None:
        rng = noise.rng if noise.rng is not None else secure_rng()
        scales = _noise_scales(noise)
        tail = release_threshold(k, noise) - k
        # only areas someone came from are candidates (partition selection): noise on the
        # empty ones would glue phantom areas into cells.  A candidate must also clear what one
        # person's area reaches with probability <= delta (1 + tail): an area of one visitor
        # that took part in merges would name itself in a neighbour's cell, or be a withheld
        # cell, either way telling whether that person came, whatever the noise
        seen = people > 0
        people = people + _draw(noise.mechanism, scales["subscribers"], len(people), rng)
        people = people.where(seen & (people >= tail + 2), 0)
        threshold = k + tail
    cell_of = _merge_small_cells(people.to_dict(), codes, adjacency(areas, code), threshold)
    v = v.assign(cell=v["area"].map(cell_of))
    stats = v.groupby("cell").agg(
        subscribers=("subscriber", "nunique"), visits=("subscriber", "size"), dwell=("dwell", "sum")
    )
    ret = v[v["subscriber"].isin(returning)].groupby("cell")["subscriber"].nunique()
    stats["returning"] = ret.reindex(stats.index, fill_value=0)
    true_people = stats["subscribers"].copy()
    true_returning = stats["returning"].copy()
    if noise is not None:
        stats["subscribers"] = people.groupby(pd.Series(cell_of)).sum().reindex(stats.index)
        for column in ("visits", "dwell", "returning"):
            draw = _draw(noise.mechanism, scales[column], len(stats), rng)
            stats[column] = (stats[column] + draw).clip(lower=0)
    keep = releasable(stats["subscribers"], true_people, threshold, k)
    published = stats[keep].copy()
    # published cells only: with the withheld ones in the total, total - sum(published) would
    # be the withheld visit count that suppressed_visits hides when fewer than k made them
    total_visits = float(published["visits"].sum())
    suppressed_people = int(true_people[~keep].sum())
    suppressed_visits = None if 0 < suppressed_people < k else int(stats.loc[~keep, "visits"].sum())
    if noise is not None:
        # None or a number would say exactly whether 1 to k - 1 people were withheld, and a sum
        # over the withheld cells is exactly 0 when nobody was: not stated, like their number
        suppressed_visits = None
    published["new"] = published["subscribers"] - published["returning"]
    # each side of a split is itself a cell of people, so it passes the cell's rule or the split
    # is withheld: a noisy side under k + tail, or a true side under k, could be one person
    true_new = true_people[keep] - true_returning[keep]
    returning_ok = releasable(published["returning"], true_returning[keep], threshold, k)
    new_ok = releasable(published["new"], true_new, threshold, k)
    published.loc[~(returning_ok & new_ok), ["returning", "new"]] = np.nan
    published["share"] = published["visits"] / max(total_visits, 1.0)
    published["visits_per_subscriber"] = published["visits"] / published["subscribers"]
    published["mean_dwell"] = published["dwell"] / published["visits"].clip(lower=1)
    published = published.drop(columns="dwell").sort_values(
        ["visits", "subscribers"], ascending=False, kind="stable"
    )
    published["cumulative_share"] = published["share"].cumsum()
    before = published["cumulative_share"] - published["share"]
    published["in_catchment"] = before < share - 1e-12
    # members from the merge itself, not by splitting the name: a code may contain a `+`
    members: dict[str, list[str]] = {}
    for area_code, cid in cell_of.items():
        members.setdefault(cid, []).append(area_code)
    published["areas"] = [sorted(members[cid]) for cid in published.index]
    shapes = areas.assign(cell=areas[code].astype(str).map(cell_of))
    shapes = shapes[shapes["cell"].isin(published.index)].to_crs(METRIC_CRS)
    dissolved = shapes.dissolve(by="cell")[["geometry"]]
    cells = gpd.GeoDataFrame(published.join(dissolved), geometry="geometry", crs=METRIC_CRS).to_crs(
        areas.crs
    )
    cells.index.name = "cell"
    inside = cells[cells["in_catchment"]]
    polygon = None if inside.empty else inside.to_crs(METRIC_CRS).union_all().buffer(0)
    if polygon is not None:
        polygon = gpd.GeoSeries([polygon], crs=METRIC_CRS).to_crs(areas.crs).iloc[0]
    return Catchment(
        cells=cells,
        polygon=polygon,
        share=float(inside["share"].sum()),
        k=k,
        suppressed_visits=suppressed_visits,
        threshold=float(threshold),
    )


def _noise_scales(noise: NoiseOptions) -> dict[str, float]:
    """Noise scale per released sum, from its sensitivity under the contribution bounds."""
    if noise.epsilon <= 0 or noise.mechanism not in ("laplace", "gaussian"):
        raise CatchmentError("noise needs epsilon > 0 and mechanism laplace or gaussian")
    sensitivity = {
        "subscribers": 1.0,
        "visits": float(noise.max_visits),
        "dwell": float(noise.max_visits * noise.max_dwell),
        "returning": 1.0,
    }
    part = noise.epsilon / len(sensitivity)
    if noise.mechanism == "laplace":
        return {name: s / part for name, s in sensitivity.items()}
    # one more equal part of delta is the choice of candidate areas' (_selection_delta)
    part_delta = noise.delta / (len(sensitivity) + 1)
    return {name: gaussian_sigma(part, part_delta, s) for name, s in sensitivity.items()}


def release_threshold(k: int, noise: NoiseOptions) -> int:
    """The noisy count a cell must reach: k + the delta-tail of the subscriber-count noise."""
    scale = _noise_scales(noise)["subscribers"]
    return k + noise_tail(noise.mechanism, scale, _selection_delta(noise))


def _selection_delta(noise: NoiseOptions) -> float:
    """The delta the choice of candidate areas may spend: all of it with Laplace noise; with
    Gaussian noise an equal part beside each of the four Gaussian sums (basic composition)."""
    return noise.delta if noise.mechanism == "laplace" else noise.delta / 5  # 4 sums + this


def _draw(mechanism: str, scale: float, size: int, rng: np.random.Generator) -> np.ndarray:
    if mechanism == "laplace":
        return discrete_laplace(scale, size, rng)
    return discrete_gaussian(scale, size, rng)
