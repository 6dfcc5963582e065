"""Stored catchment and taste reports as the portal shows them: guarantees in words, the taste
rows, suggestions with their reasons, and a map of the catchment drawn as SVG (no tile server).

The analytics job (`python -m analytics run`) stores each week's bundle in SQL; the portal reads
them through `analytics.job.latest_reports` (a page at a time) and `report_of_week` (one week,
however old), never the job's internals.

The CSV export starts with `# key: value` lines stating the week, k, the noise and the
suppression (documented in analytics/README.md), then the header and the taste rows; a text cell
that a spreadsheet would run as a formula is prefixed with a single quote.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

from shapely.geometry import shape
from sqlalchemy.orm import Session

from analytics.job import count_reports, latest_reports, report_of_week

log = logging.getLogger(__name__)
WEEK = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
SIMPLIFY_DEG = 0.0002  # ~20 m: invisible at tablet scale, keeps the SVG small
PER_PAGE = 8  # each report draws a map: a page of them stays light on a tablet
# a spreadsheet runs a cell starting with these as a formula (CSV injection); `#` is added so a
# data row can never pass for one of the export's leading comment lines
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "#")


def _shown(bundle: dict[str, Any] | None) -> bool:
    return bundle is not None and isinstance(bundle.get("guarantees"), dict)


def load_reports(
    db: Session, merchant_id: int, page: int = 1, per_page: int = PER_PAGE
) -> tuple[list[dict[str, Any]], int]:
    """One page of the merchant's stored bundles, newest week first, and how many pages exist."""
    pages = max(1, math.ceil(count_reports(db, merchant_id) / per_page))
    bundles = latest_reports(db, merchant_id, per_page, (max(page, 1) - 1) * per_page)
    return [b for b in bundles if _shown(b)], pages


def load_report(db: Session, merchant_id: int, week: str) -> dict[str, Any] | None:
    """The merchant's bundle of the week starting on `week` (YYYY-MM-DD), or None."""
    if not WEEK.match(week):
        return None
    try:
        monday = date.fromisoformat(week)
    except ValueError:
        return None
    bundle = report_of_week(db, merchant_id, monday)
    return bundle if _shown(bundle) else None


def suppression_in_words(bundle: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """What the report left out, as catalogue keys with their values (never a count under k)."""
    supp = bundle.get("suppression") or {}
    area = bundle.get("catchment") or {}
    k = (bundle.get("guarantees") or {}).get("k")
    lines: list[tuple[str, dict[str, Any]]] = []
    if supp.get("all_suppressed"):
        lines.append(("rep_all_suppressed", {"k": k}))
    missing = supp.get("suppressed_subscribers")
    if isinstance(missing, int) and missing > 0:
        lines.append(("rep_suppressed", {"n": missing}))
    elif missing == 0:
        lines.append(("rep_suppressed_none", {}))
    elif supp.get("suppressed_below_k"):
        lines.append(("rep_suppressed_below_k", {"k": k}))
    elif supp:
        lines.append(("rep_suppressed_noisy", {}))
    visits = area.get("suppressed_visits")
    if isinstance(visits, int) and visits > 0:
        lines.append(("rep_suppressed_visits", {"n": visits}))
    elif visits is None and area.get("suppressed_below_k"):
        lines.append(("rep_suppressed_visits_hidden", {"k": k}))
    return lines


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


def _safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, defused with a leading quote."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _number(value: Any) -> str:
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def csv_preamble(bundle: dict[str, Any]) -> list[str]:
    """The `# key: value` lines that open the CSV: week, k, noise and suppression."""
    g = bundle.get("guarantees") or {}
    supp = bundle.get("suppression") or {}
    area = bundle.get("catchment") or {}
    noisy = bool(g.get("epsilon"))
    missing = supp.get("suppressed_subscribers")
    if isinstance(missing, int):
        missing_text = str(missing)
    elif supp.get("suppressed_below_k"):
        missing_text = "withheld (fewer than k)"
    else:
        missing_text = "not stated (hidden by the noise)" if noisy else "not stated"
    visits = area.get("suppressed_visits")
    if isinstance(visits, int):
        visits_text = str(visits)
    elif noisy:
        visits_text = "not stated (hidden by the noise)"
    else:
        visits_text = "withheld (fewer than k people)" if area else "none"
    zone = (bundle.get("period") or {}).get("time_zone")
    pairs = [
        ("report", "Collective Mood taste by home area"),
        ("week", f"{bundle.get('id', '')}" + (f" ({zone})" if zone else "")),
        ("k", _number(g.get("k"))),
        ("rows_cover_at_least_k_subscribers", "yes"),
        ("noise", (g.get("mechanism") or "laplace") if noisy else "none"),
        ("epsilon", _number(g.get("epsilon") or 0)),
        ("delta", _number(g.get("delta") or 0)),
        ("threshold", _number(g.get("threshold"))),
        ("all_suppressed", "yes" if supp.get("all_suppressed") else "no"),
        ("suppressed_subscribers", missing_text),
        ("suppressed_visits", visits_text),
    ]
    # no commas in these lines, so a CSV reader that does not skip them still sees one cell
    return [f"# {key}: {str(value).replace(',', ';')}" for key, value in pairs]


def taste_csv(bundle: dict[str, Any]) -> str:
    """The taste rows as CSV, for a spreadsheet: `#` lines with the guarantees, then the rows."""
    rows = bundle.get("taste") or []
    buf = io.StringIO()
    # CRLF as RFC 4180 has it; it also makes the writer quote a cell holding a bare CR, which
    # with a "\n" terminator it would leave unquoted and split the row for a reader
    buf.writelines(line + "\r\n" for line in csv_preamble(bundle))
    # an all-suppressed week still has its header, so the file says what it would have held
    fields = list(rows[0]) if rows else ["area", "subscribers"]
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([_safe(f) for f in fields])
    for row in rows:
        writer.writerow([_safe(row.get(f)) for f in fields])
    return buf.getvalue()
