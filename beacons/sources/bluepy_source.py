"""Passive LE scan through bluepy (BlueZ), the source a Raspberry Pi scanner really runs.

bluepy runs its `bluepy-helper` executable, which owns the HCI socket, and parses its line protocol
into `ScanEntry`s handed to a delegate. This source uses all of that as is; the adapter seam is the
helper executable (`bluepy.btle.helperExe`), which the tests replace with a script speaking the
same protocol when no adapter is present.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from bluepy import btle

from beacons.sources import Advert

log = logging.getLogger("beacons.bluepy")

RESTART_AFTER_S = 5.0  # how long to leave a failed adapter before trying it again
RSSI_MAX_DBM = 20  # the highest RSSI an advertising report may carry (Core spec)
# bluepy puts addresses in some error messages; they must not reach the logs
_MAC = re.compile(r"(?i)\b[0-9a-f]{2}(?::[0-9a-f]{2}){5}\b")


def scrub(text: str) -> str:
    """Text with every BLE address replaced, safe to log."""
    return _MAC.sub("<address>", text)


def iface_index(adapter: str | int) -> int:
    """The bluepy interface number for "hci1", "1" or 1; raises ValueError otherwise."""
    text = str(adapter).strip().lower()
    text = text.removeprefix("hci")
    if not text.isdigit():
        raise ValueError(f"bad adapter {adapter!r}: expected hciN or an index")
    return int(text)


def rssi_dbm(value: int) -> int | None:
    """The RSSI a report really carried, from bluepy's: None when the controller had none.

    bluepy-helper sends 256 minus the report's RSSI byte and bluepy negates it, which gives the
    right value for negative readings only: 0..+20 dBm (a phone held against the scanner) come
    out 256 too low and "not available" (127) as -129 dBm. The HCI byte is signed: take it back
    modulo 256 (which undoes the management path's 32-bit wrap as well)."""
    dbm = (value + 128) % 256 - 128
    # Core spec: -127..+20 dBm; above, 127 = not available and the rest reserved. Sent on, one
    # such value would have the store server refuse the whole batch, every good sighting in it.
    return dbm if dbm <= RSSI_MAX_DBM else None


def advert_from_entry(entry: Any, ts: float) -> Advert | None:
    """An advert from a ScanEntry (`rawData` is the AD bytes of the report just received), or
    None when the report has no RSSI."""
    rssi = rssi_dbm(entry.rssi)
    if rssi is None:
        return None
    raw = entry.rawData if isinstance(entry.rawData, bytes | bytearray) else b""
    return Advert(ts, rssi, entry.addr, bytes(raw))


class _Delegate(btle.DefaultDelegate):
    """Collects every advertising report (new device or not: each report is a sighting)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__()
        self.clock = clock
        self.heard: list[Advert] = []

    def handleDiscovery(self, scanEntry: Any, isNewDev: bool, isNewData: bool) -> None:
        """bluepy's callback for each report."""
        advert = advert_from_entry(scanEntry, self.clock())
        if advert is not None:
            self.heard.append(advert)


class BluepySource:
    """A passive scan on one adapter; survives the adapter failing and coming back."""

    def __init__(
        self,
        adapter: str | int = 0,
        *,
        scanner_factory: Callable[[int], Any] = btle.Scanner,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Prepare the scan; the adapter is opened lazily on the first read."""
        self.iface = iface_index(adapter)
        self.adapter = "down"
        self.failures = 0
        self._factory = scanner_factory
        self._monotonic = monotonic
        self._delegate = _Delegate(clock)
        self._scanner: Any = None
        self._retry_at = 0.0
        self._last_error = ""

    @property
    def exhausted(self) -> bool:
        """A radio never runs dry."""
        return False

    def _fail(self, exc: Exception) -> None:
        self.adapter = "down"
        self.failures += 1
        self._retry_at = self._monotonic() + RESTART_AFTER_S
        # Scrubbed before it is cut: cut first, an address straddling the cut lost its tail and
        # no longer looked like one, so its first bytes reached the log.
        reason = scrub(f"{type(exc).__name__}: {exc}".splitlines()[0])[:200]
        if reason != self._last_error:
            log.error("bluepy: adapter hci%d down (%s)", self.iface, reason)
            self._last_error = reason
        self._stop_scanner()

    def _stop_scanner(self) -> None:
        scanner, self._scanner = self._scanner, None
        if scanner is not None:
            with contextlib.suppress(btle.BTLEException, OSError, ValueError):
                scanner.stop()

    def _start(self) -> bool:
        try:
            self._scanner = self._factory(self.iface).withDelegate(self._delegate)
            self._scanner.start(passive=True)
        except (btle.BTLEException, OSError) as exc:
            self._fail(exc)
            return False
        self.adapter = "up"
        self._last_error = ""
        log.info("bluepy: passive scan running on hci%d", self.iface)
        return True

    def read(self, timeout: float) -> list[Advert]:
        """Reports heard during up to `timeout` seconds of scanning."""
        if self._scanner is None and (self._monotonic() < self._retry_at or not self._start()):
            time.sleep(min(timeout, max(0.0, self._retry_at - self._monotonic())))
            return []
        try:
            # bluepy reads a timeout of 0 as "no timeout": it would block until the next report
            self._scanner.process(max(timeout, 0.001))
        except btle.BTLEInternalError as exc:
            if "Address type changed" in exc.message:
                # one device re-advertised with another address type: a stale bluepy table
                # entry, not a radio failure; forget the table and keep scanning
                self._scanner.clear()
            else:
                self._fail(exc)
        except (btle.BTLEException, OSError) as exc:
            self._fail(exc)
        else:
            # bluepy keeps a ScanEntry per address ever seen; rotating addresses would grow it
            # without bound on a long-running scanner, and we need none of it.
            self._scanner.clear()
        heard, self._delegate.heard = self._delegate.heard, []
        return heard

    def close(self) -> None:
        """Stop the scan and the helper process."""
        self._stop_scanner()
