"""Adapter to the streaming service's profiles: playlists and a genre taste vector per account.

Production implements `StreamingProfiles` against the streaming service's API; `FixtureStreaming`
answers from built-in fixtures (and a deterministic made-up profile for other accounts), so that
development and tests need no outside service.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from flask import Flask, current_app
from sqlalchemy import exists, or_, select

from store_server.db import sessions
from store_server.models import Consent, Subscriber, utcnow

GENRES = ("pop", "rock", "jazz", "electro", "hip-hop", "classical", "folk", "blues", "soul")
MOODS = ("bright", "mellow", "energetic", "calm")


@dataclass(frozen=True)
class Profile:
    """What the streaming service says about an account's taste."""

    playlists: list[dict[str, Any]] = field(default_factory=list)
    taste: dict[str, Any] = field(default_factory=dict)


class StreamingProfiles(Protocol):
    """Read access to streaming profiles."""

    def profile(self, directory_id: str) -> Profile | None:
        """The account's current profile, or None if the service does not know it."""
        ...


FIXTURES: dict[str, Profile] = {
    "dir:camille": Profile(
        playlists=[
            {
                "id": "pl:camille:apero",
                "title": "Apéro sur le canal",
                "tracks": [
                    {
                        "id": "trk:2001",
                        "title": "Quai de Jemmapes",
                        "artist": "Les Écluses",
                        "explicit": False,
                    },
                    {"id": "trk:2002", "title": "Neon Bloom", "artist": "Vela", "explicit": False},
                ],
            }
        ],
        taste={"genres": {"electro": 0.5, "soul": 0.3, "jazz": 0.2}, "mood": "bright"},
    ),
}


def made_up_profile(directory_id: str) -> Profile:
    """A deterministic profile for accounts without a fixture (same id, same profile)."""
    h = hashlib.sha256(directory_id.encode()).digest()
    picks = sorted({GENRES[b % len(GENRES)] for b in h[:3]})
    weight = round(1.0 / len(picks), 3)
    slug = hashlib.sha256(b"pl" + h).hexdigest()[:8]
    playlist = {
        "id": f"pl:{slug}",
        "title": f"Mix {picks[0]}",
        "tracks": [
            {"id": f"trk:{slug}{i}", "title": f"Track {i}", "artist": "Various", "explicit": False}
            for i in range(1, 4)
        ],
    }
    return Profile([playlist], {"genres": dict.fromkeys(picks, weight), "mood": MOODS[h[3] % 4]})


class FixtureStreaming:
    """Built-in profiles for development and tests."""

    def __init__(self, fixtures: dict[str, Profile] | None = None) -> None:
        self._fixtures = dict(FIXTURES if fixtures is None else fixtures)

    def set(self, directory_id: str, profile: Profile) -> None:
        """Replace an account's profile (the service changed it)."""
        self._fixtures[directory_id] = profile

    def profile(self, directory_id: str) -> Profile | None:
        """The fixture profile, or a made-up one for directory accounts."""
        if directory_id in self._fixtures:
            return self._fixtures[directory_id]
        return made_up_profile(directory_id) if directory_id.startswith("dir:") else None


def get_streaming(app: Flask | None = None) -> StreamingProfiles:
    """The app's streaming adapter (set `app.extensions["cm_streaming"]` to plug another one)."""
    return (app or current_app).extensions["cm_streaming"]


def refresh_profiles(app: Flask) -> int:
    """Copy current streaming profiles onto every subscriber with a live consent (the scheduled
    refresh)."""
    adapter = get_streaming(app)
    n = 0
    now = utcnow()
    # Only they: someone whose consents all ended is kept for the proof of them alone, and the
    # retention round empties the copy of their profile, which this refresh used to fill again
    # within the hour, asking the streaming service about them too.
    live = exists().where(
        Consent.subscriber_id == Subscriber.id,
        Consent.withdrawn_at.is_(None),
        or_(Consent.valid_until.is_(None), Consent.valid_until > now),
    )
    with sessions(app)() as db:
        for sub in db.scalars(select(Subscriber).where(live)):
            p = adapter.profile(sub.directory_id)
            if p is not None and (p.playlists != sub.playlists or p.taste != sub.taste):
                sub.playlists, sub.taste = list(p.playlists), dict(p.taste)
                n += 1
        db.commit()
    return n
