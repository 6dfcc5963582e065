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


def step(
    state: dict[str, Any], zone: str | None, ts: float, timings: dict[str, ZoneTiming]
) -> tuple[dict[str, Any], list[PresenceEvent]]:
    """Fold one zone estimate at time ts into the state; returns the new state and events."""
    st = dict(state)
    events: list[PresenceEvent] = []
    if ts < st.get("last", float("-inf")):
        return st, events  # late reading: the estimate already moved past it
    st["last"] = ts
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
    state: dict[str, Any], now: float, timings: dict[str, ZoneTiming]
) -> tuple[dict[str, Any] | None, list[PresenceEvent]]:
    """Exit a subscriber not heard for the zone's absence time; None means forget the state."""
    current = state.get("zone")
    last = state.get("last", now)
    limit = timings[current].exit_absent_s if current in timings else 0.0
    if current is None:
        # Heard but never entered: forget quickly so no ghost state lingers.
        return (None, []) if now - last >= max(limit, 5.0) else (state, [])
    if now - last >= limit:
        # The presence ended when they were last heard, not when the sweep noticed.
        return None, [PresenceEvent("exit", current, last, state["since"], "absent")]
    return state, []
