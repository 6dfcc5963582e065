"""BLE advertising-data codecs: decode raw AD structures into typed frames, and encode them back.

`decode` takes the advertising data of one advertisement (the AD structures of an HCI LE
advertising report: ``len, type, payload...`` repeated) and returns one frame or a
`NotDecodable`. It is total: any bytes yield a value, never an exception, in time linear in the
input. A zero length byte ends the significant part (Core spec padding); a structure that runs past
the end makes the whole advertisement not decodable, because a truncated report cannot be trusted.

Frames understood, and their layouts (multi-byte fields big-endian unless stated):

- iBeacon: manufacturer data (AD 0xFF), company 0x004C little-endian (``4C 00``), ``02 15``,
  16-byte proximity UUID, major u16, minor u16, measured power s8.
- AltBeacon: AD 0xFF, any company id (little-endian), ``BE AC``, 20-byte beacon id, reference
  RSSI s8, one manufacturer-reserved byte.
- Eddystone: service data (AD 0x16), UUID 0xFEAA (``AA FE``), frame type, then
  UID 0x00: ranging s8, 10-byte namespace, 6-byte instance, 2 RFU bytes (optional on decode);
  URL 0x10: ranging s8, scheme byte, up to 17 encoded bytes (expansion codes 0x00-0x0D);
  TLM 0x20: version 0 (battery mV u16, temperature s8.8, advertising count u32, uptime u32 in
  tenths of a second) or version 1 (12-byte encrypted TLM, salt u16, MIC u16);
  EID 0x30: ranging s8, 8-byte ephemeral identifier.
- Exposure Notification: AD 0x16, UUID 0xFD6F (``6F FD``), 16-byte RPI, 4-byte AEM.

`tx_power` is always the frame's own calibrated power field, never the TX Power Level AD (0x0A).

When several frames are present the one with the best rank wins, the first of equal rank:
EID, iBeacon (the two kinds the programme uses), AltBeacon, Eddystone UID, URL, TLM, Exposure
Notification. A frame always beats a reason for not decoding another structure.
"""

from __future__ import annotations

import uuid as uuid_mod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

EDDYSTONE_UUID = 0xFEAA
EXPOSURE_NOTIFICATION_UUID = 0xFD6F
APPLE_COMPANY_ID = 0x004C
RADIUS_COMPANY_ID = 0x0118  # AltBeacon's reference company; any id is valid

UID_FRAME = 0x00
URL_FRAME = 0x10
TLM_FRAME = 0x20
EID_FRAME = 0x30

AD_FLAGS = 0x01
AD_UUID16_COMPLETE = 0x03
AD_SERVICE_DATA16 = 0x16
AD_MANUFACTURER = 0xFF

# Eddystone ranging data is the calibrated power at 0 m; free-space loss from 0 to 1 m is ~41 dB,
# so a frame's power at 1 m (what an iBeacon carries) is its ranging data minus this.
EDDYSTONE_RANGING_ABOVE_1M_DB = 41.0

URL_SCHEMES = ("http://www.", "https://www.", "http://", "https://")
URL_EXPANSIONS = (
    ".com/",
    ".org/",
    ".edu/",
    ".net/",
    ".info/",
    ".biz/",
    ".gov/",
    ".com",
    ".org",
    ".edu",
    ".net",
    ".info",
    ".biz",
    ".gov",
)
URL_MAX_ENCODED = 17  # what is left of 31 bytes after flags, UUID list and the frame header

_EDDYSTONE_PREFIX = b"\xaa\xfe"
_EN_PREFIX = b"\x6f\xfd"
_IBEACON_PREFIX = b"\x4c\x00\x02\x15"
_ALTBEACON_CODE = b"\xbe\xac"
_EID_PATTERN = b"\xaa\xfe\x30"


@dataclass(frozen=True, slots=True)
class NotDecodable:
    """Why an advertisement carries no frame we understand."""

    reason: str


@dataclass(frozen=True, slots=True)
class IBeacon:
    """Apple iBeacon: proximity UUID (16 raw bytes), major, minor and measured power at 1 m."""

    type: ClassVar[str] = "ibeacon"
    uuid: bytes
    major: int
    minor: int
    tx_power: int

    def to_json(self) -> dict[str, Any]:
        """The CLI's JSON view of this frame."""
        return {
            "type": self.type,
            "uuid": str(uuid_mod.UUID(bytes=bytes(self.uuid))),
            "major": self.major,
            "minor": self.minor,
            "tx_power": self.tx_power,
        }


@dataclass(frozen=True, slots=True)
class AltBeacon:
    """AltBeacon: 20-byte beacon id, reference RSSI at 1 m, reserved byte, advertiser company."""

    type: ClassVar[str] = "altbeacon"
    beacon_id: bytes
    tx_power: int
    mfg_reserved: int
    company_id: int = RADIUS_COMPANY_ID

    def to_json(self) -> dict[str, Any]:
        """The CLI's JSON view of this frame (the company id is not part of the contract)."""
        return {
            "type": self.type,
            "beacon_id": self.beacon_id.hex(),
            "tx_power": self.tx_power,
            "mfg_reserved": self.mfg_reserved,
        }


@dataclass(frozen=True, slots=True)
class EddystoneUID:
    """Eddystone-UID: 10-byte namespace, 6-byte instance, ranging data at 0 m."""

    type: ClassVar[str] = "eddystone_uid"
    namespace: bytes
    instance: bytes
    tx_power: int

    def to_json(self) -> dict[str, Any]:
        """The CLI's JSON view of this frame."""
        return {
            "type": self.type,
            "namespace": self.namespace.hex(),
            "instance": self.instance.hex(),
            "tx_power": self.tx_power,
        }


@dataclass(frozen=True, slots=True)
class EddystoneURL:
    """Eddystone-URL: the expanded URL and ranging data at 0 m."""

    type: ClassVar[str] = "eddystone_url"
    url: str
    tx_power: int

    def to_json(self) -> dict[str, Any]:
        """The CLI's JSON view of this frame."""
        return {"type": self.type, "url": self.url, "tx_power": self.tx_power}


@dataclass(frozen=True, slots=True)
class EddystoneTLM:
    """Eddystone-TLM version 0, kept as the raw fixed-point fields so round trips are exact."""

    type: ClassVar[str] = "eddystone_tlm"
    battery_mv: int
    temperature_raw: int  # signed 8.8 fixed point; -32768 (0x8000) means "not supported"
    adv_count: int
    uptime_tenths: int

    @property
    def temperature_c(self) -> float:
        """Beacon temperature in degrees Celsius."""
        return self.temperature_raw / 256

    @property
    def uptime_s(self) -> float:
        """Time since power-on or reboot, in seconds."""
        return self.uptime_tenths / 10

    def to_json(self) -> dict[str, Any]:
        """The CLI's JSON view of this frame."""
        return {
            "type": self.type,
            "battery_mv": self.battery_mv,
            "temperature_c": self.temperature_c,
            "adv_count": self.adv_count,
            "uptime_s": self.uptime_s,
        }


@dataclass(frozen=True, slots=True)
class EddystoneETLM:
    """Eddystone-TLM version 1 (encrypted): 12-byte ETLM, salt and message integrity check."""

    type: ClassVar[str] = "eddystone_tlm"
    etlm: bytes
    salt: int
    mic: int

    def to_json(self) -> dict[str, Any]:
        """The CLI's JSON view of this frame."""
        return {"type": self.type, "etlm": self.etlm.hex(), "salt": self.salt, "mic": self.mic}


@dataclass(frozen=True, slots=True)
class EddystoneEID:
    """Eddystone ephemeral identifier frame (0x30)."""

    type: ClassVar[str] = "eddystone_eid"
    eid: bytes
    tx_power: int

    def to_json(self) -> dict[str, Any]:
        """The CLI's JSON view of this frame."""
        return {"type": self.type, "eid": self.eid.hex(), "tx_power": self.tx_power}


@dataclass(frozen=True, slots=True)
class ExposureNotification:
    """Exposure Notification (0xFD6F): rolling proximity identifier and associated metadata."""

    type: ClassVar[str] = "exposure_notification"
    rpi: bytes
    aem: bytes

    def to_json(self) -> dict[str, Any]:
        """The CLI's JSON view of this frame."""
        return {"type": self.type, "rpi": self.rpi.hex(), "aem": self.aem.hex()}


Frame = (
    IBeacon
    | AltBeacon
    | EddystoneUID
    | EddystoneURL
    | EddystoneTLM
    | EddystoneETLM
    | EddystoneEID
    | ExposureNotification
)

FRAME_TYPES: tuple[str, ...] = (
    "ibeacon",
    "altbeacon",
    "eddystone_uid",
    "eddystone_url",
    "eddystone_tlm",
    "eddystone_eid",
    "exposure_notification",
)

_RANK: dict[type, int] = {
    EddystoneEID: 0,
    IBeacon: 1,
    AltBeacon: 2,
    EddystoneUID: 3,
    EddystoneURL: 4,
    EddystoneTLM: 5,
    EddystoneETLM: 5,
    ExposureNotification: 6,
}

# ---------------------------------------------------------------------------------------------
# Decoding


def _s8(v: int) -> int:
    return v - 256 if v > 127 else v


def _url_decode_table() -> tuple[str | None, ...]:
    table: list[str | None] = [None] * 256
    for code, text in enumerate(URL_EXPANSIONS):
        table[code] = text
    for c in range(0x21, 0x7F):
        table[c] = chr(c)
    return tuple(table)


_URL_BYTE = _url_decode_table()


def _decode_manufacturer(p: bytes) -> Frame | NotDecodable | None:
    if p[:4] == _IBEACON_PREFIX:
        if len(p) != 25:
            return NotDecodable(f"ibeacon: expected 25 bytes of manufacturer data, got {len(p)}")
        return IBeacon(
            uuid=p[4:20],
            major=(p[20] << 8) | p[21],
            minor=(p[22] << 8) | p[23],
            tx_power=_s8(p[24]),
        )
    if p[2:4] == _ALTBEACON_CODE:
        if len(p) != 26:
            return NotDecodable(f"altbeacon: expected 26 bytes of manufacturer data, got {len(p)}")
        return AltBeacon(
            beacon_id=p[4:24],
            tx_power=_s8(p[24]),
            mfg_reserved=p[25],
            company_id=p[0] | (p[1] << 8),
        )
    return None


def _decode_url(p: bytes) -> EddystoneURL | NotDecodable:
    # p starts at the frame type byte
    if len(p) < 3:
        return NotDecodable("eddystone url: truncated")
    if len(p) > 3 + URL_MAX_ENCODED:
        return NotDecodable("eddystone url: encoded url longer than 17 bytes")
    if p[2] >= len(URL_SCHEMES):
        return NotDecodable(f"eddystone url: unknown scheme prefix 0x{p[2]:02x}")
    parts = [URL_SCHEMES[p[2]]]
    for b in p[3:]:
        text = _URL_BYTE[b]
        if text is None:
            return NotDecodable(f"eddystone url: reserved byte 0x{b:02x}")
        parts.append(text)
    return EddystoneURL(url="".join(parts), tx_power=_s8(p[1]))


def _decode_tlm(p: bytes) -> EddystoneTLM | EddystoneETLM | NotDecodable:
    if len(p) < 2:
        return NotDecodable("eddystone tlm: truncated")
    version = p[1]
    if version == 0:
        if len(p) != 14:
            return NotDecodable(f"eddystone tlm v0: expected 14 bytes, got {len(p)}")
        return EddystoneTLM(
            battery_mv=int.from_bytes(p[2:4], "big"),
            temperature_raw=int.from_bytes(p[4:6], "big", signed=True),
            adv_count=int.from_bytes(p[6:10], "big"),
            uptime_tenths=int.from_bytes(p[10:14], "big"),
        )
    if version == 1:
        if len(p) != 18:
            return NotDecodable(f"eddystone tlm v1: expected 18 bytes, got {len(p)}")
        return EddystoneETLM(
            etlm=p[2:14],
            salt=int.from_bytes(p[14:16], "big"),
            mic=int.from_bytes(p[16:18], "big"),
        )
    return NotDecodable(f"eddystone tlm: unknown version {version}")


def _decode_eddystone(p: bytes) -> Frame | NotDecodable:
    # p starts at the frame type byte
    if not p:
        return NotDecodable("eddystone: no frame type")
    kind = p[0]
    if kind == EID_FRAME:
        if len(p) != 10:
            return NotDecodable(f"eddystone eid: expected 10 bytes, got {len(p)}")
        return EddystoneEID(eid=p[2:10], tx_power=_s8(p[1]))
    if kind == UID_FRAME:
        if len(p) not in (18, 20):
            return NotDecodable(f"eddystone uid: expected 18 or 20 bytes, got {len(p)}")
        return EddystoneUID(namespace=p[2:12], instance=p[12:18], tx_power=_s8(p[1]))
    if kind == URL_FRAME:
        return _decode_url(p)
    if kind == TLM_FRAME:
        return _decode_tlm(p)
    return NotDecodable(f"eddystone: unknown frame type 0x{kind:02x}")


def _decode_service(p: bytes) -> Frame | NotDecodable | None:
    head = p[:2]
    if head == _EDDYSTONE_PREFIX:
        return _decode_eddystone(p[2:])
    if head == _EN_PREFIX:
        if len(p) != 22:
            return NotDecodable(f"exposure notification: expected 22 bytes, got {len(p)}")
        return ExposureNotification(rpi=p[2:18], aem=p[18:22])
    return None


def iter_ad(adv: bytes) -> Iterator[tuple[int, bytes]]:
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
    """Decode one advertisement's AD structures into its best-ranked frame (total, never raises)."""
    if not isinstance(adv, bytes):
        if not isinstance(adv, bytearray | memoryview):
            return NotDecodable("advertising data must be bytes")
        adv = bytes(adv)
    n = len(adv)
    if n == 0:
        return NotDecodable("empty advertising data")
    best: Frame | None = None
    best_rank = len(_RANK)
    why: NotDecodable | None = None
    i = 0
    while i < n:
        length = adv[i]
        if length == 0:
            break
        end = i + 1 + length
        if end > n:
            return NotDecodable(f"AD structure at offset {i} runs past the end")
        ad_type = adv[i + 1]
        if ad_type == AD_MANUFACTURER:
            got = _decode_manufacturer(adv[i + 2 : end])
        elif ad_type == AD_SERVICE_DATA16:
            got = _decode_service(adv[i + 2 : end])
        else:
            got = None
        if got is not None:
            if type(got) is NotDecodable:
                if why is None:
                    why = got
            else:
                rank = _RANK[type(got)]
                if rank < best_rank:
                    best, best_rank = got, rank
        i = end
    if best is not None:
        return best
    return why if why is not None else NotDecodable("no known frame")


def programme_frame(adv: bytes, ibeacon_uuids: frozenset[bytes]) -> EddystoneEID | IBeacon | None:
    """What the edge filter may forward: the decoded EID, or an iBeacon whose UUID is listed."""
    # A programme frame's payload prefix must appear verbatim; most adverts fail both substring
    # scans (done in C) and never reach the Python parser.
    if _EID_PATTERN not in adv and (not ibeacon_uuids or _IBEACON_PREFIX not in adv):
        return None
    frame = decode(adv)
    if isinstance(frame, EddystoneEID):
        return frame
    if isinstance(frame, IBeacon) and frame.uuid in ibeacon_uuids:
        return frame
    return None


# ---------------------------------------------------------------------------------------------
# Encoding


def _ad(ad_type: int, payload: bytes) -> bytes:
    return bytes([len(payload) + 1, ad_type]) + payload


def _check_bytes(name: str, value: object, size: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != size:
        raise ValueError(f"{name} must be {size} bytes")
    return bytes(value)


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer between {lo} and {hi}")
    return value


def _check_power(value: object) -> int:
    return _check_int("tx_power", value, -128, 127) & 0xFF


def encode_url(url: str) -> bytes:
    """Scheme byte and compressed URL bytes of an Eddystone-URL (ValueError if not encodable)."""
    if not isinstance(url, str):
        raise ValueError("url must be a string")
    # longest scheme first so "https://www." is not taken as "https://" + "www."
    for code in (1, 0, 3, 2):
        if url.startswith(URL_SCHEMES[code]):
            break
    else:
        raise ValueError("url must start with http://, https://, http://www. or https://www.")
    out = bytearray([code])
    rest = url[len(URL_SCHEMES[code]) :]
    i = 0
    while i < len(rest):
        ch = rest[i]
        if ch == ".":
            # every expansion starts with "." and has no other ".", so the longest match is optimal
            best = -1
            for c, text in enumerate(URL_EXPANSIONS):
                if rest.startswith(text, i) and (best < 0 or len(text) > len(URL_EXPANSIONS[best])):
                    best = c
            if best >= 0:
                out.append(best)
                i += len(URL_EXPANSIONS[best])
                continue
        if not 0x21 <= ord(ch) <= 0x7E:
            raise ValueError(f"url character {ch!r} cannot be encoded (printable ASCII only)")
        out.append(ord(ch))
        i += 1
    if len(out) - 1 > URL_MAX_ENCODED:
        raise ValueError(
            f"url encodes to {len(out) - 1} bytes after the scheme; at most {URL_MAX_ENCODED} fit"
        )
    return bytes(out)


def _eddystone(frame_bytes: bytes) -> bytes:
    uuid = EDDYSTONE_UUID.to_bytes(2, "little")
    return _ad(AD_FLAGS, b"\x06") + _ad(AD_UUID16_COMPLETE, uuid) + _ad(0x16, uuid + frame_bytes)


def programme_ad(frame: EddystoneEID | IBeacon) -> bytes:
    """The one AD structure carrying a programme frame, without the rest of an advertisement."""
    # Both layouts have a fixed size, so the decoded fields give back the very bytes heard:
    # a capture can keep the frame without keeping anything else the sender put beside it.
    if isinstance(frame, EddystoneEID):
        body = bytes([EID_FRAME, _check_power(frame.tx_power)]) + _check_bytes("eid", frame.eid, 8)
        return _ad(AD_SERVICE_DATA16, EDDYSTONE_UUID.to_bytes(2, "little") + body)
    if isinstance(frame, IBeacon):
        body = (
            _IBEACON_PREFIX
            + _check_bytes("uuid", frame.uuid, 16)
            + _check_int("major", frame.major, 0, 0xFFFF).to_bytes(2, "big")
            + _check_int("minor", frame.minor, 0, 0xFFFF).to_bytes(2, "big")
            + bytes([_check_power(frame.tx_power)])
        )
        return _ad(AD_MANUFACTURER, body)
    raise TypeError(f"{type(frame).__name__} is not a programme frame")


def encode(frame: Frame) -> bytes:
    """Full advertising data (flags, then the frame's AD structures) for a frame."""
    if isinstance(frame, EddystoneEID):
        uuid = EDDYSTONE_UUID.to_bytes(2, "little")
        return _ad(AD_FLAGS, b"\x06") + _ad(AD_UUID16_COMPLETE, uuid) + programme_ad(frame)
    if isinstance(frame, IBeacon):
        return _ad(AD_FLAGS, b"\x06") + programme_ad(frame)
    if isinstance(frame, AltBeacon):
        body = (
            _check_int("company_id", frame.company_id, 0, 0xFFFF).to_bytes(2, "little")
            + _ALTBEACON_CODE
            + _check_bytes("beacon_id", frame.beacon_id, 20)
            + bytes([_check_power(frame.tx_power)])
            + bytes([_check_int("mfg_reserved", frame.mfg_reserved, 0, 0xFF)])
        )
        return _ad(AD_FLAGS, b"\x06") + _ad(AD_MANUFACTURER, body)
    if isinstance(frame, EddystoneUID):
        return _eddystone(
            bytes([UID_FRAME, _check_power(frame.tx_power)])
            + _check_bytes("namespace", frame.namespace, 10)
            + _check_bytes("instance", frame.instance, 6)
            + b"\x00\x00"
        )
    if isinstance(frame, EddystoneURL):
        return _eddystone(bytes([URL_FRAME, _check_power(frame.tx_power)]) + encode_url(frame.url))
    if isinstance(frame, EddystoneTLM):
        return _eddystone(
            bytes([TLM_FRAME, 0])
            + _check_int("battery_mv", frame.battery_mv, 0, 0xFFFF).to_bytes(2, "big")
            + _check_int("temperature_raw", frame.temperature_raw, -0x8000, 0x7FFF).to_bytes(
                2, "big", signed=True
            )
            + _check_int("adv_count", frame.adv_count, 0, 0xFFFFFFFF).to_bytes(4, "big")
            + _check_int("uptime_tenths", frame.uptime_tenths, 0, 0xFFFFFFFF).to_bytes(4, "big")
        )
    if isinstance(frame, EddystoneETLM):
        return _eddystone(
            bytes([TLM_FRAME, 1])
            + _check_bytes("etlm", frame.etlm, 12)
            + _check_int("salt", frame.salt, 0, 0xFFFF).to_bytes(2, "big")
            + _check_int("mic", frame.mic, 0, 0xFFFF).to_bytes(2, "big")
        )
    if isinstance(frame, ExposureNotification):
        uuid = EXPOSURE_NOTIFICATION_UUID.to_bytes(2, "little")
        data = uuid + _check_bytes("rpi", frame.rpi, 16) + _check_bytes("aem", frame.aem, 4)
        # flags 0x1A are what the Exposure Notification Bluetooth specification broadcasts
        return _ad(AD_FLAGS, b"\x1a") + _ad(AD_UUID16_COMPLETE, uuid) + _ad(0x16, data)
    raise TypeError(f"cannot encode {type(frame).__name__}")
