"""Edge filter: keep only frames that can belong to the programme, and strip the BLE address.

Which frames may be forwarded is protocol knowledge, so it lives in `beacons.frames`
(`programme_frame`, which rejects most adverts with substring tests before any parsing); this module
turns what it keeps into the address-free sightings the uplink sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from beacons import frames
from beacons.sources import Advert


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

    def to_advert(self) -> Advert:
        """This sighting as a capture records it: its frame's AD structure alone, no address."""
        # Rebuilt from what the uplink sends, so a capture holds nothing more: the rest of the
        # advert (a phone's name, other manufacturer or service data) is the sender's, not ours.
        raw = bytes.fromhex(self.id)
        frame: frames.EddystoneEID | frames.IBeacon
        if self.kind == "eid":
            frame = frames.EddystoneEID(eid=raw, tx_power=self.tx_power)
        else:
            major, minor = int.from_bytes(raw[16:18], "big"), int.from_bytes(raw[18:20], "big")
            frame = frames.IBeacon(raw[:16], major, minor, self.tx_power)
        return Advert(self.ts, self.rssi, "", frames.programme_ad(frame))


class EdgeFilter:
    """Turns adverts into address-free sightings, dropping everything outside the programme."""

    def __init__(self, ibeacon_uuids: frozenset[bytes] = frozenset()) -> None:
        """Forward EID frames always, iBeacons only when their 16-byte UUID is listed."""
        self.ibeacon_uuids = frozenset(ibeacon_uuids)

    def sighting(self, advert: Advert) -> Sighting | None:
        """The sighting an advert carries, or None when it must be dropped."""
        frame = frames.programme_frame(advert.data, self.ibeacon_uuids)
        if frame is None:
            return None
        if isinstance(frame, frames.EddystoneEID):
            return Sighting(advert.ts, "eid", frame.eid.hex(), advert.rssi, frame.tx_power)
        ident = ibeacon_id(frame.uuid, frame.major, frame.minor)
        return Sighting(advert.ts, "ibeacon", ident, advert.rssi, frame.tx_power)


def ibeacon_id(proximity_uuid: bytes, major: int, minor: int) -> str:
    """An iBeacon's id as scanners send it: UUID, major and minor in 40 hex digits."""
    return f"{proximity_uuid.hex()}{major:04x}{minor:04x}"
