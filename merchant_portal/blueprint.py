"""The portal blueprint: language, signed-in staff, CSRF and HTML errors for every page."""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from flask import Blueprint, Response, abort, g, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from merchant_portal.i18n import current_language, translate
from store_server.lang_switch import language_switch

bp = Blueprint(
    "portal",
    __name__,
    url_prefix="/portal",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

# JSON endpoints called by a device, not a signed-in browser: no session, so no CSRF to forge.
CSRF_EXEMPT = {"portal.device_pair"}
# Roles of people working for a merchant; operators and auditors have no merchant pages.
MERCHANT_ROLES = ("owner", "staff")


def csrf_token() -> str:
    """The session's CSRF token, created on first use."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def t(key: str, **values: object) -> str:
    """Translate `key` into the request's language."""
    return translate(g.get("lang", "en"), key, **values)


@bp.before_request
def _prepare() -> None:
    g.lang = current_language()
    if request.method in ("POST", "PUT", "PATCH", "DELETE") and request.endpoint not in CSRF_EXEMPT:
        sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
        expected = session.get("csrf", "")
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            abort(400)


@bp.after_request
def _headers(resp: Response) -> Response:
    # Pages show pseudonyms and one-time codes: nothing may be cached or framed.
    resp.headers.setdefault("Cache-Control", "no-store")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    return resp


def lang_href(code: str) -> str:
    """This page in language `code` (lang_switch.language_switch); a page only a form's POST
    renders switches to the page the form is on (`g.page_url`, set by the view), else to the
    start page."""
    return language_switch(code, lambda: g.get("page_url") or url_for("portal.index"))


@bp.app_context_processor
def _template_helpers() -> dict[str, Any]:
    lang = g.get("lang", "en")
    return {
        "t": lambda key, **v: translate(lang, key, **v),
        "lang": lang,
        "lang_href": lang_href,
        "csrf_token": csrf_token,
        "staff": g.get("staff"),
    }


def wants_json() -> bool:
    """Whether the caller reads JSON: a .json endpoint (the live page polls them), a JSON body
    or an Accept asking for it. Errors then come as JSON, not as a page or a redirect."""
    return (
        request.path.endswith(".json")
        or request.is_json
        or request.accept_mimetypes.best == "application/json"
    )


@bp.errorhandler(HTTPException)
def _html_error(e: HTTPException) -> ResponseReturnValue:
    if e.code in (301, 302, 303, 307, 308):
        return e
    key = {404: "not_found", 403: "forbidden", 400: "bad_request", 413: "too_large"}.get(
        e.code or 500, "not_found"
    )
    if wants_json():
        return {"error": t(key)}, e.code
    return render_template("error.html", message=t(key)), e.code
