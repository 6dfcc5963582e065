"""BLE advertising-data codecs: decode raw AD structures into typed frames, and encode them back.

Decoding is total: any input yields a frame or a `NotDecodable`, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

EDDYSTONE_UUID = 0xFEAA
EID_FRAME = 0x30


@dataclass(frozen=True)
class NotDecodable:
    """Why an advertisement carries no frame we understand."""

    reason: str


@dataclass(frozen=True)
class EddystoneEID:
    """Eddystone ephemeral identifier frame (0x30)."""

    type: ClassVar[str] = "eddystone_eid"
    eid: bytes
    tx_power: int

    def to_json(self) -> dict[str, Any]:
        """The CLI's JSON view of this frame."""
        return {"type": self.type, "eid": self.eid.hex(), "tx_power": self.tx_power}


Frame = EddystoneEID


def _ad(ad_type: int, payload: bytes) -> bytes:
    return bytes([len(payload) + 1, ad_type]) + payload


def _s8(v: int) -> int:
    return v - 256 if v > 127 else v


def encode(frame: Frame) -> bytes:
    """Full advertising data (flags, service UUID list, service data) for a frame."""
    if isinstance(frame, EddystoneEID):
        uuid = EDDYSTONE_UUID.to_bytes(2, "little")
        data = uuid + bytes([EID_FRAME, frame.tx_power & 0xFF]) + frame.eid
        return _ad(0x01, b"\x06") + _ad(0x03, uuid) + _ad(0x16, data)
    raise TypeError(f"cannot encode {type(frame).__name__}")


def iter_ad(adv: bytes):
    """Yield (type, payload) for each well-formed AD structure; stop at the first malformed one."""
    i = 0
    n = len(adv)
    while i < n:
        length = adv[i]
        if length == 0:
            return
        if i + 1 + length > n:
            return
        yield adv[i + 1], adv[i + 2 : i + 1 + length]
        i += 1 + length


def decode(adv: bytes) -> Frame | NotDecodable:
    """Decode one advertisement's AD structures into the programme-relevant frame."""
    for ad_type, payload in iter_ad(adv):
        if ad_type == 0x16 and len(payload) >= 3:
            uuid = int.from_bytes(payload[:2], "little")
            if uuid == EDDYSTONE_UUID and payload[2] == EID_FRAME and len(payload) >= 12:
                return EddystoneEID(eid=bytes(payload[4:12]), tx_power=_s8(payload[3]))
    return NotDecodable("no programme frame")
