"""Turns presence events into device events: payload by consent scope, outbox, emit, audit, visit.

Called after ingest or the sweeper has committed presence state; everything here is per event,
and events are rare next to sightings.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from sqlalchemy import select

from store_server import outbox
from store_server.crypto import pseudonym
from store_server.db import sessions
from store_server.models import AuditEntry, Subscriber, Visit
from store_server.payloads import push_payload, revoke_payload
from store_server.presence import PresenceEvent
from store_server.redis_store import get_keys, get_redis
from store_server.topology import VenueInfo

log = logging.getLogger(__name__)
NAMESPACE = "/device"
PORTAL = "/portal"


@dataclass(frozen=True)
class Occurrence:
    """A presence event of one subscriber at one venue, under the consent that allowed it."""

    subscriber_id: int
    venue: VenueInfo
    consent: dict[str, Any]
    event: PresenceEvent


def device_room(device_id: int) -> str:
    """The Socket.IO room a device joins on connect."""
    return f"device:{device_id}"


def venue_room(venue_id: int) -> str:
    """The Socket.IO room (portal namespace) of staff watching a venue live."""
    return f"venue:{venue_id}"


def deliver(app: Flask, occurrences: list[Occurrence]) -> None:
    """Write outboxes, emit to connected devices, and log every disclosure and visit."""
    if not occurrences:
        return
    r, keys = get_redis(app), get_keys(app)
    now = time.time()
    ttl = app.config["PUSH_TTL_S"]
    with sessions(app)() as db:
        ids = {o.subscriber_id for o in occurrences}
        subs = {s.id: s for s in db.scalars(select(Subscriber).where(Subscriber.id.in_(ids)))}
        items: list[tuple[int, dict[str, Any]]] = []
        meta: list[tuple[Occurrence, str]] = []
        for o in occurrences:
            sub = subs.get(o.subscriber_id)
            if sub is None:
                continue  # erased meanwhile: nothing may be disclosed
            pseudo = pseudonym(o.venue.merchant_key, sub.public_id)
            devices = o.venue.devices_by_zone.get(o.event.zone, [])
            if o.event.kind == "enter":
                body = push_payload(
                    o.consent["share"], pseudo, sub.playlists, sub.taste, o.event.zone, now + ttl
                )
            else:
                outbox.drop_for(r, keys, devices, pseudo)
                body = revoke_payload(pseudo, o.event.zone, o.event.reason)
            for d in devices:
                items.append((d, body))
                meta.append((o, pseudo))
        sio = app.extensions["socketio"]
        event_ids = outbox.append_many(r, keys, items, app.config["OUTBOX_MAXLEN"], ttl)
        for o in occurrences:
            if o.subscriber_id in subs:
                portal_event = {
                    "venue_id": o.venue.id,
                    "kind": o.event.kind,
                    "zone": o.event.zone,
                    "subscriber": pseudonym(o.venue.merchant_key, subs[o.subscriber_id].public_id),
                    "at": o.event.at,
                    "reason": o.event.reason,
                }
                sio.emit("presence", portal_event, to=venue_room(o.venue.id), namespace=PORTAL)
        for (device_id, body), event_id in zip(items, event_ids, strict=True):
            sio.emit(
                "event",
                {**body, "event_id": event_id},
                to=device_room(device_id),
                namespace=NAMESPACE,
            )
        for (device_id, body), (o, pseudo), event_id in zip(items, meta, event_ids, strict=True):
            db.add(
                AuditEntry(
                    subscriber_id=o.subscriber_id,
                    action=body["type"],
                    pseudonym=pseudo,
                    merchant_id=o.venue.merchant_id,
                    device_id=device_id,
                    scope=o.consent["share"] if body["type"] == "push" else None,
                    receipt_id=o.consent["receipt"],
                    event_id=event_id,
                    reason=body.get("reason"),
                )
            )
        for o in occurrences:
            if o.event.kind == "exit" and o.consent.get("stats") and o.subscriber_id in subs:
                db.add(
                    Visit(
                        subscriber_id=o.subscriber_id,
                        merchant_id=o.venue.merchant_id,
                        venue_id=o.venue.id,
                        zone=o.event.zone,
                        started_at=datetime.fromtimestamp(o.event.since, UTC),
                        ended_at=datetime.fromtimestamp(o.event.at, UTC),
                        dwell_s=max(0.0, o.event.at - o.event.since),
                    )
                )
        db.commit()
    log.info("delivered", extra={"events": len(occurrences), "device_events": len(items)})
