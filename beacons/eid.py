"""Eddystone-EID rotating identifiers: the emitter's computation and the resolver's window."""

from __future__ import annotations

from functools import lru_cache

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

EID_LEN = 8
KEY_LEN = 16
MAX_EXPONENT = 15


def _aes_block(key: bytes, block: bytes) -> bytes:
    """Encrypt one 16-byte block with AES-128 (ECB on a single block is the spec's primitive)."""
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - one block, by spec
    return enc.update(block) + enc.finalize()


@lru_cache(maxsize=65536)
def window_key(identity_key: bytes, top16: int) -> bytes:
    """Temporary key for the window whose counter values share these top 16 bits (cached)."""
    return _aes_block(identity_key, b"\x00" * 11 + b"\xff" + b"\x00\x00" + top16.to_bytes(2, "big"))


def temporary_key(identity_key: bytes, t: int) -> bytes:
    """Temporary key for the 65,536-second window containing T (one AES call per key and window)."""
    return window_key(identity_key, (t >> 16) & 0xFFFF)


def compute_eid(identity_key: bytes, exponent: int, t: int) -> bytes:
    """The 8-byte ephemeral identifier broadcast at counter value T with rotation exponent K."""
    if not isinstance(identity_key, bytes | bytearray) or len(identity_key) != KEY_LEN:
        raise ValueError("identity key must be 16 bytes")
    identity_key = bytes(identity_key)  # hashable for the window-key cache
    if not 0 <= exponent <= MAX_EXPONENT:
        raise ValueError("rotation exponent must be between 0 and 15")
    if not 0 <= t < 2**32:
        raise ValueError("time counter must fit in 32 bits")
    tk = temporary_key(identity_key, t)
    quantised = (t >> exponent) << exponent
    block = b"\x00" * 11 + bytes([exponent]) + quantised.to_bytes(4, "big")
    return _aes_block(tk, block)[:EID_LEN]


def period_start(exponent: int, t: int) -> int:
    """Counter value at which the rotation period containing T began."""
    return (t >> exponent) << exponent


def window(
    identity_key: bytes, exponent: int, t: int, before: int = 1, after: int = 1
) -> list[tuple[int, bytes]]:
    """EIDs of the periods around T, oldest first, so a resolver tolerates clock drift."""
    step = 1 << exponent
    start = period_start(exponent, t)
    out = []
    for i in range(-before, after + 1):
        p = start + i * step
        if 0 <= p < 2**32:
            out.append((p, compute_eid(identity_key, exponent, p)))
    return out
