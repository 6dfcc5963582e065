"""One scanner's radio view of a simulated world: adverts with path loss, shadowing and jitter.

Each emitter has its own random stream seeded from (seed, index), so the adverts of a time span
are the same whatever the polling cadence: the same seed always gives the same capture.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable

from beacons.simulator import World, path_loss_rssi
from beacons.sources import Advert

ADV_DELAY_MAX_S = 0.010  # the BLE spec's pseudo-random advDelay added to every interval
# A live scanner hears nothing while it is not reading (a stall, a suspend, the clock jumping at
# boot on a board without RTC): never replay more than this much of the past at once.
MAX_CATCH_UP_S = 60.0


class _Radio:
    """Advertising state of one emitter as heard by this scanner."""

    def __init__(self, index: int, seed: int, t0: float, interval_s: tuple[float, float]) -> None:
        self.index = index
        self.rng = random.Random(seed * 1_000_003 + index)
        self.interval = self.rng.uniform(*interval_s)
        self.next = t0 + self.rng.uniform(0, self.interval)
        # a random static address, as a phone would use; it never gets past the edge filter
        octets = [self.rng.randrange(256) for _ in range(6)]
        octets[0] |= 0xC0
        self.address = ":".join(f"{o:02x}" for o in octets)


class SimulatedSource:
    """Adverts that a scanner at (x, y) in `venue` would hear from the world's emitters."""

    adapter = "simulated"

    def __init__(
        self,
        world: World,
        venue: str,
        x: float,
        y: float,
        *,
        seed: int = 0,
        n: float = 2.7,
        sigma_db: float = 3.0,
        floor_dbm: float = -95.0,
        interval_s: tuple[float, float] = (0.1, 1.0),
        clock: Callable[[], float] = time.time,
        t0: float | None = None,
    ) -> None:
        """Place a scanner in the world; `clock` and `t0` make runs reproducible in tests."""
        self.world = world
        self.venue = venue
        self.x, self.y = x, y
        self.n, self.sigma_db, self.floor_dbm = n, sigma_db, floor_dbm
        self.clock = clock
        start = clock() if t0 is None else t0
        self._radios = [_Radio(i, seed, start, interval_s) for i in range(len(world.emitters))]
        self._closed = threading.Event()

    @property
    def exhausted(self) -> bool:
        """A simulation never runs dry."""
        return False

    def _heard(self, radio: _Radio, ts: float) -> Advert | None:
        shadow = radio.rng.gauss(0.0, self.sigma_db)  # drawn always, to keep the stream aligned
        where = self.world.position(radio.index, ts)
        if where is None or where[0] != self.venue:
            return None
        d = math.hypot(where[1] - self.x, where[2] - self.y)
        tx = self.world.emitters[radio.index].tx_power_1m
        rssi = round(path_loss_rssi(tx, d, self.n) + shadow)
        if rssi < self.floor_dbm:
            return None
        return Advert(ts, rssi, radio.address, self.world.advert(radio.index, ts))

    def adverts_until(self, now: float) -> list[Advert]:
        """Every advert heard up to unix time `now` since the last call, in time order."""
        out = []
        for radio in self._radios:
            while radio.next <= now:
                ts = radio.next
                radio.next += radio.interval + radio.rng.uniform(0, ADV_DELAY_MAX_S)
                advert = self._heard(radio, ts)
                if advert is not None:
                    out.append(advert)
        out.sort(key=lambda a: a.ts)
        return out

    def read(self, timeout: float) -> list[Advert]:
        """Wait (at most `timeout`) for the next advertising event, then return what was heard."""
        if not self._radios:
            self._closed.wait(timeout)
            return []
        wait = min(r.next for r in self._radios) - self.clock()
        if wait > 0:
            self._closed.wait(min(wait, timeout))
        now = self.clock()
        for radio in self._radios:
            if radio.next < now - MAX_CATCH_UP_S:
                missed = math.ceil((now - MAX_CATCH_UP_S - radio.next) / radio.interval)
                radio.next += missed * radio.interval
        return self.adverts_until(now)

    def close(self) -> None:
        """Wake any waiting reader."""
        self._closed.set()
