"""Pure world model for the simulator: emitters moving through venues, and the radio maths.

Times inside a `World` script are seconds since the world's start; `loop_s` repeats the script.
Each emitter advertises its current Eddystone-EID frame, computed exactly as a provisioned phone
would (T = int(now) - time_base).

A scenario file (`[source] scenario = "file.json"`) is one JSON object:
    {"loop_s": 600,                                   # optional: repeat the script forever
     "emitters": [{"identity_key": "<32 hex>", "exponent": 10, "time_base": 0,
                   "tx_power_1m": -59.0,              # time_base and tx_power_1m optional
                   "legs": [{"t0": 0, "t1": 60, "venue": "salon", "x": 1.0, "y": 2.0,
                             "to_x": 4.0, "to_y": 2.0}]}]}   # to_x/to_y optional: a walk
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beacons.eid import compute_eid
from beacons.frames import EDDYSTONE_RANGING_ABOVE_1M_DB, EddystoneEID, encode


@dataclass(frozen=True)
class Leg:
    """The emitter is in `venue` from t0 to t1, at (x, y), walking to (to_x, to_y) if given."""

    t0: float
    t1: float
    venue: str
    x: float
    y: float
    to_x: float | None = None
    to_y: float | None = None

    def at(self, t: float) -> tuple[float, float]:
        """Position within this leg at script time t (linear walk when a destination is set)."""
        if self.to_x is None or self.to_y is None or self.t1 <= self.t0:
            return self.x, self.y
        f = min(1.0, max(0.0, (t - self.t0) / (self.t1 - self.t0)))
        return self.x + f * (self.to_x - self.x), self.y + f * (self.to_y - self.y)


@dataclass
class SimEmitter:
    """A provisioned phone or wearable following a script of legs."""

    identity_key: bytes
    exponent: int
    legs: list[Leg]
    time_base: int = 0
    tx_power_1m: float = -59.0
    _sorted: list[Leg] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        """Keep the legs in time order so lookups stop at the first match."""
        self._sorted = sorted(self.legs, key=lambda leg: leg.t0)

    def leg_at(self, t: float) -> Leg | None:
        """The leg in force at script time t, if any."""
        for leg in self._sorted:
            if leg.t0 <= t < leg.t1:
                return leg
        return None


def ranging_tx_power(tx_power_1m: float) -> int:
    """The signed byte an EID frame carries for an emitter calibrated at `tx_power_1m`."""
    return max(-128, min(127, round(tx_power_1m + EDDYSTONE_RANGING_ABOVE_1M_DB)))


def path_loss_rssi(tx_power_1m: float, distance_m: float, n: float) -> float:
    """Mean RSSI by log-distance path loss (distance floored at 10 cm: antennas have a size)."""
    return tx_power_1m - 10.0 * n * math.log10(max(distance_m, 0.1))


class World:
    """Where every emitter is at any instant."""

    def __init__(
        self, emitters: list[SimEmitter], start: float, loop_s: float | None = None
    ) -> None:
        """A world whose script time 0 is the unix time `start`."""
        if loop_s is not None and loop_s <= 0:
            raise ValueError("loop_s must be positive")
        self.emitters = list(emitters)
        self.start = start
        self.loop_s = loop_s

    def script_time(self, now: float) -> float | None:
        """Script time for unix time `now`, None before the world starts."""
        t = now - self.start
        if t < 0:
            return None
        return t % self.loop_s if self.loop_s else t

    def position(self, emitter_index: int, now: float) -> tuple[str, float, float] | None:
        """(venue, x, y) of an emitter at unix time `now`, None when it is nowhere we simulate."""
        t = self.script_time(now)
        if t is None:
            return None
        leg = self.emitters[emitter_index].leg_at(t)
        if leg is None:
            return None
        x, y = leg.at(t)
        return leg.venue, x, y

    def eid(self, emitter_index: int, now: float) -> bytes:
        """The 8-byte EID the emitter broadcasts at unix time `now`."""
        e = self.emitters[emitter_index]
        return compute_eid(e.identity_key, e.exponent, (int(now) - e.time_base) % 2**32)

    def advert(self, emitter_index: int, now: float) -> bytes:
        """The full advertising data the emitter broadcasts at unix time `now`."""
        e = self.emitters[emitter_index]
        frame = EddystoneEID(self.eid(emitter_index, now), ranging_tx_power(e.tx_power_1m))
        return encode(frame)


def demo_world(
    start: float, *, venue: str = "salon", emitters: int = 4, seed: int = 0, loop_s: float = 600.0
) -> World:
    """A looping scene: emitters stroll between spots of a 10 m x 8 m room, leave and come back."""
    rng = random.Random(seed)
    spots = [(1.5, 1.5), (5.0, 1.5), (8.5, 1.5), (1.5, 6.5), (5.0, 6.5), (8.5, 6.5), (5.0, 4.0)]
    out = []
    for _ in range(emitters):
        legs: list[Leg] = []
        t = rng.uniform(0, 30)
        x, y = rng.choice(spots)
        while t < loop_s:
            stay = rng.uniform(30, 120)
            legs.append(Leg(t, min(t + stay, loop_s), venue, x, y))
            t += stay
            if rng.random() < 0.2:  # steps out of the venue for a while
                t += rng.uniform(20, 60)
                continue
            nx, ny = rng.choice(spots)
            walk = math.dist((x, y), (nx, ny)) / 1.2  # ~1.2 m/s walking pace
            legs.append(Leg(t, min(t + walk, loop_s), venue, x, y, nx, ny))
            t, x, y = t + walk, nx, ny
        key = bytes(rng.randrange(256) for _ in range(16))
        out.append(SimEmitter(key, exponent=rng.choice([8, 10]), legs=legs))
    return World(out, start, loop_s=loop_s)


def world_from_doc(doc: dict[str, Any], start: float) -> World:
    """A world from a scenario document (format in the module docstring); ValueError if bad."""
    try:
        emitters = [
            SimEmitter(
                identity_key=bytes.fromhex(e["identity_key"]),
                exponent=int(e["exponent"]),
                time_base=int(e.get("time_base", 0)),
                tx_power_1m=float(e.get("tx_power_1m", -59.0)),
                legs=[Leg(**leg) for leg in e["legs"]],
            )
            for e in doc["emitters"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad scenario: {exc}") from None
    for e in emitters:
        if len(e.identity_key) != 16 or not 0 <= e.exponent <= 15:
            raise ValueError("bad scenario: identity keys are 16 bytes, exponents 0-15")
        for leg in e.legs:
            _check_leg(leg)
    loop_s = doc.get("loop_s")
    if loop_s is not None and not (_number(loop_s) and loop_s > 0):
        raise ValueError("bad scenario: loop_s must be a positive number of seconds")
    return World(emitters, start, loop_s=loop_s)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_leg(leg: Leg) -> None:
    """A leg's types, checked up front: a string where a number belongs would otherwise fail
    every time the source reads, for as long as the daemon runs."""
    if not isinstance(leg.venue, str):
        raise ValueError("bad scenario: a leg's venue must be a string")
    for name in ("t0", "t1", "x", "y"):
        if not _number(getattr(leg, name)):
            raise ValueError(f"bad scenario: a leg's {name} must be a number")
    for name in ("to_x", "to_y"):
        if getattr(leg, name) is not None and not _number(getattr(leg, name)):
            raise ValueError(f"bad scenario: a leg's {name} must be a number")


def world_from_file(path: str | Path, start: float) -> World:
    """A world from a JSON scenario file."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"cannot read scenario {path}: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise ValueError("bad scenario: expected a JSON object")
    return world_from_doc(doc, start)
