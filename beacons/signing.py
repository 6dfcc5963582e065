"""Scanner-to-server request signing: HMAC-SHA256 over timestamp, nonce and body."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

HEADER_SCANNER = "X-CM-Scanner"
HEADER_TIMESTAMP = "X-CM-Timestamp"
HEADER_NONCE = "X-CM-Nonce"
HEADER_SIGNATURE = "X-CM-Signature"


def signature(secret: str, timestamp: int, nonce: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of `timestamp\\nnonce\\n` followed by the raw body."""
    msg = f"{timestamp}\n{nonce}\n".encode() + body
    return hmac.new(bytes.fromhex(secret), msg, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: int, nonce: str, body: bytes, sig: str) -> bool:
    """Constant-time check of a request signature."""
    return hmac.compare_digest(signature(secret, timestamp, nonce, body), sig)


def signed_headers(
    scanner: str, secret: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """Headers that authenticate one request body from a scanner."""
    ts = int(time.time() if now is None else now)
    nonce = secrets.token_hex(16)
    return {
        "Content-Type": "application/json",
        HEADER_SCANNER: scanner,
        HEADER_TIMESTAMP: str(ts),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: signature(secret, ts, nonce, body),
    }


def new_secret() -> str:
    """A fresh 256-bit scanner secret, hex encoded."""
    return secrets.token_hex(32)
