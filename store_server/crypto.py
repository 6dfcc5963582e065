"""Secrets at rest, per-merchant pseudonyms and token hashes: small, pure crypto helpers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def _derive(data_key: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        data_key.encode()
    )


def derive_key(data_key: str, purpose: bytes) -> bytes:
    """A 32-byte key of its own for `purpose`, derived from DATA_KEY (HKDF-SHA256, as `seal`
    derives its keys): no new secret to configure, and unrelated to every other purpose's."""
    return _derive(data_key, purpose)


def seal(data_key: str, plaintext: bytes, purpose: bytes) -> bytes:
    """Encrypt with AES-256-GCM under a key derived for `purpose`; nonce is prepended."""
    nonce = os.urandom(12)
    return nonce + AESGCM(_derive(data_key, purpose)).encrypt(nonce, plaintext, purpose)


def unseal(data_key: str, blob: bytes, purpose: bytes) -> bytes:
    """Decrypt a value produced by `seal` with the same purpose."""
    return AESGCM(_derive(data_key, purpose)).decrypt(blob[:12], blob[12:], purpose)


def pseudonym(merchant_key: bytes, subscriber_public_id: str) -> str:
    """Stable per-merchant pseudonym: unlinkable across merchants without the merchant keys."""
    mac = hmac.new(merchant_key, subscriber_public_id.encode(), hashlib.sha256).digest()
    return base64.b32encode(mac[:10]).decode().lower()


def new_token() -> str:
    """A fresh bearer token for a device (shown once, stored only as a hash)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """SHA-256 of a high-entropy token: enough, since tokens are random, not passwords."""
    return hashlib.sha256(token.encode()).hexdigest()


SCANNER_SECRET = b"scanner-secret"
EMITTER_KEY = b"emitter-identity-key"
RESOLVER_LOOKUP = b"resolver-lookup-key"
