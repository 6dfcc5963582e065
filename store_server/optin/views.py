"""Opt-in pages: open the QR's link, sign in, choose scopes, get the receipt and the emitter key.
Plus the public receipt tools: the verification key and a verifier."""

from __future__ import annotations

import base64
import secrets

from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    make_response,
    redirect,
    request,
    url_for,
)
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

from beacons import provisioning
from store_server import receipts
from store_server.db import get_db
from store_server.directory import get_directory
from store_server.models import Consent, Merchant, Subscriber, Venue, utcnow
from store_server.optin import flow, links
from store_server.optin.choices import known_areas, parse_choices
from store_server.optin.links import LinkError, OptinLink, read_token
from store_server.optin.pages import message, render
from store_server.optin.web import (
    client_ip,
    csrf_ok,
    language,
    load_session,
    rate_limited,
    save_session,
    sign_in,
)
from store_server.rights import consent_status

bp = Blueprint(
    "optin",
    __name__,
    url_prefix="/optin",
    template_folder="templates",
    static_folder="static",
)
bp.after_request(save_session)


def _form_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="optin-form")


def _link(token: str) -> tuple[OptinLink, Merchant, Venue] | Response:
    """The verified link with its merchant and venue, or the page explaining why not."""
    cfg = current_app.config
    try:
        link = read_token(cfg["SECRET_KEY"], token, cfg["OPTIN_LINK_MAX_AGE_S"])
    except LinkError as e:
        status = 410 if e.kind == "expired" else 400
        return message(status, f"link_{e.kind}_h", f"link_{e.kind}")
    db = get_db()
    merchant, venue = db.get(Merchant, link.merchant_id), db.get(Venue, link.venue_id)
    if (
        merchant is None
        or venue is None
        or venue.merchant_id != merchant.id
        or merchant.status != "active"
    ):
        return message(404, "link_unknown_h", "link_unknown")
    if link.jti and flow.link_used(current_app, link.jti):
        return message(410, "link_replayed_h", "link_replayed", me=url_for("rights.dashboard"))
    return link, merchant, venue


def _info(merchant: Merchant) -> dict:
    cfg = current_app.config
    return {
        "controller": cfg["OPTIN_CONTROLLER"],
        "policy_url": cfg["OPTIN_POLICY_URL"],
        "retention_days": cfg["RETENTION_DAYS"],
        "merchant": merchant.name,
        "me_url": url_for("rights.dashboard", _external=True),
    }


@bp.get("/<token>")
def landing(token: str) -> Response:
    """What the QR code opens: who asks, and the sign-in form (or straight to the choices)."""
    if rate_limited("optin-open", client_ip(), current_app.config["OPTIN_OPEN_RATE"]):
        return message(429, "bad_request_h", "rate_limited")
    got = _link(token)
    if isinstance(got, Response):
        return got
    merchant = got[1]
    sess = load_session()
    if sess.directory_id and get_directory().lookup(sess.directory_id):
        return redirect(url_for("optin.choose", token=token), 303)
    return render(
        "optin/signin.html", action=url_for("optin.signin", token=token), **_info(merchant)
    )


@bp.get("/<token>/qr.<kind>")
def qr(token: str, kind: str) -> Response:
    """The link's own QR code (PNG or SVG), for the portal and devices to show."""
    if kind not in ("png", "svg"):
        return message(404, "not_found_h", "not_found")
    got = _link(token)
    if isinstance(got, Response):
        return got
    # The address phones reach, which behind a proxy or on a LAN tablet may not be this request's.
    base = current_app.config.get("PUBLIC_BASE_URL")
    url = (
        f"{base.rstrip('/')}/optin/{token}"
        if base
        else url_for("optin.landing", token=token, _external=True)
    )
    body = links.qr_png(url) if kind == "png" else links.qr_svg(url)
    resp = make_response(body, 200)
    resp.headers["Content-Type"] = "image/png" if kind == "png" else "image/svg+xml"
    return resp


@bp.post("/<token>/signin")
def signin(token: str) -> Response:
    """Check the credentials with the directory, then go to the choices."""
    got = _link(token)
    if isinstance(got, Response):
        return got
    merchant = got[1]
    action = url_for("optin.signin", token=token)
    error = check_signin()
    if error:
        status = 429 if error == "rate_limited" else 400 if error == "csrf" else 401
        return render("optin/signin.html", status, action=action, error=error, **_info(merchant))
    return redirect(url_for("optin.choose", token=token), 303)


def check_signin() -> str | None:
    """Validate a sign-in POST and sign in; returns a message key when it is refused."""
    cfg = current_app.config
    if not csrf_ok():
        return "csrf"
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    if rate_limited("signin-ip", client_ip(), cfg["OPTIN_SIGNIN_IP_RATE"]):
        return "rate_limited"
    if not username or not password or len(username) > 64 or len(password) > 256:
        return "field_required"
    if rate_limited("signin-user", username.lower(), cfg["OPTIN_SIGNIN_USER_RATE"]):
        return "rate_limited"
    account = get_directory().authenticate(username, password)
    if account is None:
        return "bad_credentials"
    sign_in(account.directory_id)
    return None


def _choose_page(token: str, merchant: Merchant, status: int = 200, **ctx: object) -> Response:
    sess = load_session()
    nonce = _form_serializer().dumps({"n": secrets.token_hex(16), "d": sess.directory_id})
    account = get_directory().lookup(sess.directory_id or "")
    return render(
        "optin/choose.html",
        status,
        action=url_for("optin.submit", token=token),
        nonce=nonce,
        areas=sorted(known_areas().items()),
        name=account.display_name if account else "",
        chosen=ctx.pop("chosen", {}),
        **ctx,
        **_info(merchant),
    )


@bp.get("/<token>/consent")
def choose(token: str) -> Response:
    """The scopes, in plain language, nothing ticked."""
    got = _link(token)
    if isinstance(got, Response):
        return got
    sess = load_session()
    if not sess.directory_id or get_directory().lookup(sess.directory_id) is None:
        return redirect(url_for("optin.landing", token=token), 303)
    return _choose_page(token, got[1])


@bp.post("/<token>/consent")
def submit(token: str) -> Response:
    """Record the consent, provision the emitter, sign the receipt and show it."""
    cfg = current_app.config
    if rate_limited("optin-submit", client_ip(), cfg["OPTIN_SUBMIT_RATE"]):
        return message(429, "bad_request_h", "rate_limited")
    got = _link(token)
    if isinstance(got, Response):
        return got
    link, merchant, _venue = got
    sess = load_session()
    account = get_directory().lookup(sess.directory_id or "")
    if account is None:
        return redirect(url_for("optin.landing", token=token), 303)
    if not csrf_ok():
        return message(400, "bad_request_h", "csrf")
    raw_nonce = request.form.get("nonce", "")
    try:
        data = _form_serializer().loads(raw_nonce, max_age=cfg["OPTIN_SESSION_MAX_AGE_S"])
    except BadSignature:
        return message(400, "bad_request_h", "csrf")
    if not isinstance(data, dict) or data.get("d") != account.directory_id:
        return message(400, "bad_request_h", "csrf")
    if flow.form_used(current_app, raw_nonce):
        return message(409, "link_replayed_h", "link_replayed", me=url_for("rights.dashboard"))
    choices, errors = parse_choices(request.form)
    if choices is None:
        chosen = {
            k: request.form.get(k, "")
            for k in ("presence", "share", "statistics", "home_area", "duration")
        }
        return _choose_page(token, merchant, 400, errors=errors, chosen=chosen)
    try:
        result = flow.complete_optin(
            current_app,
            account,
            link,
            choices,
            language=language(),
            form_nonce=raw_nonce,
            withdraw_url=url_for("rights.dashboard", _external=True),
        )
    except flow.Replayed:
        return message(409, "link_replayed_h", "link_replayed", me=url_for("rights.dashboard"))
    qr = None
    doc_json = None
    if result.provisioning is not None:
        qr = base64.b64encode(provisioning.qr_svg(result.provisioning)).decode()
        doc_json = provisioning.serialise(result.provisioning)
    return render(
        "optin/done.html",
        receipt=result.receipt,
        receipt_id=result.receipt_id,
        jws=result.jws,
        qr=qr,
        provisioning_json=doc_json,
        **_info(merchant),
    )


def _own_consent(receipt_id: str) -> Consent | None:
    sess = load_session()
    if not sess.directory_id:
        return None
    db = get_db()
    return db.scalar(
        select(Consent)
        .join(Subscriber, Consent.subscriber_id == Subscriber.id)
        .where(Consent.receipt_id == receipt_id, Subscriber.directory_id == sess.directory_id)
    )


@bp.get("/receipts/<receipt_id>")
def receipt_page(receipt_id: str) -> Response:
    """The human-readable receipt (its owner only)."""
    c = _own_consent(receipt_id)
    if c is None:
        return message(404, "not_found_h", "not_found")
    return render(
        "optin/receipt.html",
        receipt=c.receipt.get("receipt", {}),
        jws=c.receipt.get("jws", ""),
        receipt_id=c.receipt_id,
        status=consent_status(c, utcnow()),
    )


@bp.get("/receipts/<receipt_id>.json")
def receipt_json(receipt_id: str) -> Response:
    """The signed receipt as JSON: the Kantara object and its JWS (its owner only)."""
    c = _own_consent(receipt_id)
    if c is None:
        return message(404, "not_found_h", "not_found")
    resp = jsonify(c.receipt)
    resp.headers["Content-Disposition"] = f'attachment; filename="receipt-{c.receipt_id}.json"'
    return resp


@bp.get("/receipts/key")
def receipt_key() -> Response:
    """The public key that verifies every receipt, as a JWK set."""
    key = receipts.signing_key(current_app.config["DATA_KEY"]).public_key()
    return jsonify({"keys": [receipts.public_jwk(key)]})


@bp.route("/verify", methods=["GET", "POST"])
def verify() -> Response:
    """Paste a receipt, learn whether it is valid (and whether its consent is still on record)."""
    if request.method == "GET":
        return render("optin/verify.html")
    if not csrf_ok():
        return render("optin/verify.html", 400, error_key="csrf")
    text = request.form.get("receipt", "")
    if rate_limited("verify", client_ip(), current_app.config["OPTIN_OPEN_RATE"]):
        return message(429, "bad_request_h", "rate_limited")
    key = receipts.signing_key(current_app.config["DATA_KEY"]).public_key()
    try:
        claims = receipts.verify(key, text)
    except receipts.InvalidReceipt as e:
        return render("optin/verify.html", 200, valid=False, reason=str(e), pasted=text[:20000])
    c = get_db().scalar(select(Consent).where(Consent.receipt_id == claims["consentReceiptID"]))
    return render(
        "optin/verify.html",
        valid=True,
        claims=claims,
        status=consent_status(c, utcnow()) if c else None,
        pasted=text,
    )
