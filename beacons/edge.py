"""Edge filter: keep only frames that can belong to the programme, and strip the BLE address.

Runs on every advert the radio hears, so it rejects the common case (anything that is neither an
Eddystone-EID frame nor an Apple iBeacon) with two substring tests before any parsing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from beacons import frames
from beacons.sources import Advert

_EID_MARK = b"\xaa\xfe\x30"  # Eddystone service UUID (little-endian) then the EID frame type
_IBEACON_MARK = b"\x4c\x00\x02\x15"  # Apple company id (little-endian), iBeacon type and length
_IBEACON_LEN = 25  # company(2) type(1) len(1) uuid(16) major(2) minor(2) power(1)


@dataclass(frozen=True)
class Sighting:
    """One programme frame heard by this scanner, as sent upstream (no BLE address, by design)."""

    ts: float
    kind: str  # "eid" | "ibeacon"
    id: str
    rssi: float
    tx_power: int

    def to_json(self) -> dict[str, Any]:
        """The wire form of one sighting."""
        return {
            "ts": self.ts,
            "kind": self.kind,
            "id": self.id,
            "rssi": self.rssi,
            "tx_power": self.tx_power,
        }


def _s8(v: int) -> int:
    return v - 256 if v > 127 else v


def ibeacon_id(adv: bytes, allowed: frozenset[bytes]) -> tuple[str, int] | None:
    """(id hex, measured power) of an iBeacon in `adv` whose UUID is allowed, else None."""
    i, n = 0, len(adv)
    while i < n:
        length = adv[i]
        if length == 0 or i + 1 + length > n:
            return None
        payload = adv[i + 2 : i + 1 + length]
        if adv[i + 1] == 0xFF and len(payload) >= _IBEACON_LEN and payload[:4] == _IBEACON_MARK:
            uuid = payload[4:20]
            if uuid in allowed:
                return payload[4:24].hex(), _s8(payload[24])
        i += 1 + length
    return None


class EdgeFilter:
    """Turns adverts into address-free sightings, dropping everything outside the programme."""

    def __init__(self, ibeacon_uuids: frozenset[bytes] = frozenset()) -> None:
        """Forward EID frames always, iBeacons only when their 16-byte UUID is listed."""
        self.ibeacon_uuids = frozenset(ibeacon_uuids)

    def sighting(self, advert: Advert) -> Sighting | None:
        """The sighting an advert carries, or None when it must be dropped."""
        adv = advert.data
        if _EID_MARK in adv:
            frame = frames.decode(adv)
            if getattr(frame, "type", None) == "eddystone_eid":
                return Sighting(advert.ts, "eid", frame.eid.hex(), advert.rssi, frame.tx_power)
        if self.ibeacon_uuids and _IBEACON_MARK in adv:
            found = ibeacon_id(adv, self.ibeacon_uuids)
            if found is not None:
                return Sighting(advert.ts, "ibeacon", found[0], advert.rssi, found[1])
        return None
