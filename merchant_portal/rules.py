"""The merchant's playback rules as edited in the portal: explicit tracks, a volume cap, vetoes.

Stored in `Merchant.rules`, read by the store server's blend on every enter and exit; this module
only validates what staff typed, with messages in the catalogue.
"""

from __future__ import annotations

import re
from typing import Any

# ASCII: a catalogue id, never "١٢٣" (\w alone takes any script's letters and digits).
TRACK_ID = re.compile(r"^[\w:.\-]{1,64}\Z", re.ASCII)
VOLUME = re.compile(r"[0-9]{1,3}")
MAX_VETOES = 500


class RulesError(ValueError):
    """A form problem, as a catalogue key and its values."""

    def __init__(self, key: str, **values: object) -> None:
        super().__init__(key)
        self.key, self.values = key, values


def parse_form(form: Any) -> dict[str, Any]:
    """Rules from the form fields `explicit` (checkbox), `volume_max` and `veto` (ids)."""
    raw_volume = (form.get("volume_max") or "").strip()
    volume: int | None = None
    if raw_volume:
        if not VOLUME.fullmatch(raw_volume) or not 0 <= int(raw_volume) <= 100:
            raise RulesError("rules_bad_volume")
        volume = int(raw_volume)
    vetoes = [v for v in re.split(r"[\s,]+", form.get("veto") or "") if v]
    for v in vetoes:
        if not TRACK_ID.match(v):
            raise RulesError("rules_bad_track", track=v[:80])
    if len(vetoes) > MAX_VETOES:
        raise RulesError("rules_too_many", n=MAX_VETOES)
    return {
        "explicit": form.get("explicit") == "on",
        "volume_max": volume,
        "veto": sorted(set(vetoes)),
    }


def merged(current: dict[str, Any] | None, update: dict[str, Any]) -> dict[str, Any]:
    """The new rules, keeping any fields other parts of the system store there."""
    return {**(current or {}), **update}
