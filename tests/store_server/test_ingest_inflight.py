"""ingest.InFlight: batches of a venue wait only for earlier batches that heard one of their
identifiers, first come first served, and a nested call never waits for itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from store_server.ingest import InFlight

TIMEOUT_S = 10.0


def _until(cond: Callable[[], bool]) -> None:
    """Return once cond() holds (a waiter registers itself before it blocks; no hook to await)."""
    deadline = time.monotonic() + TIMEOUT_S
    while not cond():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.001)


class Batch(threading.Thread):
    """A batch holding `ids` at `venue` until released; `entered` once it holds them."""

    def __init__(self, flight: InFlight, venue: int, ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.flight, self.venue, self.ids = flight, venue, ids
        self.entered, self.release = threading.Event(), threading.Event()

    def run(self) -> None:
        with self.flight.hold(self.venue, self.ids):
            self.entered.set()
            self.release.wait(TIMEOUT_S)

    def finish(self) -> None:
        self.release.set()
        self.join(TIMEOUT_S)
        assert not self.is_alive()


def test_disjoint_identifiers_and_other_venues_do_not_wait():
    flight = InFlight()
    a = Batch(flight, 1, ["a", "b"])
    a.start()
    assert a.entered.wait(TIMEOUT_S)
    for other in (Batch(flight, 1, ["c"]), Batch(flight, 2, ["a"]), Batch(flight, 1, [])):
        other.start()
        assert other.entered.wait(TIMEOUT_S)
        other.finish()
    a.finish()
    assert len(flight) == 0


def test_a_shared_identifier_waits_and_the_queue_is_first_come_first_served():
    flight = InFlight()
    a, b, c = Batch(flight, 1, ["a"]), Batch(flight, 1, ["a", "b"]), Batch(flight, 1, ["b"])
    a.start()
    assert a.entered.wait(TIMEOUT_S)
    b.start()
    _until(lambda: len(flight) == 2)
    # c shares nothing with a, but b (earlier, still waiting for a) needs "b": c queues too.
    c.start()
    _until(lambda: len(flight) == 3)
    assert not b.entered.is_set() and not c.entered.is_set()
    a.finish()
    assert b.entered.wait(TIMEOUT_S)
    assert not c.entered.is_set()
    b.finish()
    assert c.entered.wait(TIMEOUT_S)
    c.finish()
    assert len(flight) == 0


def test_a_nested_call_in_the_same_thread_does_not_wait_for_itself():
    flight = InFlight()
    done = threading.Event()

    def nested() -> None:
        with flight.hold(1, ["a"]), flight.hold(1, ["a", "b"]):
            done.set()

    t = threading.Thread(target=nested, daemon=True)
    t.start()
    assert done.wait(TIMEOUT_S)
    t.join(TIMEOUT_S)
    assert len(flight) == 0
