"""The consent form's answers, validated: plain Python, no Flask, so every rule is tested alone."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

AREAS_FILE = Path(__file__).with_name("areas.json")


@dataclass(frozen=True)
class Choices:
    """What the subscriber chose; nothing has a default."""

    all_merchants: bool
    share: str  # playlist | preferences
    statistics: bool
    home_area: str | None
    today_only: bool


@cache
def known_areas() -> dict[str, str]:
    """INSEE code -> name of the areas a subscriber may give (Paris and the petite couronne)."""
    return {a["code"]: a["name"] for a in json.loads(AREAS_FILE.read_text(encoding="utf-8"))}


def parse_choices(form: Mapping[str, str]) -> tuple[Choices | None, list[str]]:
    """Choices from the form, or None with the message keys of every missing or bad answer."""
    errors: list[str] = []
    presence, share = form.get("presence"), form.get("share")
    stats, duration = form.get("statistics"), form.get("duration")
    area = (form.get("home_area") or "").strip() or None
    if presence not in ("merchant", "all"):
        errors.append("err_presence")
    if share not in ("playlist", "preferences"):
        errors.append("err_share")
    if stats not in ("yes", "no"):
        errors.append("err_stats")
    elif stats == "yes" and area not in known_areas():
        errors.append("err_area")
    if duration not in ("today", "withdrawn"):
        errors.append("err_duration")
    if errors:
        return None, errors
    return (
        Choices(
            all_merchants=presence == "all",
            share=str(share),
            statistics=stats == "yes",
            # Data minimisation: an area sent without the statistics scope is dropped, not kept.
            home_area=area if stats == "yes" else None,
            today_only=duration == "today",
        ),
        [],
    )


def end_of_day(now: datetime, tz: str) -> datetime:
    """The next local midnight after `now` (aware), in the same aware form."""
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    midnight = datetime.combine(local.date() + timedelta(days=1), time(0, 0), tzinfo=zone)
    return midnight.astimezone(now.tzinfo)
