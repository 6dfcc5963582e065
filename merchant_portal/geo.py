"""Floor plans: validating uploaded zone GeoJSON and drawing zones and scanners as SVG.

Pure functions (no Flask, no SQL): the venue's frame is metric with y pointing up, the screen's
y points down, so drawing flips y around the plan's bounds.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.errors import ShapelyError
from shapely.geometry import Polygon, shape
from shapely.validation import explain_validity

ZONE_KINDS = ("chair", "cabin", "area")
MAX_ZONES = 200
MAX_NAME = 64
PAD_M = 0.5
# A venue's frame is metres from its own origin: a corner further out is a typo or degrees read
# as metres, and a plan spanning it leaves positioning no grid to build (scanners: views.py).
MAX_PLAN_M = 10_000.0


class ZoneError(ValueError):
    """An upload problem, as a catalogue key and its values, so it can be said in any language."""

    def __init__(self, key: str, **values: object) -> None:
        super().__init__(key)
        self.key, self.values = key, values


@dataclass(frozen=True)
class ZoneSpec:
    """One validated zone from an upload."""

    name: str
    kind: str
    polygon: Polygon


def parse_zones(raw: bytes | str) -> list[ZoneSpec]:
    """Validate a zones FeatureCollection; raise ZoneError naming the first problem."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ZoneError("geo_not_json") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise ZoneError("geo_not_collection")
    features = doc.get("features")
    if not isinstance(features, list) or not features:
        raise ZoneError("geo_no_features")
    if len(features) > MAX_ZONES:
        raise ZoneError("geo_too_many", n=MAX_ZONES)
    specs: list[ZoneSpec] = []
    seen: set[str] = set()
    for i, feature in enumerate(features, start=1):
        specs.append(_zone(i, feature, seen))
    return specs


def _zone(i: int, feature: Any, seen: set[str]) -> ZoneSpec:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise ZoneError("geo_not_feature", i=i)
    props = feature.get("properties") or {}
    name = props.get("name") if isinstance(props, dict) else None
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME:
        raise ZoneError("geo_bad_name", i=i, n=MAX_NAME)
    if not name.isprintable():
        # A NUL or a line break in a name breaks every file and event it reaches.
        raise ZoneError("geo_bad_name", i=i, n=MAX_NAME)
    name = name.strip()
    if name in seen:
        raise ZoneError("geo_duplicate", i=i, name=name)
    seen.add(name)
    kind = props.get("kind", "area")
    if kind not in ZONE_KINDS:
        raise ZoneError("geo_bad_kind", i=i, name=name, kinds=", ".join(ZONE_KINDS))
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or geometry.get("type") != "Polygon":
        raise ZoneError("geo_not_polygon", i=i, name=name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NaN corners: refused just below
            geom = shape(geometry)
        finite = bool(np.isfinite(shapely.get_coordinates(geom)).all())
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, ShapelyError):
        raise ZoneError("geo_bad_coordinates", i=i, name=name) from None
    if not finite:
        raise ZoneError("geo_bad_coordinates", i=i, name=name)
    if np.abs(shapely.get_coordinates(geom)).max() >= MAX_PLAN_M:
        raise ZoneError("geo_far", i=i, name=name, m=int(MAX_PLAN_M))
    if geom.is_empty:
        raise ZoneError("geo_empty", i=i, name=name)
    # Validity first: a bow-tie's two lobes cancel to zero area, but the real fault is the cross.
    if not geom.is_valid:
        raise ZoneError("geo_invalid", i=i, name=name, why=explain_validity(geom))
    if geom.area <= 0:
        raise ZoneError("geo_empty", i=i, name=name)
    return ZoneSpec(name, kind, geom)


def plan(
    zones: list[tuple[str, str, dict[str, Any]]], scanners: list[tuple[str, float, float]]
) -> dict[str, Any]:
    """SVG-ready plan: viewBox, zone paths and labels, scanner points, all in metres."""
    shapes = [(name, kind, shape(geo)) for name, kind, geo in zones]
    xs = [c[0] for _n, _k, g in shapes for c in g.exterior.coords] + [s[1] for s in scanners]
    ys = [c[1] for _n, _k, g in shapes for c in g.exterior.coords] + [s[2] for s in scanners]
    if not xs:
        xs, ys = [0.0, 1.0], [0.0, 1.0]
    minx, maxx, miny, maxy = min(xs) - PAD_M, max(xs) + PAD_M, min(ys) - PAD_M, max(ys) + PAD_M

    def flip(x: float, y: float) -> tuple[float, float]:
        return round(x - minx, 3), round(maxy - y, 3)

    def ring(coords: Any) -> str:
        pts = [flip(x, y) for x, y, *_ in coords]
        return "M" + " L".join(f"{x} {y}" for x, y in pts) + " Z"

    font = round(max(maxx - minx, maxy - miny) / 30, 3)
    out_zones = []
    for name, kind, g in shapes:
        d = " ".join([ring(g.exterior.coords)] + [ring(h.coords) for h in g.interiors])
        # Label at the top of the zone, clear of the scanner usually standing in its middle.
        gx0, _gy0, gx1, gy1 = g.bounds
        lx, ly = flip((gx0 + gx1) / 2, gy1)
        ly = round(ly + font * 1.3, 3)
        out_zones.append({"name": name, "kind": kind, "d": d, "label_x": lx, "label_y": ly})
    out_scanners = []
    for n, x, y in scanners:
        cx, cy = flip(x, y)
        out_scanners.append({"name": n, "x": x, "y": y, "cx": cx, "cy": cy})
    width, height = round(maxx - minx, 3), round(maxy - miny, 3)
    return {
        "view_box": f"0 0 {width} {height}",
        "width": width,
        "height": height,
        "zones": out_zones,
        "scanners": out_scanners,
        "font": font,
    }
