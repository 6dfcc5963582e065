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


def decide_spatial(
    current: str | None,
    pending: list | None,
    distances: dict[str, float],
    mass: dict[str, float],
    dt: float,
    switch_m: float = 0.5,
    dwell_s: float = 3.0,
    tolerance_m: float = 0.5,
    min_mass: float = 0.3,
    p_enter: float = 0.7,
) -> tuple[str, list | None]:
    """Zone of the point estimate, kept until the point is switch_m clear of the current zone,
    the new zone holds p_enter of the posterior, or the point has stayed dwell_s seconds in it
    (someone sitting against the wall).

    distances are metres from the estimate to each zone (0 inside); a zone holding less than
    min_mass of the posterior cannot be entered (a ring around a lone scanner has its centre
    in the cabin, its mass outside)."""
    candidate = NO_ZONE
    if distances:
        best = min(distances, key=lambda z: distances[z])
        # A first estimate has a broad posterior: its centre's zone needs less mass to count.
        need = min_mass if current is not None else 0.5 * min_mass
        if distances[best] <= tolerance_m and mass.get(best, 0.0) >= need:
            candidate = best
    if current is None:
        if candidate == NO_ZONE and mass:
            candidate = max(mass, key=lambda z: mass[z])
        return candidate, None
    if candidate == current:
        return candidate, None
    if (
        current in distances
        and distances[current] <= switch_m
        and mass.get(current, 0.0) > 0
        and mass.get(candidate, 0.0) < p_enter
    ):
        held = pending[1] + dt if pending and pending[0] == candidate else dt
        if held < dwell_s:
            return current, [candidate, held]
    return candidate, None
