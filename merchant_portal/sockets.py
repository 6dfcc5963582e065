"""The portal's Socket.IO namespace: staff watch a venue live, authenticated by their session.

The store server emits "presence" to room venue:<id> in /portal; a staff member joins only rooms
of venues of their own merchant, checked at connect from the Flask session cookie.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
from flask import Flask, request, session
from flask_socketio import ConnectionRefusedError, SocketIO, join_room
from sqlalchemy import select

from merchant_portal.blueprint import MERCHANT_ROLES
from store_server import live_sockets
from store_server.db import sessions
from store_server.models import MAX_ID, Merchant, StaffUser, Venue
from store_server.push import PORTAL, venue_room
from store_server.redis_store import get_keys, get_redis
from store_server.sessions import SessionStoreUnavailable, get_registry, staff_principal


def staff_venue(app: Flask, staff_id: Any, venue_id: Any, mark: Any = None) -> int | None:
    """The venue id if this staff member's merchant owns it, else None."""
    if not isinstance(staff_id, int) or isinstance(venue_id, bool) or not isinstance(venue_id, int):
        return None
    if not 1 <= venue_id <= MAX_ID:
        return None  # no such venue, and past MAX_ID PostgreSQL would fail the query instead
    with sessions(app)() as db:
        staff = db.get(StaffUser, staff_id)
        if staff is None or staff.merchant_id is None or staff.role not in MERCHANT_ROLES:
            return None
        if mark != staff.password_hash[-16:]:
            return None  # signed in with a password that has since changed
        return db.scalar(
            select(Venue.id)
            .join(Merchant, Merchant.id == Venue.merchant_id)
            .where(
                Venue.id == venue_id,
                Venue.merchant_id == staff.merchant_id,
                Merchant.status == "active",
            )
        )


def same_origin() -> bool:
    """Whether the handshake comes from a page of this host, or from no foreign page at all."""
    origin = request.headers.get("Origin")
    if origin is None:
        # Browsers send it on every websocket handshake and cross-origin request.
        return True
    try:
        return urlsplit(origin).netloc == request.host
    except ValueError:  # "http://[": names no host of ours
        return False


def disconnect_staff(app: Flask, staff_ids: set[int]) -> int:
    """Close every live connection of these staff members (signed out, a new password, their
    merchant suspended), on whichever worker holds it (live_sockets.close); returns how many."""
    connected: dict[str, int] = app.extensions["cm_portal_connected"]
    mine = [sid for sid, s in list(connected.items()) if s in staff_ids]
    keys = get_keys(app)
    try:
        return live_sockets.close(app, [keys.staff_sockets(i) for i in staff_ids], mine, PORTAL)
    except redis.RedisError:
        # This worker's own; the others' sessions are refused at their reconnect.
        return live_sockets.close(app, [], mine, PORTAL)


def register(app: Flask, socketio: SocketIO) -> None:
    """Attach the /portal namespace's handlers to this app's Socket.IO server."""
    connected: dict[str, int] = {}
    app.extensions["cm_portal_connected"] = connected

    @socketio.on("connect", namespace=PORTAL)
    def _connect(auth: Any = None) -> None:
        # The session cookie is SameSite=Lax, so a page of another origin of the same site
        # (another port, a sibling subdomain) opening a websocket here would send it along; the
        # Socket.IO server checks no Origin (cors_allowed_origins=[] turns that check off).
        if not same_origin():
            raise ConnectionRefusedError("not signed in or not your venue")
        venue_id = auth.get("venue") if isinstance(auth, dict) else None
        staff_id = session.get("staff_id")
        # A signed-out session (or a copy of its cookie) is refused like an anonymous one.
        idle_s = int(app.permanent_session_lifetime.total_seconds())
        try:
            live = isinstance(staff_id, int) and get_registry(app).check(
                session.get("sid"), staff_principal(staff_id), session.get("t"), idle_s
            )
        except SessionStoreUnavailable:
            raise ConnectionRefusedError("sign-in check unavailable, retry later") from None
        if not live:
            raise ConnectionRefusedError("not signed in or not your venue")
        # Unknown, foreign and malformed venues are refused alike: nothing is confirmed.
        allowed = staff_venue(app, staff_id, venue_id, session.get("pw"))
        if allowed is None:
            raise ConnectionRefusedError("not signed in or not your venue")
        # Known to every worker, so a sign-out served by another one can still close it; a
        # connection no other worker could close is not let in.
        sid: str = request.sid  # type: ignore[attr-defined]
        try:
            live_sockets.remember(app, get_keys(app).staff_sockets(staff_id), sid)
        except redis.RedisError:
            raise ConnectionRefusedError("sign-in check unavailable, retry later") from None
        connected[sid] = staff_id
        join_room(venue_room(allowed))

    @socketio.on("disconnect", namespace=PORTAL)
    def _disconnect(*_args: Any) -> None:
        staff_id = connected.pop(request.sid, None)  # type: ignore[attr-defined]
        if staff_id is not None:
            key = get_keys(app).staff_sockets(staff_id)
            live_sockets.forget(get_redis(app), key, request.sid)  # type: ignore[attr-defined]
