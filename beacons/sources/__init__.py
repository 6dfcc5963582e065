"""Where raw adverts come from: a BLE adapter (bluepy), a recorded capture, or the simulator.

Every source yields `Advert`s. The BLE address is only ever an attribute of an `Advert`: the edge
filter drops it before anything is batched, queued, logged or recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Advert:
    """One advertising report as heard by a radio (address kept only up to the edge filter)."""

    ts: float
    rssi: float
    address: str = field(repr=False)  # "" when the source has none (replay)
    data: bytes


class Source(Protocol):
    """What the daemon needs from a source of adverts."""

    adapter: str  # "up" | "down" | "simulated" | "replay", reported in heartbeats

    def read(self, timeout: float) -> list[Advert]:
        """Adverts heard within at most `timeout` seconds; an empty list when it was quiet."""
        ...

    @property
    def exhausted(self) -> bool:
        """True once the source will never yield again (end of a capture)."""
        ...

    def close(self) -> None:
        """Release the radio or file."""
        ...
