"""Device namespace on Socket.IO: token auth on connect, room per device, replay, acks and token
rotation over the live connection."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from flask import Flask, request
from flask_socketio import ConnectionRefusedError, SocketIO, join_room
from sqlalchemy import select

from store_server import live_sockets, outbox, services
from store_server.batching import GroupCommit
from store_server.crypto import token_hash
from store_server.db import sessions
from store_server.models import Device, Venue
from store_server.push import NAMESPACE, device_room, socket_event
from store_server.redis_store import get_keys, get_redis

log = logging.getLogger(__name__)


def refused(reason: str) -> ConnectionRefusedError:
    """A refusal whose message is the reason (what browsers show) and whose data carries it."""
    return ConnectionRefusedError(reason, {"reason": reason})


def authenticate_device(app: Flask, auth: Any) -> Device:
    """The paired, unrevoked device owning this token, of an active merchant; else refuse."""
    token = auth.get("token") if isinstance(auth, dict) else None
    # Tokens are URL-safe base64 (crypto.new_token): anything else, such as a lone surrogate
    # that cannot even be encoded to be hashed, is malformed rather than an unknown token.
    if not isinstance(token, str) or not 20 <= len(token) <= 200 or not token.isascii():
        raise refused("missing or malformed device token")
    with sessions(app)() as db:
        device = db.scalar(select(Device).where(Device.token_hash == token_hash(token)))
        if device is None or device.revoked_at is not None:
            raise refused("unknown or revoked device token")
        venue = db.get(Venue, device.venue_id)
        if venue is None or venue.merchant.status != "active":
            raise refused("merchant suspended")
        db.expunge(device)
        return device


def rotate_token(app: Flask, device_id: int) -> str | None:
    """A new token for a device that is still allowed in; the old one stops working at once."""
    with sessions(app)() as db:
        device = db.get(Device, device_id)
        venue = db.get(Venue, device.venue_id) if device else None
        # Checked again: the device may have been revoked since it connected, and rotating
        # would otherwise quietly un-revoke it.
        if device is None or device.revoked_at is not None or venue is None:
            return None
        if venue.merchant.status != "active":
            return None
        token = services.issue_device_token(device)
        db.commit()
        return token


def drop_sockets(app: Flask, device_ids: set[int]) -> int:
    """Disconnect these devices' live sockets now, on whichever worker holds them
    (live_sockets.close); returns how many sockets were told."""
    if not device_ids:
        return 0
    keys = get_keys(app)
    local = app.extensions.get("cm_connected_devices", {})
    mine = [sid for sid, d in list(local.items()) if d in device_ids]
    return live_sockets.close(
        app, [keys.device_sockets(d) for d in sorted(device_ids)], mine, NAMESPACE
    )


def online(app: Flask, device_ids: list[int]) -> set[int]:
    """Which of these devices hold a live socket on any running worker; with Redis unreachable,
    those connected to this worker."""
    local = set(app.extensions.get("cm_connected_devices", {}).values())
    keys = get_keys(app)
    try:
        flags = live_sockets.online(app, [keys.device_sockets(d) for d in device_ids])
    except redis.RedisError:
        return local & set(device_ids)
    return {d for d, up in zip(device_ids, flags, strict=True) if up}


def register(app: Flask, socketio: SocketIO) -> None:
    """Attach the device namespace's handlers to this app's Socket.IO server."""
    connected: dict[str, int] = {}
    app.extensions["cm_connected_devices"] = connected
    # Every device acks every event: acks arriving together share one Redis round trip.
    acks: GroupCommit[tuple[int, str], bool] = GroupCommit(
        lambda items: outbox.ack_many(get_redis(app), get_keys(app), items)
    )

    @socketio.on("connect", namespace=NAMESPACE)
    def _connect(auth: Any = None) -> None:
        device = authenticate_device(app, auth)
        connected[request.sid] = device.id
        join_room(device_room(device.id))
        # Known to every worker, so a revoke served by another one can still disconnect it.
        live_sockets.remember(app, get_keys(app).device_sockets(device.id), request.sid)
        socketio.emit("hello", {"device": device.name}, to=request.sid, namespace=NAMESPACE)
        # Revokes first, then what is still pending, so nothing revoked plays even briefly.
        for event in outbox.pending(get_redis(app), get_keys(app), device.id, time.time()):
            socketio.emit(socket_event(event), event, to=request.sid, namespace=NAMESPACE)

    @socketio.on("disconnect", namespace=NAMESPACE)
    def _disconnect(*_args: Any) -> None:
        device_id = connected.pop(request.sid, None)
        if device_id is not None:
            live_sockets.forget(
                get_redis(app), get_keys(app).device_sockets(device_id), request.sid
            )

    # Registered on the Socket.IO server itself, not through Flask-SocketIO: an ack needs no
    # request or session context, and building one per ack was a large share of a loaded
    # server's time (every device acks every event).
    @socketio.server.on("ack", namespace=NAMESPACE)
    def _ack(sid: str, data: Any = None) -> dict[str, Any]:
        device_id = connected.get(sid)
        event_id = data.get("event_id") if isinstance(data, dict) else None
        if device_id is None:
            return {"ok": False, "error": "not authenticated"}
        if not outbox.is_stream_id(event_id):
            return {"ok": False, "error": "event_id must be a stream id"}
        try:
            acks.submit((device_id, event_id))
        except redis.RedisError:
            # Unacknowledged events stay in the outbox and replay once: never lost.
            return {"ok": False, "error": "temporarily unavailable, ack again later"}
        return {"ok": True}

    @socketio.on("rotate_token", namespace=NAMESPACE)
    def _rotate(*_args: Any) -> dict[str, Any]:
        # Over the authenticated socket, so the device keeps playing while it changes keys;
        # it must store the new token before its next reconnect.
        device_id = connected.get(request.sid)
        token = rotate_token(app, device_id) if device_id is not None else None
        if token is None:
            return {"ok": False, "error": "device not allowed to rotate"}
        log.info("device token rotated", extra={"device_id": device_id})
        return {"ok": True, "token": token}
