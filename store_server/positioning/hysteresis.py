"""Zone hysteresis: leave the current zone only for a clearly and steadily better one."""

from __future__ import annotations

NO_ZONE = ""


def decide(
    current: str | None,
    pending: list | None,
    probs: dict[str, float],
    dt: float,
    p_enter: float = 0.7,
    margin: float = 0.15,
    dwell_s: float = 0.0,
) -> tuple[str | None, list | None]:
    """Next zone (NO_ZONE for none) from zone probabilities; pending = [candidate, seconds held]."""
    if not probs:
        return current, None
    best = max(probs, key=lambda z: probs[z])
    if current is None:
        return best, None
    if best == current:
        return current, None
    lead = probs[best] - probs.get(current, 0.0)
    if probs[best] < p_enter or lead < margin:
        return current, None
    held = pending[1] + dt if pending and pending[0] == best else dt
    # A very confident change is let through at once: lag costs accuracy as much as flaps do.
    if held >= dwell_s or probs[best] >= 0.97:
        return best, None
    return current, [best, held]
