"""Robust per-(emitter, scanner) RSSI filter with a compact, JSON-friendly state."""

from __future__ import annotations

import math

# Typical BLE RSSI scatter at a fixed spot is 4-6 dB; a jump beyond CLIP_DB is mostly multipath.
CLIP_DB = 8.0
TAU_S = 1.0


def update(
    entry: list[float] | None, ts: float, rssi: float, tau: float = TAU_S, clip: float = CLIP_DB
) -> list[float]:
    """Fold one reading into [value, last_ts] with an outlier-clipped exponential average."""
    if entry is None:
        return [float(rssi), float(ts)]
    value, last = float(entry[0]), float(entry[1])
    dt = max(ts - last, 0.0)
    # After a long silence the old value says little: let the new reading through unclipped.
    if dt > 5.0 * max(tau, 1e-6):
        return [float(rssi), max(float(ts), last)]
    innovation = max(-clip, min(clip, rssi - value))
    alpha = 1.0 - math.exp(-(dt + 0.25) / max(tau, 1e-6))
    return [value + alpha * innovation, max(float(ts), last)]


def clipped(entry: list[float] | None, ts: float, rssi: float, clip: float = CLIP_DB) -> float:
    """The reading limited to clip dB around the recent filtered value (a multipath guard)."""
    if entry is None or ts - float(entry[1]) > 5.0:
        return float(rssi)
    return float(entry[0]) + max(-clip, min(clip, rssi - float(entry[0])))


def fresh(entries: dict[str, list[float]], now: float, max_age: float) -> dict[str, float]:
    """Filtered values of the scanners heard within max_age seconds of now."""
    return {k: float(v[0]) for k, v in entries.items() if now - float(v[1]) <= max_age}
