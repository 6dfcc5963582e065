"""One queue for a zone shared by several subscribers: fair, dwell-weighted, within merchant rules.

Pure functions: the push adapter gathers who is present (Redis) and what they allow (consent
scope), and this module decides the order. Merchant rules are the `Merchant.rules` JSON:

    {"explicit": false, "veto": ["trk:1003"], "volume_max": 70}

`explicit` false drops explicit tracks; `veto` drops track ids; `volume_max` (0-100) is passed to
the player, which applies it. Unknown or malformed rule fields are ignored rather than refused, so
a bad edit in the portal never stops music.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_TRACKS = 50
TRACK_FIELDS = ("id", "title", "artist", "explicit")


@dataclass(frozen=True)
class Member:
    """A subscriber present in the zone, with only what their consent scope lets us use."""

    pseudonym: str
    scope: str  # playlist | preferences
    dwell_s: float
    tracks: tuple[Mapping[str, Any], ...] = ()
    genres: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Rules:
    """A merchant's playback rules."""

    explicit: bool = True
    veto: frozenset[str] = frozenset()
    volume_max: int | None = None


def parse_rules(raw: Any) -> Rules:
    """Rules from the merchant's JSON, ignoring fields that are missing or malformed."""
    if not isinstance(raw, Mapping):
        return Rules()
    explicit = raw.get("explicit", True)
    veto = raw.get("veto", [])
    vol = raw.get("volume_max")
    return Rules(
        explicit=explicit if isinstance(explicit, bool) else True,
        veto=frozenset(v for v in veto if isinstance(v, str))
        if isinstance(veto, list)
        else frozenset(),
        volume_max=(
            max(0, min(100, int(vol)))
            if isinstance(vol, int | float) and not isinstance(vol, bool)
            else None
        ),
    )


def weight(dwell_s: float) -> float:
    """A member's share: 1 on arrival, growing with dwell up to 7 after an hour.

    The person who has been in the chair for forty minutes owns the visit more than someone who
    just sat down, but the newcomer must be heard at once, and nobody should drown the others.
    """
    return 1.0 + min(max(dwell_s, 0.0), 3600.0) / 600.0


def blend_genres(members: Sequence[Member]) -> dict[str, float]:
    """Dwell-weighted mean of the preference members' normalised genre vectors."""
    total: dict[str, float] = {}
    weights = 0.0
    for m in members:
        positive = {str(g): float(v) for g, v in m.genres.items() if float(v) > 0}
        norm = sum(positive.values())
        if m.scope != "preferences" or norm <= 0:
            continue
        w = weight(m.dwell_s)
        weights += w
        for g, v in positive.items():
            total[g] = total.get(g, 0.0) + w * v / norm
    if weights == 0:
        return {}
    return {g: round(v / weights, 4) for g, v in sorted(total.items(), key=lambda x: -x[1])}


def _allowed(track: Mapping[str, Any], rules: Rules) -> bool:
    if not isinstance(track.get("id"), str) or track["id"] in rules.veto:
        return False
    return rules.explicit or not track.get("explicit", False)


def interleave(
    lists: Sequence[tuple[str, float, Sequence[Mapping[str, Any]]]], limit: int
) -> list[tuple[str, Mapping[str, Any]]]:
    """Smooth weighted round robin over (owner, weight, items): each owner's share of the first
    n picks stays within one item of its weight share, and no owner waits long for a turn."""
    queues = [[owner, w, list(items), 0.0] for owner, w, items in lists if items]
    out: list[tuple[str, Mapping[str, Any]]] = []
    while queues and len(out) < limit:
        total = sum(q[1] for q in queues)
        for q in queues:
            q[3] += q[1]
        best = max(queues, key=lambda q: (q[3], q[1]))  # ties: the first listed
        best[3] -= total
        out.append((best[0], best[2].pop(0)))
        queues = [q for q in queues if q[2]]
    return out


def blend(members: Sequence[Member], rules: Rules, limit: int = MAX_TRACKS) -> dict[str, Any]:
    """The zone's queue: interleaved allowed tracks (each with its owner), genres, volume cap."""
    genres = blend_genres(members)
    lists = []
    # Sorted so that the same room always gives the same queue, whatever the arrival order.
    for m in sorted(members, key=lambda m: m.pseudonym):
        if m.scope != "playlist":
            continue
        tracks = [t for t in m.tracks if _allowed(t, rules)]
        if genres:
            # Preference members steer: each owner's tracks in the room's genres come first,
            # without taking turns away from anyone.
            tracks.sort(key=lambda t: -genres.get(str(t.get("genre")), 0.0))
        lists.append((m.pseudonym, weight(m.dwell_s), tracks))
    seen: set[str] = set()
    picked = []
    for owner, t in interleave(lists, limit * 2):
        if t["id"] in seen:
            continue  # two members sharing a song hear it once
        seen.add(t["id"])
        picked.append({**{k: t[k] for k in TRACK_FIELDS if k in t}, "by": owner})
    return {"tracks": picked[:limit], "genres": genres, "volume_max": rules.volume_max}
