"""The programme operator's console: onboard merchants, invite their owners, affiliate or suspend
them, and watch programme-wide health in counts only, never a subscriber."""

from __future__ import annotations

import contextlib
import functools
import re
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException
from werkzeug.security import generate_password_hash

from merchant_portal.auth import current_staff, session_store_down
from merchant_portal.blueprint import bp, t
from merchant_portal.health import scanner_status
from merchant_portal.sockets import disconnect_staff
from merchant_portal.views import drop_device_sockets
from store_server import services
from store_server.db import get_db
from store_server.models import Device, Merchant, Scanner, StaffUser, Venue
from store_server.redis_store import get_keys, get_redis
from store_server.sessions import SessionStoreUnavailable, end_all_sessions, staff_principal
from store_server.topology import get_topology

F = TypeVar("F", bound=Callable[..., Any])
INVITE_SALT = "portal-invite"
INVITE_MAX_AGE_S = 7 * 86400
MIN_PASSWORD = 12
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}\Z")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,}\Z")
KINDS = ("salon", "vtc", "shop", "cinema")


def operator_required(view: F) -> F:
    """Only programme operators."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        staff = current_staff()
        if staff is None:
            return redirect(url_for("portal.login", next=request.full_path.rstrip("?")))
        if staff.role != "operator":
            abort(403)
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=INVITE_SALT)


def invite_link(user: StaffUser) -> str:
    """A week-long link for the owner to choose a password; it dies once one is chosen."""
    # Bound to the current hash, so using it (which changes the hash) spends it.
    token = _serializer().dumps({"u": user.id, "h": user.password_hash[-16:]})
    return url_for("portal.invite", token=token, _external=True)


def _end_all(staff_id: int) -> None:
    """End every sign-in of this staff account; 503 if the session store is unreachable."""
    try:
        end_all_sessions(current_app._get_current_object(), staff_principal(staff_id))  # type: ignore[attr-defined]
    except SessionStoreUnavailable:
        abort(session_store_down())


def _health() -> dict[int, dict[str, int]]:
    db = get_db()
    scanners = list(db.execute(select(Scanner.id, Venue.merchant_id).join(Venue)).all())
    r, keys, now = get_redis(), get_keys(), time.time()
    pipe = r.pipeline(transaction=False)
    for sid, _m in scanners:
        pipe.hgetall(keys.scanner_health(sid))
    out: dict[int, dict[str, int]] = {}
    for (_sid, m), hb in zip(scanners, pipe.execute() if scanners else [], strict=True):
        row = out.setdefault(m, {"scanners": 0, "silent": 0})
        row["scanners"] += 1
        row["silent"] += int(scanner_status(hb, now)["silent"])
    return out


@bp.get("/operator")
@operator_required
def operator() -> ResponseReturnValue:
    """Every merchant with its status and the health of its equipment."""
    db = get_db()
    venues = dict(
        db.execute(select(Venue.merchant_id, func.count()).group_by(Venue.merchant_id)).all()
    )
    devices = dict(
        db.execute(
            select(Venue.merchant_id, func.count())
            .select_from(Device)
            .join(Venue)
            .where(Device.revoked_at.is_(None), Device.token_hash.is_not(None))
            .group_by(Venue.merchant_id)
        ).all()
    )
    health = _health()
    merchants = [
        {
            "m": m,
            "venues": venues.get(m.id, 0),
            "devices": devices.get(m.id, 0),
            **health.get(m.id, {"scanners": 0, "silent": 0}),
        }
        for m in db.scalars(select(Merchant).order_by(Merchant.name))
    ]
    return render_template("operator.html", merchants=merchants, kinds=KINDS)


@bp.post("/operator/merchants")
@operator_required
def onboard() -> ResponseReturnValue:
    """Create a merchant and its owner's account, and show the owner's invitation link once."""
    f = request.form
    slug, name = f.get("slug", "").strip().lower(), f.get("name", "").strip()
    kind, email = f.get("kind", ""), f.get("email", "").strip().lower()
    problem = (
        "op_bad_slug"
        if not SLUG.match(slug)
        else "op_bad_name"
        if not 1 <= len(name) <= 200
        else "op_bad_kind"
        if kind not in KINDS
        else "op_bad_email"
        if not EMAIL.match(email)
        else None
    )
    db = get_db()
    if problem is None:
        try:
            merchant = services.create_merchant(db, slug, name, kind)
            # Nobody knows this password: the owner sets theirs through the invitation.
            owner = services.create_staff(db, email, secrets.token_urlsafe(32), "owner", merchant)
            db.commit()
        except IntegrityError:
            db.rollback()
            problem = "op_taken"
    if problem is not None:
        return render_template("error.html", message=t(problem)), 400
    return render_template("operator_invite.html", merchant=merchant, email=email,
                           link=invite_link(owner))  # fmt: skip


@bp.post("/operator/merchants/<int:merchant_id>/status")
@operator_required
def set_status(merchant_id: int) -> ResponseReturnValue:
    """Affiliate (active) or suspend a merchant; suspended devices are cut off at once."""
    status = request.form.get("status")
    merchant = get_db().get(Merchant, merchant_id)
    if merchant is None:
        abort(404)
    if status not in ("active", "suspended"):
        abort(400)
    merchant.status = status
    get_db().commit()
    get_topology(current_app).invalidate()
    if status == "suspended":
        drop_device_sockets(
            set(
                get_db().scalars(
                    select(Device.id).join(Venue).where(Venue.merchant_id == merchant_id)
                )
            )
        )
        # Its staff's live views too: their pages are refused now, and so must be the presence
        # feed they opened before.
        staff = set(
            get_db().scalars(select(StaffUser.id).where(StaffUser.merchant_id == merchant_id))
        )
        disconnect_staff(current_app._get_current_object(), staff)  # type: ignore[attr-defined]
    flash(t("op_status_" + status, name=merchant.name))
    return redirect(url_for("portal.operator"))


@bp.route("/invite/<token>", methods=["GET", "POST"])
def invite(token: str) -> ResponseReturnValue:
    """An invited owner chooses their password, then signs in as usual."""
    try:
        data = _serializer().loads(token, max_age=INVITE_MAX_AGE_S)
        user = get_db().get(StaffUser, int(data["u"]))
    except (BadSignature, KeyError, TypeError, ValueError):
        user = None
    if user is None or user.password_hash[-16:] != data.get("h"):
        return render_template("error.html", message=t("op_invite_dead")), 404
    if request.method == "GET":
        return render_template("invite.html", email=user.email)
    password = request.form.get("password", "")
    if len(password) < MIN_PASSWORD or password != request.form.get("confirm"):
        return render_template(
            "invite.html", email=user.email, error=t("op_bad_password", n=MIN_PASSWORD)
        ), 400
    # A new password ends every session of the old one (portal and auditor view alike): ended
    # before the change is committed, so a store outage changes nothing, and again after it,
    # for a sign-in with the old password that raced in between.
    _end_all(user.id)
    user.password_hash = generate_password_hash(password)
    get_db().commit()
    # The password is changed whatever happens now; portal sessions still die by their mark.
    with contextlib.suppress(HTTPException):
        _end_all(user.id)
    # What a session of the old password is watching live ends with it, not at its next request.
    disconnect_staff(current_app._get_current_object(), {user.id})  # type: ignore[attr-defined]
    flash(t("op_password_set"))
    return redirect(url_for("portal.login"))
