"""Live tracking contract for ingest: a venue model plus a JSON-serialisable per-emitter state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from shapely.geometry import Polygon, shape
from shapely.geometry.base import BaseGeometry

from store_server.positioning import calibration as _calibration
from store_server.positioning import engine
from store_server.positioning.pathloss import DEFAULT_N, DEFAULT_RSSI_1M

__all__ = ["DEFAULT_N", "DEFAULT_RSSI_1M", "Estimate", "VenueModel", "declared_start", "track"]


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
    _runtime: engine.Runtime | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def uncalibrated(
        cls, scanners: dict[str, tuple[float, float]], zones: dict[str, Polygon]
    ) -> VenueModel:
        """A model with textbook path-loss defaults, usable before any site survey."""
        return cls(scanners=dict(scanners), zones=dict(zones), calibration={})

    @classmethod
    def calibrate(
        cls,
        scanners: dict[str, tuple[float, float]],
        zones: dict[str, BaseGeometry],
        survey: pd.DataFrame,
        params: dict[str, float] | None = None,
    ) -> VenueModel:
        """A model calibrated from a survey (`ts,scanner,emitter,rssi,x,y`) with known positions."""
        cal = _calibration.fit(scanners, survey, params)
        return cls(scanners=dict(scanners), zones=dict(zones), calibration=cal)

    @property
    def survey_shift_s(self) -> float:
        """The time shift (s) of the survey's marks against the radio that its calibration
        used (calibration.best_shift; 0 without a survey)."""
        return float(self.calibration.get("params", {}).get("survey_shift_s") or 0.0)

    def with_emitter_offsets(self, offsets: dict[str, float]) -> VenueModel:
        """Same venue with per-emitter-type RSSI offsets (dB vs the survey's reference emitter);
        a tracking state with {"type": name} uses its type's offset."""
        cal = {**self.calibration, "emitter_offsets": {k: float(v) for k, v in offsets.items()}}
        return VenueModel(scanners=dict(self.scanners), zones=dict(self.zones), calibration=cal)

    def runtime(self) -> engine.Runtime:
        """Precomputed grid and radio map, built on first use and cached on the model."""
        if self._runtime is None:
            self._runtime = engine.build_runtime(self.scanners, self.zones, self.calibration)
        return self._runtime

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


def declared_start(model: VenueModel, level_db: float) -> dict[str, Any]:
    """A new track's state for an emitter that declares its transmit power: its level (dB
    against the survey's reference emitter) starts there instead of at 0, and is still learnt
    online from three scanners on; with fewer, the declared level is all there is to go by."""
    prior_db = float(model.runtime().params["emitter_prior_db"])
    return {"k": [round(float(level_db), 2), round(prior_db**2, 3)]}


def track(
    model: VenueModel,
    state: dict[str, Any] | None,
    readings: engine.Readings,
    now: float,
) -> tuple[dict[str, Any], Estimate | None]:
    """Fold new (ts, scanner, rssi) readings into the state and estimate the current position."""
    st, est = engine.step(model.runtime(), state, readings, now)
    return st, Estimate(*est) if est is not None else None
