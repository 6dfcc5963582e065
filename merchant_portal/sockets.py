"""The portal's Socket.IO namespace: staff watch a venue live, authenticated by their session.

The store server emits "presence" to room venue:<id> in /portal; a staff member joins only rooms
of venues of their own merchant, checked at connect from the Flask session cookie.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, session
from flask_socketio import ConnectionRefusedError, SocketIO, join_room
from sqlalchemy import select

from merchant_portal.auth import MERCHANT_ROLES
from store_server.db import sessions
from store_server.models import StaffUser, Venue
from store_server.push import PORTAL, venue_room


def staff_venue(app: Flask, staff_id: Any, venue_id: Any) -> int | None:
    """The venue id if this staff member's merchant owns it, else None."""
    if not isinstance(staff_id, int) or isinstance(venue_id, bool) or not isinstance(venue_id, int):
        return None
    with sessions(app)() as db:
        staff = db.get(StaffUser, staff_id)
        if staff is None or staff.merchant_id is None or staff.role not in MERCHANT_ROLES:
            return None
        return db.scalar(
            select(Venue.id).where(Venue.id == venue_id, Venue.merchant_id == staff.merchant_id)
        )


def register(app: Flask, socketio: SocketIO) -> None:
    """Attach the /portal namespace's handlers to this app's Socket.IO server."""

    @socketio.on("connect", namespace=PORTAL)
    def _connect(auth: Any = None) -> None:
        venue_id = auth.get("venue") if isinstance(auth, dict) else None
        # Unknown, foreign and malformed venues are refused alike: nothing is confirmed.
        allowed = staff_venue(app, session.get("staff_id"), venue_id)
        if allowed is None:
            raise ConnectionRefusedError({"reason": "not signed in or not your venue"})
        join_room(venue_room(allowed))
