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
    pause_s: float | list[float] = 0.0,
    t0: float = 1_700_000_000.0,
) -> pd.DataFrame:
    """A path through waypoints at a walking speed, pausing at each waypoint before leaving it
    (pause_s for all of them, or one pause per waypoint)."""
    pauses = pause_s if isinstance(pause_s, list) else [pause_s] * len(waypoints)
    ts, xs, ys = [t0], [waypoints[0][0]], [waypoints[0][1]]
    for ((x0, y0), (x1, y1)), pause in zip(itertools.pairwise(waypoints), pauses, strict=False):
        if pause > 0:
            ts.append(ts[-1] + pause)
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


@dataclass
class RoomGrid:
    """A random venue of rows × cols rectangular rooms, a door in every shared wall, and the
    walks an installer and a visitor take through it (for generalisation checks beyond flat())."""

    venue: Venue
    xs: np.ndarray  # room edges along x (cols + 1)
    ys: np.ndarray  # room edges along y (rows + 1)
    doors: dict[frozenset, tuple[float, float]]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return len(self.ys) - 1, len(self.xs) - 1

    def route(self, a: tuple[int, int], b: tuple[int, int]) -> list[tuple[float, float]]:
        """Door points on the shortest room-to-room route from room a to room b."""
        prev: dict[tuple[int, int], tuple[int, int] | None] = {a: None}
        queue = [a]
        for room in queue:
            if room == b:
                break
            r, c = room
            for nxt in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if nxt not in prev and frozenset([room, nxt]) in self.doors:
                    prev[nxt] = room
                    queue.append(nxt)
        rooms = [b]
        while (back := prev[rooms[-1]]) is not None:
            rooms.append(back)
        rooms.reverse()
        return [self.doors[frozenset(pair)] for pair in itertools.pairwise(rooms)]

    def survey_path(self, lane_m: float = 1.5) -> pd.DataFrame:
        """An installer's walk: lanes lane_m apart through every room, room to room by doors."""
        rows, cols = self.shape
        pts: list[tuple[float, float]] = []
        here = None
        for r in range(rows):
            for c in range(cols) if r % 2 == 0 else reversed(range(cols)):
                if here is not None:
                    pts += self.route(here, (r, c))
                x0, x1 = self.xs[c] + 0.5, self.xs[c + 1] - 0.5
                y0, y1 = self.ys[r] + 0.5, self.ys[r + 1] - 0.5
                lanes = max(2, int(np.ceil((y1 - y0) / lane_m)) + 1)
                for i, y in enumerate(np.linspace(y0, y1, lanes)):
                    pts += [(x0, y), (x1, y)] if i % 2 == 0 else [(x1, y), (x0, y)]
                here = (r, c)
        return walk(pts, speed=0.5)

    def visit_path(
        self, seed: int, stops: int = 6, t0: float = 1_700_100_000.0, speed: float = 0.7
    ) -> pd.DataFrame:
        """A visitor standing 15-40 s at random spots of random rooms, walking between them
        through the doors without stopping (stop-and-go, as in a shop or a salon)."""
        rng = np.random.default_rng(seed)
        rows, cols = self.shape

        def spot(room: tuple[int, int]) -> tuple[float, float]:
            r, c = room
            return (
                float(rng.uniform(self.xs[c] + 0.6, self.xs[c + 1] - 0.6)),
                float(rng.uniform(self.ys[r] + 0.6, self.ys[r + 1] - 0.6)),
            )

        room = (int(rng.integers(rows)), int(rng.integers(cols)))
        points, stands = [spot(room)], [True]
        for _ in range(stops):
            nxt = (int(rng.integers(rows)), int(rng.integers(cols)))
            doors = self.route(room, nxt)
            points += [*doors, spot(nxt)]
            stands += [False] * len(doors) + [True]
            room = nxt
        # Drawn leg by leg, in order: the last spot's stand is the fixed 20 s below.
        pauses = [float(rng.uniform(15.0, 40.0)) if stand else 0.0 for stand in stands[:-1]]
        path = walk(points, speed=speed, pause_s=pauses, t0=t0)
        last = path.iloc[-1]
        stand = pd.DataFrame({"ts": [last["ts"] + 20.0], "x": [last["x"]], "y": [last["y"]]})
        return pd.concat([path, stand], ignore_index=True)


def room_grid(
    seed: int, rows: int = 2, cols: int = 3, per_room: tuple[int, int] = (1, 2)
) -> RoomGrid:
    """Random rooms 3-6 m a side, a 0.9 m door in each shared wall, per_room scanners on each
    room's walls, and radio constants drawn per venue (level, exponent, walls, noise)."""
    rng = np.random.default_rng(seed)
    xs = np.concatenate([[0.0], np.cumsum(rng.uniform(3.0, 6.0, cols))])
    ys = np.concatenate([[0.0], np.cumsum(rng.uniform(3.0, 6.0, rows))])
    zones: dict[str, BaseGeometry] = {}
    walls: list[LineString] = []
    doors: dict[frozenset, tuple[float, float]] = {}
    half = 0.45
    for r in range(rows):
        for c in range(cols):
            zones[f"room{r}{c}"] = box(xs[c], ys[r], xs[c + 1], ys[r + 1])
            if c + 1 < cols:
                x, mid = xs[c + 1], (ys[r] + ys[r + 1]) / 2 + rng.uniform(-1.0, 1.0)
                walls += [
                    LineString([(x, ys[r]), (x, mid - half)]),
                    LineString([(x, mid + half), (x, ys[r + 1])]),
                ]
                doors[frozenset([(r, c), (r, c + 1)])] = (float(x), float(mid))
            if r + 1 < rows:
                y, mid = ys[r + 1], (xs[c] + xs[c + 1]) / 2 + rng.uniform(-1.0, 1.0)
                walls += [
                    LineString([(xs[c], y), (mid - half, y)]),
                    LineString([(mid + half, y), (xs[c + 1], y)]),
                ]
                doors[frozenset([(r, c), (r + 1, c)])] = (float(mid), float(y))
    scanners: dict[str, tuple[float, float]] = {}
    for r in range(rows):
        for c in range(cols):
            x0, x1, y0, y1 = xs[c], xs[c + 1], ys[r], ys[r + 1]
            for i in range(int(rng.integers(per_room[0], per_room[1] + 1))):
                side, t = int(rng.integers(4)), float(rng.uniform(0.15, 0.85))
                scanners[f"room{r}{c}-s{i}"] = [
                    (x0 + 0.2, y0 + t * (y1 - y0)),
                    (x1 - 0.2, y0 + t * (y1 - y0)),
                    (x0 + t * (x1 - x0), y0 + 0.2),
                    (x0 + t * (x1 - x0), y1 - 0.2),
                ][side]
    venue = Venue(
        scanners={k: (float(x), float(y)) for k, (x, y) in scanners.items()},
        zones=zones,
        walls=walls,
        rssi_1m=float(rng.uniform(-66.0, -55.0)),
        n=float(rng.uniform(2.0, 3.0)),
        wall_db=float(rng.uniform(3.0, 8.0)),
        shadow_db=float(rng.uniform(2.0, 4.0)),
        noise_db=float(rng.uniform(4.0, 6.0)),
        seed=seed,
    )
    return RoomGrid(venue=venue, xs=xs, ys=ys, doors=doors)
