"""Presence state machine per (subscriber, venue): enter after a stable zone, exit after absence.

Pure functions over a small dict state, so the same logic serves live ingest and replays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ZoneTiming:
    """How long a zone must be stable to enter, and absent to exit."""

    enter_stable_s: float
    exit_absent_s: float


@dataclass(frozen=True)
class PresenceEvent:
    """An enter or exit of a subscriber in a zone, at a time, with a reason."""

    kind: str  # enter | exit
    zone: str
    at: float
    since: float
    reason: str = ""


# Why a presence ended when the zone's scanners went silent (see `darken`).
SCANNER_SILENT = "scanner_silent"
NO_ZONES: frozenset[str] = frozenset()
# A hold outlasts any copy of the dark zones read before it began: ingest's are up to a second
# old, published once a second; released on an older one, the neighbours' readings would move
# the subscriber next door after all.
HOLD_MIN_S = 3.0
# How long an exit for absence may wait for the scanners that heard the visitor to report what
# they heard since (`sweep`'s heard_through): as long as a scanner takes to be judged silent
# (scanner_health.SILENT_AFTER_S), so that one whose reports are stuck (its batches refused,
# its heartbeats not) cannot keep a visitor present for ever.
HEARD_WAIT_MAX_S = 35.0


def darken(
    state: dict[str, Any], at: float, dark: frozenset[str]
) -> tuple[dict[str, Any], list[PresenceEvent]]:
    """End a presence in a zone whose scanners all went silent, and hold the subscriber out of
    every zone until they are back.

    Without its own scanners a zone's occupant is placed by the neighbours' faint readings
    alone: kept there forever by them, or moved into the next zone, neither of which is true.
    The presence ends with a clear reason instead, and the subscriber enters no zone until the
    scanners are back. The dark zone itself is entered by nobody; a newcomer sitting in it is
    heard by the neighbours' scanners only, and placed where they say."""
    st = dict(state)
    held = st.get("held")
    if held is not None and held not in dark and at - st.get("held_at", at) >= HOLD_MIN_S:
        # The scanners are back: estimates mean something again.
        st.pop("held")
        st.pop("held_at", None)
    current = st.get("zone")
    if current is None or current not in dark:
        return st, []
    event = PresenceEvent("exit", current, at, st["since"], SCANNER_SILENT)
    st["zone"], st["held"], st["held_at"] = None, current, at
    for key in ("since", "cand", "cand_since"):
        st.pop(key, None)
    return st, [event]


def step(
    state: dict[str, Any],
    zone: str | None,
    ts: float,
    timings: dict[str, ZoneTiming],
    dark: frozenset[str] = NO_ZONES,
) -> tuple[dict[str, Any], list[PresenceEvent]]:
    """Fold one zone estimate at time ts into the state; returns the new state and events.

    `dark`: the venue's zones whose scanners are all silent (see `darken`)."""
    st = dict(state)
    events: list[PresenceEvent] = []
    if ts < st.get("last", float("-inf")):
        return st, events  # late reading: the estimate already moved past it
    st["last"] = ts
    if dark or "held" in st:
        st, events = darken(st, ts, dark)
        if "held" in st or zone in dark:
            zone = None  # no zone is entered on the word of the neighbours of a silent one
    current = st.get("zone")
    if zone == current:
        st.pop("cand", None)
        st.pop("cand_since", None)
        return st, events
    if st.get("cand", "") != zone or "cand_since" not in st:
        st["cand"], st["cand_since"] = zone, ts
    needed = (
        timings[zone].enter_stable_s
        if zone is not None and zone in timings
        else (timings[current].exit_absent_s if current in timings else 0.0)
    )
    if ts - st["cand_since"] >= needed:
        if current is not None:
            events.append(PresenceEvent("exit", current, ts, st["since"], "moved"))
        if zone is not None:
            events.append(PresenceEvent("enter", zone, ts, ts))
        st["zone"], st["since"] = zone, ts
        st.pop("cand", None)
        st.pop("cand_since", None)
    return st, events


def sweep(
    state: dict[str, Any],
    now: float,
    timings: dict[str, ZoneTiming],
    dark: frozenset[str] = NO_ZONES,
    heard_through: float | None = None,
) -> tuple[dict[str, Any] | None, list[PresenceEvent]]:
    """Exit a subscriber not heard for the zone's absence time, or present in a zone whose
    scanners went silent; None means forget the state.

    `heard_through`: up to when the scanners that heard the subscriber have reported (see
    scanner_health.heard_through); absence is judged at that time if it is earlier than `now`,
    waiting at most HEARD_WAIT_MAX_S, so that readings held up in a scanner's queue by a cut
    uplink arrive before the subscriber is taken to have left."""
    events: list[PresenceEvent] = []
    if dark or "held" in state:
        state, events = darken(state, now, dark)
    current = state.get("zone")
    last = state.get("last", now)
    limit = timings[current].exit_absent_s if current in timings else 0.0
    judged = now
    if heard_through is not None:
        judged = max(min(now, heard_through), now - HEARD_WAIT_MAX_S)
    if current is None:
        # Heard but never entered: forget quickly so no ghost state lingers.
        return (None, events) if judged - last >= max(limit, 5.0) else (state, events)
    if judged - last >= limit:
        # The presence ended when they were last heard, not when the sweep noticed.
        return None, [PresenceEvent("exit", current, last, state["since"], "absent")]
    return state, events
