"""Venue files: scanner positions, zone polygons, sighting tables and the point-to-zone rule."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

ZONE_TOLERANCE_M = 0.5
READING_COLUMNS = ("ts", "scanner", "emitter", "rssi")
# pandas' own missing-value spellings, kept for number columns only: in an id or zone column
# "NA", "null" or "None" is a name like any other, and only an empty field is missing.
NUMBER_NA = (
    *("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND"),
    *("1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"),
)
NUMBER_COLUMNS = ("ts", "rssi", "x", "y")
# Unix seconds (or seconds from any origin) stay within ± this; milliseconds do not.
MAX_TS = 1e11
# Any BLE receiver reports within these (dBm); beyond them a value is a unit or parsing error.
RSSI_RANGE_DBM = (-150.0, 30.0)
# Metres in a local (or projected) frame stay within ± this; beyond it a value is a typo or a
# unit error, and interpolating between such values overflows to infinity.
MAX_COORD_M = 1e7

# What shape() raises on a geometry that is no polygon; RecursionError: coordinates nested far
# deeper than any polygon's, which shapely walks recursively.
_NOT_A_POLYGON = (
    *(AttributeError, KeyError, TypeError, ValueError, RecursionError),
    shapely.errors.ShapelyError,
)


class VenueFileError(ValueError):
    """A venue file is missing, unreadable or not in the expected format."""


def load_scanners(path: str | Path) -> dict[str, tuple[float, float]]:
    """Read `scanner,x,y` into {scanner id: (x, y)}; ids stay strings."""
    df = _read_csv(path, {"scanner": str})
    _require(df, ("scanner", "x", "y"), path)
    try:
        xs = df["x"].astype(float).to_numpy()
        ys = df["y"].astype(float).to_numpy()
    except (TypeError, ValueError) as exc:
        raise VenueFileError(f"{path}: scanner coordinates must be numbers") from exc
    if not np.all(np.isfinite(xs) & np.isfinite(ys)):
        raise VenueFileError(f"{path}: scanner coordinates must be finite")
    far = (np.abs(xs) > MAX_COORD_M) | (np.abs(ys) > MAX_COORD_M)
    if far.any():
        raise VenueFileError(
            f"{path}: line {_line(far)}: x and y must be metres within ±{MAX_COORD_M:.0e}"
        )
    if df.empty:
        raise VenueFileError(f"{path}: no scanners")
    if df["scanner"].isna().any():
        raise VenueFileError(f"{path}: scanner id missing on line {_line(df['scanner'].isna())}")
    if df["scanner"].duplicated().any():
        raise VenueFileError(f"{path}: duplicate scanner id")
    return {str(s): (float(x), float(y)) for s, x, y in zip(df["scanner"], xs, ys, strict=True)}


def load_zones(path: str | Path) -> dict[str, BaseGeometry]:
    """Read a GeoJSON FeatureCollection of zone polygons in metres (never reprojected)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: besides bad JSON, an integer of more than 4300 digits; RecursionError:
        # arrays nested deeper than the decoder recurses.
        raise VenueFileError(f"{path}: cannot read zones ({exc.__class__.__name__})") from exc
    if isinstance(data, dict) and data.get("type") == "Feature":
        data = {"type": "FeatureCollection", "features": [data]}  # a venue of one zone
    feats = data.get("features") if isinstance(data, dict) else None
    if not isinstance(feats, list) or not feats:
        raise VenueFileError(f"{path}: expected a FeatureCollection with features")
    zones: dict[str, BaseGeometry] = {}
    for i, feat in enumerate(feats):
        try:
            props = feat.get("properties") or {}
            name = props.get("zone", props.get("name"))
            with warnings.catch_warnings():
                # NaN coordinates warn on stderr here; they are refused below, in one line.
                warnings.simplefilter("ignore", RuntimeWarning)
                geom = shape(feat["geometry"])
        except OverflowError as e:  # an integer coordinate too large to be a float
            raise VenueFileError(
                f"{path}: feature {i} has coordinates beyond ±{MAX_COORD_M:.0e} m"
            ) from e
        except _NOT_A_POLYGON as e:
            raise VenueFileError(f"{path}: feature {i} is not a valid polygon") from e
        if name is None or geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty:
            raise VenueFileError(f"{path}: feature {i} needs a zone name and a polygon")
        if not str(name).strip():
            # An empty name would read as "in no zone" in every output.
            raise VenueFileError(f"{path}: feature {i} has an empty zone name")
        corners = shapely.get_coordinates(geom)
        if not np.isfinite(corners).all():
            raise VenueFileError(f"{path}: feature {i} has coordinates that are not finite")
        if (np.abs(corners) > MAX_COORD_M).any():
            # The scanners' and marks' bound: areas and distances of such a zone overflow.
            raise VenueFileError(f"{path}: feature {i} has coordinates beyond ±{MAX_COORD_M:.0e} m")
        geom = _polygonal(geom)
        if geom.area <= 0:
            raise VenueFileError(f"{path}: zone {name} (feature {i}) has no area")
        # A zone drawn as several features (a room around a pillar, two halves of a shop) is
        # their union, not whichever feature came last.
        key = str(name)
        zones[key] = geom if key not in zones else shapely.union(zones[key], geom)
    return zones


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """A valid polygon covering what was drawn: a self-crossing outline (a bowtie) keeps both
    lobes, where buffer(0) would keep one; stray lines and points of the repair are dropped."""
    if geom.is_valid:
        return geom
    fixed = shapely.make_valid(geom)
    parts = [
        g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type in ("Polygon", "MultiPolygon")
    ]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _line(bad: np.ndarray | pd.Series) -> int:
    """File line number of the first flagged row (line 1 is the header)."""
    return int(np.flatnonzero(np.asarray(bad))[0]) + 2


def _numbers(df: pd.DataFrame, cols: tuple[str, ...], path: str | Path) -> None:
    """Convert `cols` to floats in place (an empty field becomes NaN), or refuse the file."""
    try:
        for col in cols:
            df[col] = df[col].astype(float)
    except (TypeError, ValueError) as exc:
        names = ", ".join(cols[:-1]) + f" and {cols[-1]}"
        raise VenueFileError(f"{path}: {names} must be numbers") from exc


def _check_ranges(df: pd.DataFrame, path: str | Path, positions: bool) -> None:
    """Refuse what no scanner reports: milliseconds or unbounded times, RSSI beyond any radio,
    infinite positions. (An empty field, NaN, is a row to skip, not a file to refuse.)"""
    bad = np.isinf(df["ts"].to_numpy(float)) | (np.abs(df["ts"].to_numpy(float)) >= MAX_TS)
    if bad.any():
        raise VenueFileError(
            f"{path}: line {_line(bad)}: ts must be seconds within ±{MAX_TS:.0e} (milliseconds?)"
        )
    if "rssi" in df:
        lo, hi = RSSI_RANGE_DBM
        rssi = df["rssi"].to_numpy(float)
        bad = np.isinf(rssi) | (rssi < lo) | (rssi > hi)
        if bad.any():
            raise VenueFileError(
                f"{path}: line {_line(bad)}: rssi must be dBm within {lo:g}..{hi:g}"
            )
    if positions:
        _check_coords(df, path)


def _check_coords(df: pd.DataFrame, path: str | Path) -> None:
    xy = np.abs(df[["x", "y"]].to_numpy(float))
    bad = np.isinf(xy).any(axis=1) | (xy > MAX_COORD_M).any(axis=1)
    if bad.any():
        raise VenueFileError(
            f"{path}: line {_line(bad)}: x and y must be metres within ±{MAX_COORD_M:.0e}"
        )


def load_readings(path: str | Path, *, positions: bool = False) -> pd.DataFrame:
    """Read a sightings table (`ts,scanner,emitter,rssi[,x,y,zone]`), sorted by ts."""
    df = _read_csv(path, {"scanner": str, "emitter": str, "zone": str})
    cols = READING_COLUMNS + (("x", "y") if positions else ())
    _require(df, cols, path)
    numbers = ("ts", "rssi") + (("x", "y") if positions else ())
    _numbers(df, numbers, path)
    _check_ranges(df, path, positions)
    # A row with a field left empty is skipped (a capture cut short); an impossible value is not.
    keep = np.isfinite(df[list(numbers)].to_numpy()).all(axis=1)
    df = df.loc[keep & df["scanner"].notna() & df["emitter"].notna()]
    return df.sort_values("ts", kind="stable").reset_index(drop=True)


def load_truth(path: str | Path) -> pd.DataFrame:
    """Read ground truth `ts,emitter,x,y` (a survey's other columns are allowed, not needed)."""
    df = _read_csv(path, {"emitter": str, "scanner": str, "zone": str})
    _require(df, ("ts", "emitter", "x", "y"), path)
    _numbers(df, ("ts", "x", "y"), path)
    _check_ranges(df[["ts", "x", "y"]], path, positions=True)
    keep = np.isfinite(df[["ts", "x", "y"]].to_numpy()).all(axis=1) & df["emitter"].notna()
    return df.loc[keep].sort_values("ts", kind="stable").reset_index(drop=True)


def load_predictions(path: str | Path) -> pd.DataFrame:
    """Read estimates `ts,emitter,x,y,zone` (zone empty for none)."""
    df = _read_csv(path, {"emitter": str, "zone": str})
    _require(df, ("ts", "emitter", "x", "y", "zone"), path)
    _numbers(df, ("ts", "x", "y"), path)
    bad = ~np.isfinite(df[["ts", "x", "y"]].to_numpy()).all(axis=1) | df["emitter"].isna()
    if bad.any():
        raise VenueFileError(
            f"{path}: line {_line(bad)}: every estimate needs ts, emitter, x and y"
        )
    # An estimate far beyond any venue's frame is not scored as a huge error but dropped (its
    # distance overflows), which would flatter the medians: refused, as every coordinate is.
    _check_coords(df, path)
    return df


def load_marks(path: str | Path) -> pd.DataFrame:
    """Read an installer's marked positions `ts,x,y`."""
    df = _read_csv(path, {})
    _require(df, ("ts", "x", "y"), path)
    df = df[["ts", "x", "y"]].copy()
    _numbers(df, ("ts", "x", "y"), path)
    if not np.isfinite(df.to_numpy()).all():
        raise VenueFileError(f"{path}: ts, x and y must be finite")
    _check_coords(df, path)
    df = df.drop_duplicates()
    if df["ts"].duplicated().any():
        # Two places at one instant: the walk between them cannot be interpolated.
        raise VenueFileError(f"{path}: two marks at the same time in different places")
    return df


def zone_of(
    xs: np.ndarray, ys: np.ndarray, zones: dict[str, BaseGeometry], tol: float = ZONE_TOLERANCE_M
) -> list[str | None]:
    """Zone of each point: the polygon containing it, else the nearest one within tol metres."""
    xs = np.asarray(xs, dtype=float)
    ys = np.asarray(ys, dtype=float)
    names = list(zones)
    if not names or xs.size == 0:
        return [None] * xs.size
    pts = shapely.points(xs, ys)
    dist = np.stack([shapely.distance(zones[n], pts) for n in names], axis=1)
    best = np.argmin(dist, axis=1)
    ok = dist[np.arange(len(xs)), best] <= tol
    return [names[b] if k else None for b, k in zip(best, ok, strict=True)]


def _read_csv(path: str | Path, dtypes: dict[str, type]) -> pd.DataFrame:
    na: dict[str, list[str]] = {c: list(NUMBER_NA) for c in NUMBER_COLUMNS}
    na.update({c: [""] for c in dtypes})
    try:
        return pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=na)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise VenueFileError(f"{path}: cannot read CSV ({e.__class__.__name__})") from e


def _require(df: pd.DataFrame, cols: tuple[str, ...], path: str | Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise VenueFileError(f"{path}: missing column(s) {', '.join(missing)}")
