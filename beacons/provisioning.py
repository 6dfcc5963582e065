"""Provisioning documents: what a subscriber's emitter needs to broadcast rotating identifiers.

The server creates an identity key per emitter at opt-in and hands the emitter this document, as
JSON or as a QR code of that same JSON. Format, version 1 (all keys required, no others allowed)::

    {
      "version": 1,                 # integer; a reader refuses any other version
      "identity_key": "00..0f",     # 32 lowercase hex digits: the 16-byte AES-128 identity key
      "exponent": 10,               # rotation exponent K, 0-15: a new identifier every 2**K s
      "time_base": 1767225600,      # unix seconds at which the counter T is 0 (T = now - time_base)
      "resolver_id": "cm-paris-1",  # which resolver knows this key
      "emitter_id": "em-7f3a",      # the emitter's pseudonymous id at that resolver
      "issued_at": 1767225600       # unix seconds when this document was issued
    }

Identifiers are 1-128 printable ASCII characters without spaces. The counter T must fit in 32
bits, so a document is usable for about 136 years after its time base. The serialised form is
compact JSON with sorted keys, so the same document always gives the same bytes (and QR code).

The identity key is a secret: anyone holding the document can compute the emitter's identifiers.
Show the QR code only to the subscriber's own device; rotate by issuing a new document with a new
key (the resolver then forgets the old one), revoke by deleting the key at the resolver.
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import segno

VERSION = 1
KEY_LEN = 16
MAX_EXPONENT = 15
MAX_ID_LEN = 128
FIELDS = (
    "version",
    "identity_key",
    "exponent",
    "time_base",
    "resolver_id",
    "emitter_id",
    "issued_at",
)


@dataclass(frozen=True)
class Provisioning:
    """A validated provisioning document (build it with `build` or `validate`)."""

    identity_key: bytes
    exponent: int
    time_base: int
    resolver_id: str
    emitter_id: str
    issued_at: int
    version: int = VERSION

    def to_json(self) -> dict[str, Any]:
        """The document as a JSON-ready dict in the documented format."""
        return {
            "version": self.version,
            "identity_key": self.identity_key.hex(),
            "exponent": self.exponent,
            "time_base": self.time_base,
            "resolver_id": self.resolver_id,
            "emitter_id": self.emitter_id,
            "issued_at": self.issued_at,
        }

    def counter(self, unix_time: float) -> int:
        """The EID counter T at a unix time (ValueError outside the 32-bit counter range)."""
        t = int(unix_time) - self.time_base
        if not 0 <= t < 2**32:
            raise ValueError(f"unix time {int(unix_time)} is outside this document's counter range")
        return t


def new_identity_key() -> bytes:
    """A fresh random 16-byte identity key."""
    return secrets.token_bytes(KEY_LEN)


def _int_field(doc: Mapping[str, Any], name: str, lo: int, hi: int | None = None) -> int:
    value = doc[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def _id_field(doc: Mapping[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_ID_LEN:
        raise ValueError(f"{name} must be 1 to {MAX_ID_LEN} characters long")
    if not all(0x21 <= ord(c) <= 0x7E for c in value):
        raise ValueError(f"{name} must be printable ASCII without spaces")
    return value


def _key_field(doc: Mapping[str, Any]) -> bytes:
    value = doc["identity_key"]
    if not isinstance(value, str) or len(value) != 2 * KEY_LEN:
        raise ValueError(f"identity_key must be {2 * KEY_LEN} hex digits")
    if value != value.lower():
        raise ValueError("identity_key must be lowercase hex")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"identity_key must be {2 * KEY_LEN} hex digits") from None


def validate(doc: object) -> Provisioning:
    """Check a decoded JSON document against the format; ValueError says what is wrong."""
    if not isinstance(doc, Mapping):
        raise ValueError("provisioning document must be a JSON object")
    missing = [f for f in FIELDS if f not in doc]
    if missing:
        raise ValueError(f"provisioning document lacks {', '.join(missing)}")
    unknown = sorted(str(k) for k in doc if k not in FIELDS)
    if unknown:
        raise ValueError(f"provisioning document has unknown fields {', '.join(unknown)}")
    version = _int_field(doc, "version", 0)
    if version != VERSION:
        raise ValueError(
            f"unsupported provisioning version {version} (this reader knows {VERSION})"
        )
    return Provisioning(
        identity_key=_key_field(doc),
        exponent=_int_field(doc, "exponent", 0, MAX_EXPONENT),
        time_base=_int_field(doc, "time_base", 0),
        resolver_id=_id_field(doc, "resolver_id"),
        emitter_id=_id_field(doc, "emitter_id"),
        issued_at=_int_field(doc, "issued_at", 0),
        version=version,
    )


def build(
    identity_key: bytes,
    exponent: int,
    time_base: int,
    resolver_id: str,
    emitter_id: str,
    issued_at: int,
) -> Provisioning:
    """A validated document from its parts (ValueError on any invalid part)."""
    if not isinstance(identity_key, bytes | bytearray) or len(identity_key) != KEY_LEN:
        raise ValueError(f"identity_key must be {KEY_LEN} bytes")
    return validate(
        {
            "version": VERSION,
            "identity_key": bytes(identity_key).hex(),
            "exponent": exponent,
            "time_base": time_base,
            "resolver_id": resolver_id,
            "emitter_id": emitter_id,
            "issued_at": issued_at,
        }
    )


def rotate(doc: Provisioning, identity_key: bytes, issued_at: int) -> Provisioning:
    """The same emitter's document with a new identity key, issued at a new time."""
    return build(
        identity_key, doc.exponent, doc.time_base, doc.resolver_id, doc.emitter_id, issued_at
    )


def serialise(doc: Provisioning) -> str:
    """Canonical compact JSON of a document (sorted keys, no spaces)."""
    return json.dumps(doc.to_json(), sort_keys=True, separators=(",", ":"))


def parse(text: str | bytes) -> Provisioning:
    """Read and validate a serialised document; ValueError if it is not valid JSON or invalid."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"provisioning document is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError("provisioning document is not valid JSON: nested too deeply") from None
    return validate(doc)


def _qr(doc: Provisioning) -> segno.QRCode:
    # error level M survives smudged phone screens; micro QR codes are not read by most apps
    return segno.make(serialise(doc), error="m", micro=False, boost_error=False)


def qr_svg(doc: Provisioning, scale: int = 4) -> bytes:
    """The document as an SVG QR code."""
    out = io.BytesIO()
    _qr(doc).save(out, kind="svg", scale=scale)
    return out.getvalue()


def qr_png(doc: Provisioning, scale: int = 4) -> bytes:
    """The document as a PNG QR code."""
    out = io.BytesIO()
    _qr(doc).save(out, kind="png", scale=scale)
    return out.getvalue()
