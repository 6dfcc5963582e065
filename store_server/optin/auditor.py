"""Read-only view for the programme's data-protection officer: the audit log, the retention in
force, consent statistics and the receipt verifier. Staff accounts with the auditor role only."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, redirect, request, url_for
from sqlalchemy import func, select
from werkzeug.security import check_password_hash

from store_server.db import get_db
from store_server.models import AuditEntry, Consent, Device, Merchant, StaffUser, Visit, utcnow
from store_server.optin.pages import render
from store_server.optin.web import (
    client_ip,
    csrf_ok,
    limit_reached,
    load_session,
    rate_limited,
    save_session,
    sign_in_staff,
    sign_out,
)
from store_server.rights import consent_status

bp = Blueprint("auditor", __name__, url_prefix="/auditor", template_folder="templates")
bp.after_request(save_session)
ROLES = ("auditor",)
# Compared against when the e-mail is unknown, so timing does not reveal which accounts exist.
_DUMMY = "scrypt:32768:8:1$x$" + "0" * 128


def _auditor() -> StaffUser | None:
    sid = load_session().staff_id
    if sid is None:
        return None
    u = get_db().get(StaffUser, sid)
    return u if u is not None and u.role in ROLES else None


@bp.route("/signin", methods=["GET", "POST"])
def signin() -> Response:
    """Staff sign-in for the auditor view."""
    if request.method == "GET":
        return render("optin/auditor_signin.html")
    cfg = current_app.config
    error = None
    email = request.form.get("email", "").strip().lower()[:254]
    password = request.form.get("password", "")[:256]
    if not csrf_ok():
        error = "csrf"
    # Per account too: per address alone, guesses spread over many addresses never met a
    # limit (the portal's form counts its own). Only failures count, so signing in is never it.
    elif rate_limited("auditor-ip", client_ip(), cfg["OPTIN_SIGNIN_IP_RATE"]) or limit_reached(
        "auditor-user", email, cfg["OPTIN_SIGNIN_USER_RATE"]
    ):
        error = "rate_limited"
    else:
        u = get_db().scalar(select(StaffUser).where(StaffUser.email == email))
        ok = check_password_hash(u.password_hash if u else _DUMMY, password)
        if u is None or not ok or u.role not in ROLES:
            rate_limited("auditor-user", email, cfg["OPTIN_SIGNIN_USER_RATE"])
            error = "bad_credentials"
        else:
            sign_in_staff(u.id)
            return redirect(url_for("auditor.index"), 303)
    status = {"csrf": 400, "rate_limited": 429}.get(error or "", 401)
    return render("optin/auditor_signin.html", status, error=error)


@bp.get("/")
def index() -> Response:
    """Audit log, retention in force, consent statistics."""
    if _auditor() is None:
        return redirect(url_for("auditor.signin"), 303)
    db = get_db()
    now = utcnow()
    stats: dict[str, int] = {"active": 0, "withdrawn": 0, "expired": 0}
    scopes: dict[str, int] = {}
    for c in db.scalars(select(Consent)):
        stats[consent_status(c, now)] += 1
        label = f"{'all' if c.merchant_id is None else 'one merchant'} · {c.share}" + (
            " · statistics" if c.statistics else ""
        )
        scopes[label] = scopes.get(label, 0) + 1
    merchants = dict(db.execute(select(Merchant.id, Merchant.name)).all())
    devices = dict(db.execute(select(Device.id, Device.name)).all())
    log = db.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(200)).all()
    cfg = current_app.config
    retention = {
        "RETENTION_DAYS": cfg["RETENTION_DAYS"],
        "PUSH_TTL_S": cfg.get("PUSH_TTL_S"),
        "OPTIN_LINK_MAX_AGE_S": cfg["OPTIN_LINK_MAX_AGE_S"],
        "OPTIN_SESSION_MAX_AGE_S": cfg["OPTIN_SESSION_MAX_AGE_S"],
        "oldest_visit": db.scalar(select(func.min(Visit.started_at))),
        "visits": db.scalar(select(func.count(Visit.id))),
    }
    return render(
        "optin/auditor.html",
        stats=stats,
        scopes=sorted(scopes.items()),
        log=log,
        merchants=merchants,
        devices=devices,
        retention=retention,
    )


@bp.post("/signout")
def signout() -> Response:
    """End the auditor's session."""
    if csrf_ok():
        sign_out()
    return redirect(url_for("auditor.signin"), 303)
