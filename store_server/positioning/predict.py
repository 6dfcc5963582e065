"""Replay a recording through the live tracker, once per second, causally."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pandas as pd

from store_server.positioning import drift
from store_server.positioning.live import VenueModel, track


def predict(
    model: VenueModel, recording: pd.DataFrame, start: dict[str, Any] | None = None
) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """Estimates `ts,emitter,x,y,zone` per emitter and second, and the drift seen per emitter.

    The estimate stamped `ts = k` (an integer second) uses only readings with ts <= k, so the
    seconds run from the first reading's ceiling to the last reading's ceiling. Emitters are
    replayed together, second by second, as live ingest sees them: a track starts from `start`
    if given, else, as live, from the drift that the emitters heard before it (within
    drift.SEED_MEMORY_S) learnt (`drift.venue_seed`; nothing until three have learnt one)."""
    tracks = [_Track(str(e), df) for e, df in recording.groupby("emitter", sort=True)]
    if not tracks:
        return pd.DataFrame(columns=["ts", "emitter", "x", "y", "zone"]), {}
    first = min(t.first for t in tracks)
    final = max(t.final for t in tracks)
    pending = sorted(tracks, key=lambda t: t.first, reverse=True)
    active: list[_Track] = []
    done: list[_Track] = []  # ended within drift.SEED_MEMORY_S: still counted for newcomers
    k = first
    while k <= final:
        if not active and pending and pending[-1].first > k:
            k = pending[-1].first  # a silent stretch between emitters: nothing to step
        done = [t for t in done if k - t.final <= drift.SEED_MEMORY_S]
        newcomers = []
        while pending and pending[-1].first == k:
            newcomers.append(pending.pop())
        if newcomers:
            # Seeded from what the others learnt by the second before, once for all who start
            # in this second: the order in which they are taken changes nothing. Only tracks
            # heard within the memory count: one silent longer is not, even if it is heard again
            # later (else the rows up to k would depend on readings after k).
            recent = [t for t in active + done if k - t.latest <= drift.SEED_MEMORY_S]
            begin = start or _seed(recent)
            for t in newcomers:
                t.state = copy.deepcopy(begin)
        active += newcomers
        for t in active:
            t.step(model, k)
        done += [t for t in active if t.final == k]
        active = [t for t in active if t.final > k]
        k += 1
    rows = [row for t in tracks for row in t.rows]
    offsets = {t.emitter: drift.learnt_offsets(t.state or {}) for t in tracks}
    return pd.DataFrame(rows, columns=["ts", "emitter", "x", "y", "zone"]), offsets


class _Track:
    """One emitter of a recording, replayed second by second."""

    def __init__(self, emitter: str, df: pd.DataFrame) -> None:
        ts = df["ts"].to_numpy(float)
        order = np.argsort(ts, kind="stable")
        self.emitter = emitter
        self.ts = ts[order]
        self.scanners = df["scanner"].astype(str).to_numpy()[order]
        self.rssi = df["rssi"].to_numpy(float)[order]
        self.first, self.final = math.ceil(self.ts[0]), math.ceil(self.ts[-1])
        self.state: dict[str, Any] | None = None
        # The second of the newest reading folded so far (what live has heard of it by then).
        self.latest = self.first
        self.last: tuple[float, float, str] | None = None
        self.rows: list[tuple[float, str, float, float, str]] = []
        self._next = 0

    def step(self, model: VenueModel, k: int) -> None:
        """Track second k: the readings with k - 1 < ts <= k (earlier ones are folded already)."""
        stop = int(np.searchsorted(self.ts, k, side="right"))
        batch = list(
            zip(
                self.ts[self._next : stop].tolist(),
                self.scanners[self._next : stop].tolist(),
                self.rssi[self._next : stop].tolist(),
                strict=True,
            )
        )
        if stop > self._next:
            self.latest = math.ceil(self.ts[stop - 1])
        self._next = stop
        self.state, est = track(model, self.state, batch, float(k))
        if est is not None:
            self.last = (round(est.x, 3), round(est.y, 3), est.zone or "")
        if self.last is not None:
            self.rows.append((float(k), self.emitter, *self.last))


def _seed(others: list[_Track]) -> dict[str, Any] | None:
    """A new track's start: the drift the tracks heard lately have learnt."""
    recent = [drift.learnt_offsets(t.state) for t in others if t.state]
    seed = drift.venue_seed(drift.per_scanner(recent))
    return {"o": seed} if seed else None


def drift_report(offsets: dict[str, dict[str, float]]) -> dict[str, float]:
    """Venue-level drift per scanner (dB, live minus survey) from the emitters' adapted offsets."""
    return drift.summarise(list(offsets.values()))
