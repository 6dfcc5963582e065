"""Failed-attempt throttling for sign-in and pairing, so passwords and codes cannot be guessed
at network speed. In process memory: enough for one process; it fails open on restart."""

from __future__ import annotations

import threading
import time
from collections import deque


class Throttle:
    """At most `limit` failures per key within `window_s` seconds."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def blocked(self, key: str, now: float | None = None) -> bool:
        """Whether this key has used up its failures for now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._failures.get(key)
            if q is None:
                return False
            while q and q[0] <= now - self.window_s:
                q.popleft()
            if not q:
                del self._failures[key]
            return len(q) >= self.limit

    def fail(self, key: str, now: float | None = None) -> None:
        """Count one failure."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._failures.setdefault(key, deque()).append(now)

    def clear(self, key: str) -> None:
        """Forget a key's failures (after a success)."""
        with self._lock:
            self._failures.pop(key, None)
