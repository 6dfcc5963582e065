"""Reference emitter: the Eddystone-EID advertisement a provisioned phone or wearable broadcasts.

App developers compare their implementation with `python -m beacons emit`; the simulator calls
`advertisement` to make its virtual emitters speak exactly as real ones would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from beacons.eid import compute_eid, period_start
from beacons.frames import EddystoneEID, encode
from beacons.provisioning import Provisioning

# Eddystone ranging data is the power at 0 m: a typical phone's -59 dBm at 1 m plus the spec's 41 dB
DEFAULT_TX_POWER = -18


@dataclass(frozen=True)
class Period:
    """One rotation period: its starting counter value, its EID and the advertising data sent."""

    t: int
    unix_time: int
    eid: bytes
    adv: bytes

    def to_json(self) -> dict[str, Any]:
        """The CLI's JSON line for this period."""
        return {
            "t": self.t,
            "unix_time": self.unix_time,
            "eid": self.eid.hex(),
            "adv": self.adv.hex(),
        }


def period_at(doc: Provisioning, t: int, tx_power: int = DEFAULT_TX_POWER) -> Period:
    """The period containing counter value T (ValueError if T is outside 0..2**32-1)."""
    start = period_start(doc.exponent, t)
    eid = compute_eid(doc.identity_key, doc.exponent, t)
    adv = encode(EddystoneEID(eid=eid, tx_power=tx_power))
    return Period(t=start, unix_time=doc.time_base + start, eid=eid, adv=adv)


def advertisement(doc: Provisioning, unix_time: float, tx_power: int = DEFAULT_TX_POWER) -> bytes:
    """Full advertising data the emitter broadcasts at a unix time."""
    return period_at(doc, doc.counter(unix_time), tx_power).adv


def periods(
    doc: Provisioning, start: int, count: int, tx_power: int = DEFAULT_TX_POWER
) -> Iterator[Period]:
    """COUNT consecutive periods from the one containing counter value START, lazily."""
    step = 1 << doc.exponent
    first = period_start(doc.exponent, start)
    for i in range(count):
        t = first + i * step
        if t >= 2**32:
            return
        yield period_at(doc, t, tx_power)
