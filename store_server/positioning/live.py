"""Live tracking contract for ingest: a venue model plus a JSON-serialisable per-emitter state."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from shapely.geometry import Point, Polygon, shape

DEFAULT_RSSI_1M = -59.0
DEFAULT_N = 2.7
MAX_RADIUS_M = 4.0


@dataclass(frozen=True)
class Estimate:
    """One position estimate: metric coordinates in the venue frame and the zone, if any."""

    x: float
    y: float
    zone: str | None


@dataclass
class VenueModel:
    """What positioning knows of a venue: scanner positions, zone polygons and calibration."""

    scanners: dict[str, tuple[float, float]]
    zones: dict[str, Polygon]
    calibration: dict[str, Any]

    @classmethod
    def uncalibrated(
        cls, scanners: dict[str, tuple[float, float]], zones: dict[str, Polygon]
    ) -> VenueModel:
        """A model with textbook path-loss defaults, usable before any site survey."""
        return cls(scanners=dict(scanners), zones=dict(zones), calibration={})

    def to_json(self) -> dict[str, Any]:
        """Serialisable form, stored with the venue."""
        return {
            "scanners": {k: list(v) for k, v in self.scanners.items()},
            "zones": {k: p.__geo_interface__ for k, p in self.zones.items()},
            "calibration": self.calibration,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VenueModel:
        """Inverse of to_json."""
        return cls(
            scanners={k: (float(v[0]), float(v[1])) for k, v in data["scanners"].items()},
            zones={k: shape(g) for k, g in data["zones"].items()},
            calibration=data.get("calibration", {}),
        )


def _distance(rssi: float) -> float:
    return 10 ** ((DEFAULT_RSSI_1M - rssi) / (10 * DEFAULT_N))


def track(
    model: VenueModel,
    state: dict[str, Any] | None,
    readings: list[tuple[float, str, float]],
    now: float,
) -> tuple[dict[str, Any], Estimate | None]:
    """Fold new (ts, scanner, rssi) readings into the state and estimate the current position."""
    st = dict(state or {})
    smooth: dict[str, list[float]] = dict(st.get("s", {}))
    for ts, scanner, rssi in readings:
        if scanner not in model.scanners:
            continue
        prev = smooth.get(scanner)
        value = rssi if prev is None else 0.7 * prev[0] + 0.3 * rssi
        smooth[scanner] = [value, ts]
    smooth = {k: v for k, v in smooth.items() if now - v[1] <= 10.0}
    st["s"] = smooth
    if not smooth:
        return st, None
    best = max(smooth, key=lambda k: smooth[k][0])
    x, y = model.scanners[best]
    d = _distance(smooth[best][0])
    zone = None
    nearest = math.inf
    for name, poly in model.zones.items():
        dist = poly.distance(Point(x, y))
        if dist < nearest and d <= MAX_RADIUS_M:
            nearest, zone = dist, name
    return st, Estimate(x, y, zone)
