"""Staff sign-in and tenancy: who is signed in, and every lookup scoped to their merchant."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from merchant_portal.blueprint import MERCHANT_ROLES, bp, t, wants_json
from merchant_portal.sockets import disconnect_staff
from store_server.db import get_db
from store_server.models import Device, Merchant, Scanner, StaffUser, Venue
from store_server.sessions import (
    RETRY_AFTER_S,
    SessionStoreUnavailable,
    get_registry,
    staff_principal,
)

F = TypeVar("F", bound=Callable[..., Any])

# Checked when the email is unknown, so both failures take the same time.
_DUMMY_HASH = generate_password_hash("no-such-user")


def current_staff() -> StaffUser | None:
    """The signed-in staff member of this request, or None (503 if sign-ins cannot be checked)."""
    if "staff" not in g:
        staff_id = session.get("staff_id")
        staff = None
        # The signed cookie alone is not enough: its session id must still be live in Redis,
        # so a copy of the cookie stops working once that session is signed out.
        if isinstance(staff_id, int) and _live(staff_id):
            staff = get_db().get(StaffUser, staff_id)
        # A password change (or reset) ends every session signed in with the old one.
        if staff is not None and session.get("pw") != password_mark(staff):
            staff = None
        g.staff = staff
    return g.staff


def _idle_s() -> int:
    return int(current_app.permanent_session_lifetime.total_seconds())


def _live(staff_id: int) -> bool:
    try:
        return get_registry().check(
            session.get("sid"), staff_principal(staff_id), session.get("t"), _idle_s()
        )
    except SessionStoreUnavailable:
        abort(session_store_down())


def session_store_down() -> Response:
    """503 for a signed-in request whose session cannot be checked: refused, never let through."""
    message = {
        "fr": "Vérification de la connexion momentanément impossible, réessayez dans un instant.",
        "en": "Sign-in check unavailable, please retry in a moment.",
    }.get(g.get("lang", "en"), SessionStoreUnavailable.description)
    if request.accept_mimetypes.best == "application/json" or request.is_json:
        resp = jsonify({"error": message})
    else:
        resp = current_app.make_response(render_template("error.html", message=message))
    resp.status_code = 503
    resp.headers["Retry-After"] = str(RETRY_AFTER_S)
    return resp


def _end_this_session() -> None:
    # Sign-out ends this browser's session only; the person's other sessions stay signed in.
    staff_id = session.get("staff_id")
    if isinstance(staff_id, int):
        try:
            get_registry().end(session.get("sid"), staff_principal(staff_id))
        except SessionStoreUnavailable:
            abort(session_store_down())


def password_mark(staff: StaffUser) -> str:
    """A short fingerprint of the current password hash, kept in the session."""
    return staff.password_hash[-16:]


def _back_to() -> str:
    """Where sign-in leads back to: this page, or for a form (its URL takes no GET, and the
    form cannot be replayed) the page it was sent from, else the start page."""
    if request.method == "GET":
        return request.full_path.rstrip("?")
    came_from = urlsplit(request.referrer or "")
    if came_from.netloc == request.host and came_from.path.startswith("/portal/"):
        return came_from.path + (f"?{came_from.query}" if came_from.query else "")
    return url_for("portal.index")


def login_required(view: F) -> F:
    """Send anonymous visitors to the sign-in page; refuse accounts without a merchant."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        staff = current_staff()
        if staff is None:
            if wants_json():
                return {"error": t("login_title")}, 401  # a poll has no sign-in page to show
            return redirect(url_for("portal.login", next=_back_to()))
        if staff.merchant_id is None or staff.role not in MERCHANT_ROLES:
            abort(403)
        if get_db().get(Merchant, staff.merchant_id).status != "active":
            # Suspended by the programme: nothing live, no devices, no reports until reactivated.
            if wants_json():
                return {"error": t("merchant_suspended")}, 403
            return render_template("error.html", message=t("merchant_suspended")), 403
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def owner_required(view: F) -> F:
    """Only a merchant owner may change devices and setup."""

    @functools.wraps(view)
    @login_required
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_staff().role != "owner":  # type: ignore[union-attr]
            abort(403)
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def own_venue(venue_id: int) -> Venue:
    """The signed-in merchant's venue, else 404 (never 403: ids of others are not confirmed)."""
    venue = get_db().scalar(
        select(Venue).where(Venue.id == venue_id, Venue.merchant_id == current_staff().merchant_id)  # type: ignore[union-attr]
    )
    if venue is None:
        abort(404)
    return venue


def own_device(device_id: int) -> Device:
    """The signed-in merchant's device, else 404."""
    device = get_db().scalar(
        select(Device)
        .join(Venue, Venue.id == Device.venue_id)
        .where(Device.id == device_id, Venue.merchant_id == current_staff().merchant_id)  # type: ignore[union-attr]
    )
    if device is None:
        abort(404)
    return device


def own_scanner(scanner_id: int) -> Scanner:
    """The signed-in merchant's scanner, else 404."""
    scanner = get_db().scalar(
        select(Scanner)
        .join(Venue, Venue.id == Scanner.venue_id)
        .where(Scanner.id == scanner_id, Venue.merchant_id == current_staff().merchant_id)  # type: ignore[union-attr]
    )
    if scanner is None:
        abort(404)
    return scanner


def _safe_next(target: str | None) -> str:
    # Only same-site paths under the portal, so the sign-in form is no open redirect.
    if target and target.startswith("/portal/") and not target.startswith("//"):
        return target
    return url_for("portal.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Sign in with email and password; one generic message for every failure."""
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""))
    email = request.form.get("email", "").strip().lower()
    password = request.form.get("password", "")
    throttle = current_app.extensions["cm_portal_login_throttle"]
    by_address = current_app.extensions["cm_portal_login_ip_throttle"]
    who = request.remote_addr or "?"
    if throttle.blocked(email) or by_address.blocked(who):
        return render_template("login.html", error=t("login_throttled"), email=email), 429
    user = get_db().scalar(select(StaffUser).where(StaffUser.email == email)) if email else None
    ok = check_password_hash(user.password_hash if user else _DUMMY_HASH, password)
    if not (user and ok):
        throttle.fail(email)
        by_address.fail(who)
        return render_template("login.html", error=t("login_failed"), email=email), 401
    # The address's count stays: a guesser's own account must not wipe it.
    throttle.clear(email)
    lang = session.get("lang")
    # Signing in again in this browser ends the session it held (no copy of it lives on).
    _end_this_session()
    try:
        sid = get_registry().start(staff_principal(user.id), _idle_s())
    except SessionStoreUnavailable:
        abort(session_store_down())
    # A fresh session at sign-in defeats fixation of a session planted before it.
    session.clear()
    session.permanent = True
    session["staff_id"] = user.id
    session["sid"], session["t"] = sid, int(time.time())
    session["pw"] = password_mark(user)
    if lang:
        session["lang"] = lang
    if user.role == "operator" and not request.form.get("next"):
        return redirect(url_for("portal.operator"))
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End this session server-side (copies of its cookie die too), close its live connections."""
    _end_this_session()
    staff_id = session.get("staff_id")
    if isinstance(staff_id, int):
        disconnect_staff(current_app._get_current_object(), {staff_id})  # type: ignore[attr-defined]
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    flash(t("logged_out"))
    return redirect(url_for("portal.login"))
