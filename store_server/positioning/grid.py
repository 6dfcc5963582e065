"""The venue as a grid of candidate positions, each tagged with its zone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

MAX_CELLS = 6000


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
    step = max(step, float(np.sqrt(area / MAX_CELLS)))
    xs = np.arange(x0 + step / 2, x1, step)
    ys = np.arange(y0 + step / 2, y1, step)
    gx, gy = np.meshgrid(xs, ys)
    cells = np.column_stack([gx.ravel(), gy.ravel()])
    names = tuple(zones)
    zone_index = np.full(cells.shape[0], -1, dtype=int)
    for k, name in enumerate(names):
        inside = shapely.contains_xy(zones[name], cells[:, 0], cells[:, 1])
        zone_index[inside & (zone_index < 0)] = k
    return Grid(cells=cells, zone_index=zone_index, zone_names=names, step=step)
