"""Group commit: many concurrent callers, one round trip per group.

Every connected device acknowledges every event, so a busy worker handles acks by the thousand
per second, each one a Redis round trip of its own. Here a caller that finds no flush running
runs its own item at once; callers arriving while a flush runs wait together, and when it ends
one of them runs the whole group in one call. Each caller still returns only once its own item
is done, with its own result (or the flush's exception), so nothing is acknowledged before it
happened. Works with threads and with gevent's patched threading alike.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Group(Generic[T, R]):
    """Items waiting for one flush, and what it gave them."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self.results: Sequence[R] = ()
        self.error: BaseException | None = None
        self.led = False
        self.turn = threading.Event()  # the group may run: one of its callers leads it
        self.done = threading.Event()


class GroupCommit(Generic[T, R]):
    """Run `flush(items) -> results` (one result per item, in order) for concurrent callers."""

    def __init__(self, flush: Callable[[list[T]], Sequence[R]]) -> None:
        self._flush = flush
        self._lock = threading.Lock()
        self._group: _Group[T, R] = _Group()
        self._busy = False

    def submit(self, item: T) -> R:
        """Flush `item` with whatever others are waiting; returns its result or raises."""
        with self._lock:
            group = self._group
            index = len(group.items)
            group.items.append(item)
            lead = not self._busy
            if lead:
                self._busy = True
                group.led = True
                self._group = _Group()
        if not lead:
            group.turn.wait()
            with self._lock:
                lead = not group.led
                group.led = True
        if lead:
            self._run(group)
        else:
            group.done.wait()
        if group.error is not None:
            raise group.error
        return group.results[index]

    def _run(self, group: _Group[T, R]) -> None:
        try:
            results = self._flush(group.items)
            if len(results) != len(group.items):
                raise RuntimeError("flush returned a result count unlike its item count")
            group.results = results
        except BaseException as e:  # every caller of the group gets it, not only the leader
            group.error = e
        with self._lock:
            # Hand over to the callers who arrived meanwhile: one of them runs their group.
            nxt: _Group[T, R] | None = self._group if self._group.items else None
            if nxt is not None:
                self._group = _Group()
            else:
                self._busy = False
        group.done.set()
        if nxt is not None:
            nxt.turn.set()
