"""Stored catchment and taste reports as the portal shows them: guarantees in words, the taste
rows, suggestions with their reasons, and a map of the catchment drawn as SVG (no tile server).

The analytics job (`python -m analytics run`) stores each week's bundle in SQL; the portal reads
them through `analytics.job.latest_reports`, never the job's internals.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from shapely.geometry import shape
from sqlalchemy.orm import Session

from analytics.job import latest_reports

log = logging.getLogger(__name__)
WEEK = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
SIMPLIFY_DEG = 0.0002  # ~20 m: invisible at tablet scale, keeps the SVG small


def load_reports(db: Session, merchant_id: int, limit: int = 8) -> list[dict[str, Any]]:
    """The merchant's stored bundles, newest week first (each with its guarantees)."""
    return [
        b for b in latest_reports(db, merchant_id, limit) if isinstance(b.get("guarantees"), dict)
    ]


def guarantees_in_words(g: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The k, suppression and noise of a report as catalogue keys with their values."""
    lines: list[tuple[str, dict[str, Any]]] = [("rep_k", {"k": g.get("k")})]
    eps = g.get("epsilon") or 0
    if not eps:
        lines.append(("rep_exact", {}))
        return lines
    lines.append(
        (
            "rep_noise",
            {
                "mechanism": g.get("mechanism") or "laplace",
                "epsilon": f"{eps:g}",
                "delta": f"{g.get('delta') or 0:g}",
            },
        )
    )
    if g.get("threshold") is not None:
        lines.append(("rep_threshold", {"threshold": f"{g['threshold']:g}"}))
    return lines


@lru_cache(maxsize=4)
def _areas(path: str) -> dict[str, Any]:
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    return {
        str(f["properties"]["code"]): shape(f["geometry"]).simplify(SIMPLIFY_DEG)
        for f in doc.get("features", [])
        if f.get("geometry") and "code" in (f.get("properties") or {})
    }


def catchment_map(catchment: dict[str, Any] | None, areas_file: str | None) -> dict[str, Any]:
    """SVG-ready map: one shape per home area of the report's cells, and the catchment outline."""
    if not catchment:
        return {"shapes": [], "outline": [], "view_box": "0 0 1 1"}
    areas = _areas(areas_file) if areas_file and Path(areas_file).is_file() else {}
    shapes = []
    for cell in catchment.get("cells", []):
        for code in cell.get("areas") or []:
            if code in areas:
                shapes.append((code, cell.get("cell"), bool(cell.get("in_catchment")), areas[code]))
    outline = shape(catchment["polygon"]) if catchment.get("polygon") else None
    geoms = [s[3] for s in shapes] + ([outline] if outline is not None else [])
    if not geoms:
        return {"shapes": [], "outline": [], "view_box": "0 0 1 1"}
    minx = min(g.bounds[0] for g in geoms)
    miny = min(g.bounds[1] for g in geoms)
    maxx = max(g.bounds[2] for g in geoms)
    maxy = max(g.bounds[3] for g in geoms)
    # Equirectangular at the map's latitude, in km: right for a city-sized area.
    kx, ky = 111.32 * math.cos(math.radians((miny + maxy) / 2)), 110.57

    def path(geom: Any) -> list[str]:
        polys = getattr(geom, "geoms", [geom])
        out = []
        for p in polys:
            rings = [p.exterior, *p.interiors]
            d = " ".join(
                "M"
                + " L".join(f"{(x - minx) * kx:.3f} {(maxy - y) * ky:.3f}" for x, y, *_ in r.coords)
                + " Z"
                for r in rings
            )
            out.append(d)
        return out

    return {
        "shapes": [
            {"code": code, "cell": cell, "in_catchment": inside, "d": " ".join(path(g))}
            for code, cell, inside, g in shapes
        ],
        "outline": path(outline) if outline is not None else [],
        "view_box": f"0 0 {(maxx - minx) * kx:.3f} {(maxy - miny) * ky:.3f}",
        "stroke": round(max((maxx - minx) * kx, (maxy - miny) * ky) / 400, 4),
    }


def taste_csv(bundle: dict[str, Any]) -> str:
    """The taste rows as CSV, for a spreadsheet."""
    rows = bundle.get("taste") or []
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()
