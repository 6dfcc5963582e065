"""Scanner health as staff see it: how long since the last heartbeat, and whether to worry."""

from __future__ import annotations

from typing import Any

from store_server.scanner_health import RESTORED

SILENT_AFTER_S = 60.0
SHOWN = ("queue_depth", "frames_heard", "frames_dropped", "adapter")


def scanner_status(
    heartbeat: dict[str, str], now: float, silent_after_s: float = SILENT_AFTER_S
) -> dict[str, Any]:
    """Age of the last heartbeat (None if never), the silent flag and the shown counters."""
    try:
        age: int | None = max(0, round(now - float(heartbeat["at"])))
    except (KeyError, ValueError):
        age = None
    if heartbeat.get(RESTORED):
        age = None  # a stand-in the jobs wrote after Redis lost the reports: not heard since
    status: dict[str, Any] = {"age_s": age, "silent": age is None or age > silent_after_s}
    for field in SHOWN:
        status[field] = heartbeat.get(field, "—")
    # An adapter reported down is as bad as silence: the scanner hears nothing.
    status["adapter_down"] = heartbeat.get("adapter") == "down"
    return status
