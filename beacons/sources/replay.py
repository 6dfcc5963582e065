"""Recorded captures: JSON lines of {"ts", "rssi", "data_hex"}, replayed or written.

A capture never holds a BLE address: the format has no field for one.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from beacons.sources import Advert

log = logging.getLogger("beacons.replay")
# What a radio reports and the store server accepts (dBm): anything else would get the whole
# batch it travels in refused, and the good sightings with it.
RSSI_MIN, RSSI_MAX = -130.0, 20.0
# Seconds on any clock stay within this; milliseconds do not (a replay would wait for ages).
MAX_TS = 1e11


def parse_line(line: str) -> Advert:
    """One capture line as an advert; raises ValueError when the line is not a capture record.

    The message names what is wrong, never the values: a stray field may hold an address, and
    the message is logged."""
    try:
        rec = json.loads(line)
        ts, rssi, data = rec["ts"], rec["rssi"], bytes.fromhex(rec["data_hex"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not a capture record ({type(exc).__name__})") from None
    for value in (ts, rssi):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("not a capture record (ts and rssi must be numbers)")
    try:
        ts, rssi = float(ts), float(rssi)
    except OverflowError:
        raise ValueError("not a capture record (ts and rssi must be numbers)") from None
    if not (math.isfinite(ts) and abs(ts) < MAX_TS):
        raise ValueError("not a capture record (ts must be seconds)")
    if not (math.isfinite(rssi) and RSSI_MIN <= rssi <= RSSI_MAX):
        raise ValueError(f"not a capture record (rssi outside {RSSI_MIN:g}..{RSSI_MAX:g} dBm)")
    return Advert(ts, int(rssi) if rssi.is_integer() else rssi, "", data)


def format_line(advert: Advert) -> str:
    """The capture line for an advert (its address is deliberately left out)."""
    return json.dumps(
        {"ts": advert.ts, "rssi": advert.rssi, "data_hex": advert.data.hex()},
        separators=(",", ":"),
    )


class ReplaySource:
    """Plays a capture back at `speed` x real time (0 = as fast as possible)."""

    adapter = "replay"

    def __init__(
        self,
        path: str | Path,
        speed: float = 1.0,
        *,
        rebase: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open a capture; `rebase` restamps each record with the moment it is replayed."""
        if speed < 0:
            raise ValueError("speed must be >= 0")
        # Undecodable bytes spoil their own line only (it is skipped and counted), not the rest.
        self._file: IO[str] = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
        self.speed = speed
        self.rebase = rebase
        self.clock = clock
        self.bad_lines = 0
        self._records = self._iter()
        self._pending: Advert | None = next(self._records, None)
        self._first_ts = self._pending.ts if self._pending else 0.0
        self._wall0 = clock()
        self._closed = threading.Event()

    def _iter(self) -> Iterator[Advert]:
        for line in self._file:
            if not line.strip():
                continue
            try:
                yield parse_line(line)
            except ValueError as exc:
                if self.bad_lines == 0:
                    log.warning("replay: skipping bad capture lines (%s)", exc)
                self.bad_lines += 1

    @property
    def exhausted(self) -> bool:
        """True once every record has been played."""
        return self._pending is None

    def _due(self, advert: Advert) -> float:
        return self._wall0 + (advert.ts - self._first_ts) / self.speed

    def _out(self, advert: Advert) -> Advert:
        if not self.rebase:
            return advert
        # the moment it is replayed: never in the future, which a server would rightly refuse
        ts = self.clock() if self.speed == 0 else self._due(advert)
        return Advert(ts, advert.rssi, "", advert.data)

    def read(self, timeout: float) -> list[Advert]:
        """Records due by now (waiting up to `timeout` for the next one)."""
        if self._pending is None:
            self._closed.wait(timeout)
            return []
        out: list[Advert] = []
        if self.speed == 0:
            while self._pending is not None and len(out) < 1000:
                out.append(self._out(self._pending))
                self._pending = next(self._records, None)
            return out
        wait = self._due(self._pending) - self.clock()
        if wait > 0:
            self._closed.wait(min(wait, timeout))
        now = self.clock()
        while self._pending is not None and self._due(self._pending) <= now:
            out.append(self._out(self._pending))
            self._pending = next(self._records, None)
        return out

    def close(self) -> None:
        """Close the capture file."""
        self._closed.set()
        self._file.close()


class Recorder:
    """Appends adverts to a capture file, one flushed line each."""

    def __init__(self, path: str | Path) -> None:
        """Open (append) the capture file."""
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()

    def write(self, advert: Advert) -> None:
        """Record one advert."""
        with self._lock:
            self._file.write(format_line(advert) + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the capture file."""
        with self._lock:
            self._file.close()
