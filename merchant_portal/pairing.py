"""Short pairing codes: staff read one off the portal and type it on the device, once.

The code maps to a device id only (never to a token): the token is issued when the code is
redeemed, so no bearer token waits anywhere in clear. Codes live in this process's memory, which
is enough for the one-process deployment; several portal processes would need a shared store.
"""

from __future__ import annotations

import secrets
import threading
import time

# No 0/O, 1/I/L: read aloud or off a screen without mistakes.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
LENGTH = 8
TTL_S = 600.0


class PairingCodes:
    """Single-use, expiring codes for pairing devices."""

    def __init__(self, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._codes: dict[str, tuple[int, float]] = {}

    def issue(self, device_id: int, now: float | None = None) -> str:
        """A new code for a device; any earlier code of that device stops working."""
        now = time.time() if now is None else now
        code = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
        with self._lock:
            self._purge(now)
            for c, (d, _exp) in list(self._codes.items()):
                if d == device_id:
                    del self._codes[c]
            self._codes[code] = (device_id, now + self.ttl_s)
        return code

    def redeem(self, code: str, now: float | None = None) -> int | None:
        """The device id the code was issued for, consuming it; None if unknown or expired."""
        now = time.time() if now is None else now
        code = normalise(code)
        with self._lock:
            self._purge(now)
            hit = self._codes.pop(code, None)
        return hit[0] if hit else None

    def _purge(self, now: float) -> None:
        for c, (_d, expires) in list(self._codes.items()):
            if expires <= now:
                del self._codes[c]


def normalise(code: str) -> str:
    """Upper-case, without spaces or dashes people type between groups."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


def grouped(code: str) -> str:
    """The code as two groups of four, easier to read out."""
    return f"{code[:4]}-{code[4:]}"
