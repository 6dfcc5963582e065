"""The venue as a grid of candidate positions, each tagged with its zone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

MAX_CELLS = 6000
# Lattice points tried when covering a spread-out venue part by part (see build).
MAX_CANDIDATES = 50 * MAX_CELLS


@dataclass(frozen=True)
class Grid:
    """Candidate positions (N, 2), their zone index (-1 outside every zone) and the zone names."""

    cells: np.ndarray
    zone_index: np.ndarray
    zone_names: tuple[str, ...]
    step: float


def build(
    zones: dict[str, BaseGeometry],
    scanners: dict[str, tuple[float, float]],
    step: float = 0.4,
    margin: float | None = None,
) -> Grid:
    """Cover the zones and scanners with a margin, coarsening the step for very large venues."""
    geoms = list(zones.values())
    pts = np.array(list(scanners.values()), dtype=float).reshape(-1, 2)
    bounds = [g.bounds for g in geoms] + [(x, y, x, y) for x, y in pts]
    if not bounds:
        raise ValueError("a venue needs at least one zone or scanner")
    b = np.array(bounds, dtype=float)
    x0, y0 = b[:, 0].min(), b[:, 1].min()
    x1, y1 = b[:, 2].max(), b[:, 3].max()
    diag = float(np.hypot(x1 - x0, y1 - y0))
    # A margin lets a faint emitter sit outside every zone instead of being forced into one.
    pad = margin if margin is not None else float(np.clip(0.1 * diag, 1.5, 3.0))
    x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
    area = (x1 - x0) * (y1 - y0)
    if area / step**2 <= MAX_CELLS:
        xs = np.arange(x0 + step / 2, x1, step)
        ys = np.arange(y0 + step / 2, y1, step)
        gx, gy = np.meshgrid(xs, ys)
        cells = np.column_stack([gx.ravel(), gy.ravel()])
    else:
        # Too large for the step: cover only what lies near a zone or a scanner. The bounding
        # box of rooms far apart (two shops of a mall, a scanner in the yard) is mostly empty
        # space, and spreading MAX_CELLS over it left a room no cell, a zone nobody could enter.
        near = shapely.union_all(
            [g.buffer(pad) for g in geoms] + [shapely.Point(x, y).buffer(pad) for x, y in pts]
        )
        parts = list(getattr(near, "geoms", [near]))
        step = max(step, float(np.sqrt(near.area / MAX_CELLS)))
        # Each part's lattice covers its bounding box: a long diagonal part's box is far larger
        # than the part, so the step is widened until the boxes hold a bounded number of points.
        boxes = sum((g.bounds[2] - g.bounds[0]) * (g.bounds[3] - g.bounds[1]) for g in parts)
        step = max(step, float(np.sqrt(boxes / MAX_CANDIDATES)))
        cells = np.concatenate([_lattice(g, step, (x0, y0)) for g in parts])
    names = tuple(zones)
    zone_index = np.full(cells.shape[0], -1, dtype=int)
    missing = []
    for k, name in enumerate(names):
        inside = shapely.contains_xy(zones[name], cells[:, 0], cells[:, 1])
        zone_index[inside & (zone_index < 0)] = k
        if not inside.any():
            missing.append(k)
    # A zone narrower than the step (a chair in a large shop) may hold no cell centre: it gets
    # one at a point inside it, or its posterior mass would be 0 and it could never be entered.
    if missing:
        spots = [zones[names[k]].representative_point() for k in missing]
        cells = np.vstack([cells, [[p.x, p.y] for p in spots]])
        zone_index = np.concatenate([zone_index, missing])
    return Grid(cells=cells, zone_index=zone_index, zone_names=names, step=step)


def _lattice(part: BaseGeometry, step: float, origin: tuple[float, float]) -> np.ndarray:
    """Cell centres every `step` inside a polygon, on the lattice that starts at `origin`."""
    x0, y0, x1, y1 = part.bounds
    ox, oy = origin
    # Whole steps from the origin, so that the parts of a venue share one lattice.
    i0, j0 = np.floor((x0 - ox) / step), np.floor((y0 - oy) / step)
    xs = ox + step / 2 + step * np.arange(i0, np.ceil((x1 - ox) / step))
    ys = oy + step / 2 + step * np.arange(j0, np.ceil((y1 - oy) / step))
    xs, ys = xs[xs < x1], ys[ys < y1]
    gx, gy = (a.ravel() for a in np.meshgrid(xs, ys))
    keep = shapely.contains_xy(part, gx, gy)
    return np.column_stack([gx[keep], gy[keep]])
