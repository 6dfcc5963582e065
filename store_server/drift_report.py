"""Radio-map drift per scanner at a venue, as its live trackers learnt it (issue 4's report).

Each consented emitter's tracking state holds the per-scanner offsets it learnt (live minus
survey, dB); the venue's figure is their median over up to SAMPLE of them, with how many
emitters it rests on. Read on demand from the states ingest keeps, so the hot path pays nothing
for it. The jobs also publish it every PUBLISH_S (`publish`), and new tracks start from the
published figure (`published`, read by the topology with the venue).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask

from store_server.keys import Keys
from store_server.positioning import drift
from store_server.redis_store import get_keys, get_redis

# Beyond this the survey no longer describes the room (a moved scanner, new furniture, a
# different dongle): the portal suggests surveying again.
RESURVEY_DB = 6.0
# A median over fewer emitters is shown but not acted on: one loud phone is not a drift.
MIN_EMITTERS = 3
# Trackers read per venue: a median over 200 is as good as one over all of them, and a portal
# page or a metrics scrape stays bounded however busy the venue is.
SAMPLE = 200
# How often the jobs publish each venue's drift, and how long a published figure stays: a venue
# whose trackers all left keeps it a while, then new tracks start from the survey again.
PUBLISH_S = 30.0
PUBLISHED_TTL_S = drift.SEED_MEMORY_S
CHUNK = 50


def from_states(raws: list[Any], version: str | None = None) -> dict[str, tuple[float, int]]:
    """Per scanner: median learnt offset (dB) and the number of emitters behind it; with a
    version, only from trackers that learnt against that radio map (topology.model_version)."""
    learnt = []
    for raw in raws:
        try:
            tracker = json.loads(raw).get("t") or {}
        except (TypeError, ValueError, AttributeError):
            continue  # a state being rewritten in another encoding: the next read has it
        if not isinstance(tracker, dict) or (version is not None and tracker.get("mv") != version):
            continue
        offsets = drift.learnt_offsets(tracker)
        if offsets:
            learnt.append(offsets)
    return drift.per_scanner(learnt)


def sample(client: Any, keys: Keys, venue_id: int) -> Any:
    """Read (or queue, on a pipeline) up to SAMPLE of a venue's tracking states, at random."""
    return client.hrandfield(keys.tracks(venue_id), SAMPLE, withvalues=True)


def from_sample(
    fields_and_states: list[Any], version: str | None = None
) -> dict[str, tuple[float, int]]:
    """from_states on what `sample` read (subscriber ids and states, alternating)."""
    return from_states(fields_and_states[1::2], version)


def venue_drift(app: Flask, venue_id: int) -> dict[str, tuple[float, int]]:
    """The drift per scanner name at one venue, from the tracking states held now."""
    return from_sample(sample(get_redis(app), get_keys(app), venue_id))


def needs_resurvey(drift_db: float, emitters: int) -> bool:
    """Whether a scanner's drift is large and well-founded enough to ask for a new survey."""
    return emitters >= MIN_EMITTERS and abs(drift_db) >= RESURVEY_DB


def tracked(client: Any, keys: Keys, venue_ids: list[int]) -> list[int]:
    """The venues holding any tracking state now, in one round trip: only they have a drift
    to publish, so the jobs load the radio maps of those alone."""
    pipe = client.pipeline(transaction=False)
    for venue_id in venue_ids:
        pipe.exists(keys.tracks(venue_id))
    return [v for v, n in zip(venue_ids, pipe.execute(), strict=True) if n]


def publish(client: Any, keys: Keys, versions: dict[int, str]) -> dict[int, dict]:
    """Read each venue's drift, learnt against its radio map now (venue id -> model version),
    and publish it for new tracks: two round trips per CHUNK venues (a chunk's sampled states,
    up to ~200 KB a venue, are all a round holds at once)."""
    venue_ids = sorted(versions)
    figures: dict[int, dict] = {}
    for i in range(0, len(venue_ids), CHUNK):
        chunk = venue_ids[i : i + CHUNK]
        reader = client.pipeline(transaction=False)
        for venue_id in chunk:
            sample(reader, keys, venue_id)
        got = {
            v: from_sample(read or [], versions[v])
            for v, read in zip(chunk, reader.execute(), strict=True)
        }
        writer = client.pipeline(transaction=False)
        for venue_id, figure in got.items():
            if figure:
                doc = {
                    "mv": versions[venue_id],
                    "scanners": {name: [db, n] for name, (db, n) in figure.items()},
                }
                writer.set(keys.venue_drift(venue_id), json.dumps(doc), ex=PUBLISHED_TTL_S)
        writer.execute()
        figures |= got
    return figures


def published(client: Any, keys: Keys, venue_id: int, version: str) -> dict[str, tuple[float, int]]:
    """The venue's drift as last published, if learnt against this radio map ({} if none, of
    another map, or unreadable)."""
    raw = client.get(keys.venue_drift(venue_id))
    try:
        doc = json.loads(raw) if raw else {}
        if doc.get("mv") != version:
            return {}
        return {str(k): (float(v[0]), int(v[1])) for k, v in doc["scanners"].items()}
    except (TypeError, ValueError, AttributeError, IndexError, KeyError):
        return {}
