"""Synthetic venues for checks: log-distance path loss, walls, smooth shadowing, noise and drops."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely
from shapely.geometry import LineString, Polygon, box
from shapely.geometry.base import BaseGeometry


@dataclass
class Venue:
    """A synthetic venue: scanners, zones and the hidden radio truth used to draw readings."""

    scanners: dict[str, tuple[float, float]]
    zones: dict[str, BaseGeometry]
    walls: list[LineString]
    rssi_1m: float = -62.0
    n: float = 2.4
    wall_db: float = 5.0
    shadow_db: float = 3.0
    noise_db: float = 4.5
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        # Shadowing: a smooth random field per scanner from a few random plane waves.
        self._waves = {
            s: (rng.normal(size=(6, 2)) * 0.8, rng.uniform(0, 2 * np.pi, 6)) for s in self.scanners
        }

    def mean_rssi(self, scanner: str, xy: np.ndarray) -> np.ndarray:
        """Noise-free RSSI of a scanner at points (N, 2)."""
        sx, sy = self.scanners[scanner]
        d = np.maximum(np.hypot(xy[:, 0] - sx, xy[:, 1] - sy), 0.3)
        k, phase = self._waves[scanner]
        field = np.sin(xy @ k.T + phase).sum(axis=1) * self.shadow_db / np.sqrt(3.0)
        walls = np.zeros(len(xy))
        for wall in self.walls:
            rays = shapely.linestrings([[(sx, sy), (float(x), float(y))] for x, y in xy])
            walls += shapely.intersects(rays, wall)
        return self.rssi_1m - 10 * self.n * np.log10(d) - self.wall_db * walls + field

    def readings(
        self,
        path: pd.DataFrame,
        emitter: str = "e1",
        rate_hz: float = 2.0,
        drift: dict[str, float] | None = None,
        seed: int = 1,
    ) -> pd.DataFrame:
        """Sightings `ts,scanner,emitter,rssi,x,y` along a path with columns ts, x, y."""
        rng = np.random.default_rng(seed)
        rows = []
        t0, t1 = float(path["ts"].iloc[0]), float(path["ts"].iloc[-1])
        for s in self.scanners:
            ts = np.sort(rng.uniform(t0, t1, int((t1 - t0) * rate_hz)))
            x = np.interp(ts, path["ts"], path["x"])
            y = np.interp(ts, path["ts"], path["y"])
            mean = self.mean_rssi(s, np.column_stack([x, y])) + (drift or {}).get(s, 0.0)
            rssi = np.round(mean + rng.normal(0, self.noise_db, len(ts)), 1)
            keep = rssi > -95 + rng.normal(0, 3, len(ts))
            rows.append(
                pd.DataFrame(
                    {"ts": ts, "scanner": s, "emitter": emitter, "rssi": rssi, "x": x, "y": y}
                )[keep]
            )
        out = pd.concat(rows).sort_values("ts", kind="stable").reset_index(drop=True)
        return out


def walk(
    waypoints: list[tuple[float, float]],
    speed: float = 0.6,
    pause_s: float = 0.0,
    t0: float = 1_700_000_000.0,
) -> pd.DataFrame:
    """A path through waypoints at a walking speed, pausing at each waypoint."""
    ts, xs, ys = [t0], [waypoints[0][0]], [waypoints[0][1]]
    for (x0, y0), (x1, y1) in itertools.pairwise(waypoints):
        if pause_s > 0:
            ts.append(ts[-1] + pause_s)
            xs.append(x0)
            ys.append(y0)
        ts.append(ts[-1] + max(np.hypot(x1 - x0, y1 - y0) / speed, 0.1))
        xs.append(x1)
        ys.append(y1)
    return pd.DataFrame({"ts": ts, "x": xs, "y": ys})


def flat() -> Venue:
    """Three rooms and an L-shaped living room, one or two scanners per room."""
    zones: dict[str, BaseGeometry] = {
        "kitchen": box(0, 0, 4, 4),
        "bedroom": box(4, 0, 9, 4),
        "bath": box(9, 0, 12, 4),
        "living": Polygon([(0, 4), (12, 4), (12, 7), (5, 7), (5, 10), (0, 10)]),
    }
    walls = [
        LineString([(4, 0), (4, 3.1)]),
        LineString([(9, 0), (9, 3.1)]),
        LineString([(0, 4), (2.9, 4)]),
        LineString([(3.9, 4), (6.9, 4)]),
        LineString([(7.9, 4), (10.9, 4)]),
    ]
    scanners = {
        "kit-1": (0.3, 0.4),
        "bed-7": (8.6, 3.7),
        "bath": (11.8, 0.2),
        "liv-a": (0.2, 9.8),
        "liv-b": (11.7, 6.8),
        "liv-c": (4.8, 6.0),
    }
    return Venue(scanners=scanners, zones=zones, walls=walls)


def survey_path() -> pd.DataFrame:
    """An installer's walk covering every room in lanes about 1.5 m apart."""
    pts = [
        (0.7, 0.7),
        (3.3, 0.7),
        (3.3, 2.0),
        (0.7, 2.0),
        (0.7, 3.3),
        (3.3, 3.3),
        (3.4, 4.6),
        (0.7, 4.6),
        (0.7, 6.0),
        (4.4, 6.0),
        (4.4, 7.5),
        (0.7, 7.5),
        (0.7, 9.3),
        (4.4, 9.3),
        (4.4, 6.3),
        (7.4, 5.0),
        (11.3, 5.0),
        (11.3, 6.4),
        (7.0, 6.4),
        (7.4, 3.4),
        (4.7, 3.4),
        (4.7, 2.0),
        (8.4, 2.0),
        (8.4, 0.6),
        (4.7, 0.6),
        (8.6, 0.6),
        (10.4, 4.5),
        (11.4, 3.4),
        (9.5, 3.4),
        (9.5, 1.8),
        (11.4, 1.8),
        (11.4, 0.6),
        (9.5, 0.6),
    ]
    return walk(pts, speed=0.5)


def visit_path(t0: float = 1_700_010_000.0) -> pd.DataFrame:
    """A visitor going room to room and staying a while in each, through the doors."""
    pts = [
        (2.0, 2.0),
        (2.5, 2.6),
        (3.4, 4.5),
        (2.0, 8.0),
        (2.6, 7.3),
        (7.4, 4.5),
        (6.5, 2.0),
        (7.0, 1.5),
        (8.4, 4.5),
        (10.4, 4.5),
        (10.5, 2.0),
        (10.6, 1.6),
        (10.4, 4.6),
        (8.0, 5.5),
        (1.5, 5.5),
    ]
    return walk(pts, speed=0.7, pause_s=25.0, t0=t0)
