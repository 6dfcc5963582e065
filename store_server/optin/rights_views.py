"""The subscriber's own space: consents (withdraw one or all), disclosure history, home area,
export and erasure."""

from __future__ import annotations

import base64
import json

from flask import Blueprint, Response, current_app, make_response, redirect, request, url_for
from sqlalchemy import select

from beacons import provisioning
from store_server import rights
from store_server.db import get_db
from store_server.directory import get_directory
from store_server.models import AuditEntry, Consent, Device, Merchant, Subscriber, utcnow
from store_server.occupancy import whereabouts
from store_server.optin.choices import known_areas
from store_server.optin.i18n import TEXTS
from store_server.optin.pages import message, render
from store_server.optin.views import check_signin
from store_server.optin.web import (
    csrf_ok,
    forget_limits,
    load_session,
    safe_next,
    save_session,
    sign_out,
)

bp = Blueprint("rights", __name__, url_prefix="/me", template_folder="templates")
bp.after_request(save_session)


def _subscriber() -> Subscriber | None:
    sess = load_session()
    if not sess.directory_id or get_directory().lookup(sess.directory_id) is None:
        return None
    return get_db().scalar(select(Subscriber).where(Subscriber.directory_id == sess.directory_id))


def _signed_in() -> bool:
    sess = load_session()
    return bool(sess.directory_id and get_directory().lookup(sess.directory_id))


def _to_signin() -> Response:
    # A form sent after the session ended cannot be replayed as a GET (405): back to the
    # dashboard after sign-in, where she sees her consents and acts again.
    back = request.path if request.method == "GET" else url_for("rights.dashboard")
    return redirect(url_for("rights.signin", next=back), 303)


@bp.route("/signin", methods=["GET", "POST"])
def signin() -> Response:
    """Sign in to one's space; `next` may only be a path on this site."""
    target = safe_next(request.values.get("next"), url_for("rights.dashboard"))
    action = url_for("rights.signin", next=target)
    if request.method == "GET":
        return render("optin/signin.html", action=action, me_page=True)
    error = check_signin()
    if error:
        status = 429 if error == "rate_limited" else 400 if error == "csrf" else 401
        return render("optin/signin.html", status, action=action, error=error, me_page=True)
    return redirect(target, 303)


@bp.post("/signout")
def signout() -> Response:
    """End the session."""
    if csrf_ok():
        sign_out()
    return redirect(url_for("rights.signin"), 303)


@bp.get("/")
def dashboard() -> Response:
    """Every consent with its state, and the rights at hand."""
    if not _signed_in():
        return _to_signin()
    sub = _subscriber()
    db = get_db()
    now = utcnow()
    consents = []
    if sub is not None:
        merchants = dict(db.execute(select(Merchant.id, Merchant.name)).all())
        for c in db.scalars(
            select(Consent).where(Consent.subscriber_id == sub.id).order_by(Consent.id.desc())
        ):
            consents.append(
                {
                    "c": c,
                    "merchant": merchants.get(c.merchant_id) if c.merchant_id else None,
                    "status": rights.consent_status(c, now),
                }
            )
    return render(
        "optin/dashboard.html",
        sub=sub,
        consents=consents,
        any_active=any(x["status"] == "active" for x in consents),
        stats_live=bool(sub and rights.statistics_live(db, sub.id)),
        areas=sorted(known_areas().items()),
        notice=request.args.get("done"),
    )


def _checked_post() -> Subscriber | Response:
    if not _signed_in():
        return _to_signin()
    if not csrf_ok():
        return message(400, "bad_request_h", "csrf")
    sub = _subscriber()
    if sub is None:
        return message(404, "not_found_h", "no_data")
    return sub


@bp.post("/consents/<int:consent_id>/withdraw")
def withdraw_one(consent_id: int) -> Response:
    """Withdraw one consent, effective everywhere at once."""
    sub = _checked_post()
    if isinstance(sub, Response):
        return sub
    owned = get_db().scalar(
        select(Consent.id).where(Consent.id == consent_id, Consent.subscriber_id == sub.id)
    )
    if owned is None:
        return message(404, "not_found_h", "not_found")
    get_db().rollback()  # end the read transaction before the service writes in its own
    rights.withdraw(current_app, sub.id, consent_id)
    return redirect(url_for("rights.dashboard", done="withdrawn"), 303)


@bp.post("/withdraw-all")
def withdraw_all() -> Response:
    """Withdraw every consent, effective everywhere at once."""
    sub = _checked_post()
    if isinstance(sub, Response):
        return sub
    get_db().rollback()
    rights.withdraw(current_app, sub.id)
    return redirect(url_for("rights.dashboard", done="withdrawn"), 303)


@bp.post("/emitter/revoke")
def emitter_revoke() -> Response:
    """Lost phone or wearable: its key stops resolving at once; no new key."""
    sub = _checked_post()
    if isinstance(sub, Response):
        return sub
    get_db().rollback()
    rights.replace_emitter(current_app, sub.id, issue_new=False)
    return redirect(url_for("rights.dashboard", done="emitter_revoked"), 303)


@bp.post("/emitter/replace")
def emitter_replace() -> Response:
    """Revoke the current key and show a new provisioning code, once."""
    sub = _checked_post()
    if isinstance(sub, Response):
        return sub
    get_db().rollback()
    doc = rights.replace_emitter(current_app, sub.id, issue_new=True)
    if doc is None:
        return message(404, "not_found_h", "no_data")
    qr = base64.b64encode(provisioning.qr_svg(doc)).decode()
    return render("optin/emitter.html", qr=qr, provisioning_json=provisioning.serialise(doc))


@bp.post("/home-area")
def home_area() -> Response:
    """Change the home area (kept only under a live statistics consent)."""
    sub = _checked_post()
    if isinstance(sub, Response):
        return sub
    db = get_db()
    code = request.form.get("home_area", "")
    if code not in known_areas():
        return message(400, "bad_request_h", "err_area")
    if not rights.statistics_live(db, sub.id):
        return message(409, "bad_request_h", "area_needs_stats")
    sub.home_area = code
    db.commit()
    return redirect(url_for("rights.dashboard", done="area"), 303)


@bp.get("/disclosures")
def disclosures() -> Response:
    """Which merchant device received what, when."""
    if not _signed_in():
        return _to_signin()
    sub = _subscriber()
    rows = []
    if sub is not None:
        db = get_db()
        merchants = dict(db.execute(select(Merchant.id, Merchant.name)).all())
        devices = dict(db.execute(select(Device.id, Device.name)).all())
        for a in db.scalars(
            select(AuditEntry)
            .where(AuditEntry.subscriber_id == sub.id)
            .order_by(AuditEntry.id.desc())
            .limit(500)
        ):
            why = f"why_{a.reason}"
            rows.append(
                {
                    "a": a,
                    "merchant": merchants.get(a.merchant_id, "—"),
                    "device": devices.get(a.device_id, "—"),
                    # A reason with no words yet is shown as recorded rather than hidden.
                    "why": why if why in TEXTS else None,
                }
            )
    return render("optin/disclosures.html", rows=rows)


@bp.get("/export.json")
def export() -> Response:
    """Everything held about the subscriber, as one JSON document (access and portability)."""
    if not _signed_in():
        return _to_signin()
    sub = _subscriber()
    if sub is None:
        return message(404, "not_found_h", "no_data")
    doc = rights.export(get_db(), sub, whereabouts(current_app, sub.id))
    body = json.dumps(doc, ensure_ascii=False, indent=2)
    resp = make_response(body, 200)
    resp.headers["Content-Type"] = "application/json; charset=utf-8"
    resp.headers["Content-Disposition"] = 'attachment; filename="collective-mood-export.json"'
    return resp


@bp.post("/erase")
def erase() -> Response:
    """Erase everything about the subscriber, everywhere; only a tombstone remains."""
    sub = _checked_post()
    if isinstance(sub, Response):
        return sub
    if request.form.get("confirm") != "yes":
        return message(400, "erase_h", "erase_need_confirm")
    sid, directory_id = sub.id, sub.directory_id
    get_db().rollback()
    rights.erase(current_app, sid)
    forget_limits(current_app, "signin-user", directory_id.split(":", 1)[-1])
    sign_out()
    return message(200, "erased_h", "erased")
