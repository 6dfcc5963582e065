"""Scanner daemons' capture files as survey sightings: the survey recorder's live input.

A daemon run with `[record] file = "..."` appends each programme frame it forwards to a capture
(JSON lines of ts, rssi and the frame's own AD structure; never a BLE address). Older daemons
recorded the whole advert around the frame; such captures are read the same way. While an
installer walks the venue with a reference beacon, every scanner records; these files become the
`ts,scanner,emitter,rssi` rows that `survey.record` puts the installer's marks on. Only the
reference emitter's frames are kept: the other programme frames in a capture are other people's
identifiers, and a survey must not hold them.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import pandas as pd

from beacons.edge import EdgeFilter, ibeacon_id
from beacons.sources.replay import parse_line
from store_server.positioning.venue import READING_COLUMNS, VenueFileError

_EID = re.compile(r"[0-9a-f]{16}")
_IBEACON = re.compile(r"[0-9a-f]{40}")
# An iBeacon major or minor as people write it: decimal (leading zeros allowed) or 0x hex.
_FIELD = re.compile(r"[0-9]{1,5}|0x[0-9a-f]{1,4}")


def reference_emitter(text: str) -> tuple[str, frozenset[bytes]]:
    """The id the scanners send for a reference beacon, and the iBeacon UUIDs to let through.

    Accepts an Eddystone EID (16 hex digits), an iBeacon as UUID:major:minor, or the iBeacon id
    as the scanners send it (UUID, major and minor in 40 hex digits)."""
    value = text.strip().lower()
    if _EID.fullmatch(value):
        return value, frozenset()
    if _IBEACON.fullmatch(value):
        return value, frozenset({bytes.fromhex(value[:32])})
    parts = value.split(":")
    try:
        if len(parts) != 3 or not all(_FIELD.fullmatch(p) for p in parts[1:]):
            raise ValueError(text)
        proximity = uuid.UUID(parts[0]).bytes
        major, minor = (int(p, 16) if p.startswith("0x") else int(p) for p in parts[1:])
        if not (0 <= major <= 0xFFFF and 0 <= minor <= 0xFFFF):
            raise ValueError(text)
    except ValueError:
        raise VenueFileError(
            f"--emitter {text!r}: expected an EID (16 hex digits), an iBeacon UUID:major:minor "
            "or its 40-hex-digit id"
        ) from None
    return ibeacon_id(proximity, major, minor), frozenset({proximity})


def parse_captures(specs: Iterable[str]) -> dict[str, Path]:
    """{scanner: capture path} from `SCANNER=FILE` arguments."""
    out: dict[str, Path] = {}
    files: dict[Path, str] = {}
    for spec in specs:
        scanner, sep, path = spec.partition("=")
        if not sep or not scanner or not path:
            raise VenueFileError(f"--capture {spec!r}: expected SCANNER=FILE")
        if scanner in out:
            raise VenueFileError(f"--capture: scanner {scanner!r} given twice")
        # One daemon's capture under two names would enter the survey twice, as two scanners
        # hearing the same readings.
        same = files.get(Path(path).resolve())
        if same is not None:
            raise VenueFileError(
                f"--capture: {path} is given for scanners {same!r} and {scanner!r}"
            )
        files[Path(path).resolve()] = scanner
        out[scanner] = Path(path)
    return out


def reference_rows(sightings: pd.DataFrame, text: str | None, source: str) -> pd.DataFrame:
    """A sightings table's rows of the installer's reference beacon.

    The table may hold other emitters (whoever else the scanners heard): their rows would be
    given the installer's positions, and a survey must not hold other people's identifiers, so
    a table of several emitters needs --emitter. The id is matched as written, else in any case
    and in the iBeacon spellings `reference_emitter` accepts."""
    ids = sightings["emitter"].astype(str)
    if text is None:
        count = ids.nunique()
        if count > 1:
            raise VenueFileError(
                f"{source}: holds {count} emitters; name the installer's reference beacon "
                "with --emitter"
            )
        return sightings
    keep = ids == text
    if not keep.any():
        wanted = {text.strip().lower()}
        with contextlib.suppress(VenueFileError):
            wanted.add(reference_emitter(text)[0])
        keep = ids.str.strip().str.lower().isin(wanted)
    if not keep.any():
        raise VenueFileError(f"{source}: the reference emitter {text} is never heard")
    return sightings.loc[keep]


def read_captures(files: dict[str, Path], emitter: str) -> tuple[pd.DataFrame, int]:
    """The reference emitter's sightings in each scanner's capture, and the unreadable lines.

    A capture cut off mid-line (the daemon stopped while writing) loses that line only."""
    ident, uuids = reference_emitter(emitter)
    edge = EdgeFilter(uuids)
    rows: list[tuple[float, str, str, float]] = []
    bad = 0
    for scanner, path in files.items():
        try:
            # A byte-order mark is not a record; an undecodable byte spoils its own line only.
            with path.open(encoding="utf-8-sig", errors="replace") as fh:
                good, skipped = _read_one(fh, scanner, ident, edge, rows)
        except OSError as exc:
            raise VenueFileError(f"{path}: cannot read capture ({exc.__class__.__name__})") from exc
        if good == 0 and skipped:
            raise VenueFileError(f"{path}: not a scanner capture (no readable record)")
        bad += skipped
    df = pd.DataFrame(rows, columns=list(READING_COLUMNS))
    return df.sort_values("ts", kind="stable").reset_index(drop=True), bad


def _read_one(
    fh: TextIO,
    scanner: str,
    ident: str,
    edge: EdgeFilter,
    rows: list[tuple[float, str, str, float]],
) -> tuple[int, int]:
    good = bad = 0
    for line in fh:
        if not line.strip():
            continue
        try:
            advert = parse_line(line)
        except ValueError:
            bad += 1
            continue
        good += 1
        sighting = edge.sighting(advert)
        if sighting is not None and sighting.id == ident:
            rows.append((sighting.ts, scanner, ident, float(sighting.rssi)))
    return good, bad
