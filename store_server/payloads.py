"""What a merchant device receives: exactly what the consent scope allows, under a pseudonym."""

from __future__ import annotations

from typing import Any

SCOPES = ("playlist", "preferences")


def push_payload(
    scope: str,
    pseudonym: str,
    playlists: list[dict[str, Any]],
    taste: dict[str, Any],
    zone: str,
    expires_at: float,
) -> dict[str, Any]:
    """A push event body; never a name, email or global id, and only the scope's fields."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    body: dict[str, Any] = {
        "type": "push",
        "scope": scope,
        "subscriber": pseudonym,
        "zone": zone,
        "expires_at": expires_at,
    }
    if scope == "playlist":
        pl = playlists[0] if playlists else {"id": None, "title": "", "tracks": []}
        body["playlist"] = {
            "ref": pl.get("id"),
            "title": pl.get("title", ""),
            "tracks": [
                {k: t[k] for k in ("id", "title", "artist", "explicit") if k in t}
                for t in pl.get("tracks", [])
            ],
        }
    else:
        body["preferences"] = {
            "genres": {str(k): float(v) for k, v in taste.get("genres", {}).items()},
            "mood": taste.get("mood"),
        }
    return body


def revoke_payload(pseudonym: str, zone: str, reason: str) -> dict[str, Any]:
    """A revoke event: the device must stop using what it got for this pseudonym."""
    return {"type": "revoke", "subscriber": pseudonym, "zone": zone, "reason": reason}


def queue_payload(
    zone: str, members: list[str], queue: dict[str, Any], computed_at: float, expires_at: float
) -> dict[str, Any]:
    """A zone's blended queue, replacing any earlier one; members are pseudonyms the device has
    already been pushed, so that a revoke can drop it from a pending outbox too."""
    return {
        "type": "queue",
        "zone": zone,
        "members": sorted(members),
        "queue": queue,
        "computed_at": computed_at,
        "expires_at": expires_at,
    }
