"""Security plumbing shared by the subscriber pages: the subscriber session cookie, CSRF tokens,
Redis rate limits, safe redirects and strict response headers.

The subscriber session is its own signed cookie, separate from the portal's Flask session, so a
merchant's staff login and a customer's sign-in on the same tablet never mix.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis
from flask import Flask, Response, current_app, g, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from store_server.redis_store import get_keys, get_redis
from store_server.sessions import get_registry, staff_principal, subscriber_principal

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
LANGS = ("fr", "en")


@dataclass
class SubscriberSession:
    """What the cookie carries: the signed-in account, the CSRF token and the language, and for a
    signed-in account the id of its server-side session and when it started."""

    directory_id: str | None = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    lang: str | None = None
    staff_id: int | None = None  # an auditor signed in to the auditor view
    sid: str | None = None  # server-side session id (store_server.sessions), when signed in
    started: int | None = None
    modified: bool = False

    def to_json(self) -> dict[str, Any]:
        """Cookie payload."""
        return {
            "d": self.directory_id,
            "c": self.csrf,
            "l": self.lang,
            "a": self.staff_id,
            "s": self.sid,
            "t": self.started,
        }

    def principal(self) -> str | None:
        """Whose sign-in this cookie carries (auditor or subscriber; one at a time), if anyone's."""
        if self.staff_id is not None:
            return staff_principal(self.staff_id)
        if self.directory_id is not None:
            return subscriber_principal(self.directory_id)
        return None


def _serializer(app: Flask) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="cm-subscriber-session")


def cookie_name(app: Flask) -> str:
    """__Host- prefix when secure: the browser then refuses it from any other origin or path."""
    return "__Host-cm_sub" if app.config["OPTIN_COOKIE_SECURE"] else "cm_sub"


def load_session() -> SubscriberSession:
    """The request's subscriber session (a fresh anonymous one if absent, expired, forged or
    signed out); raises SessionStoreUnavailable (503) when a sign-in cannot be checked."""
    if "cm_sub" in g:
        return g.cm_sub
    app = current_app
    raw = request.cookies.get(cookie_name(app))
    sess = SubscriberSession(modified=True)
    if raw:
        try:
            data = _serializer(app).loads(raw, max_age=app.config["OPTIN_SESSION_MAX_AGE_S"])
            sess = SubscriberSession(
                data.get("d"), data["c"], data.get("l"), data.get("a"), data.get("s"), data.get("t")
            )
        except (BadSignature, KeyError, TypeError, AttributeError):
            sess = SubscriberSession(modified=True)
    principal = sess.principal()
    # A signed-in cookie counts only while its session id is live in Redis: signed out (here or
    # by a password change) means anonymous, even for a copy of the cookie taken before.
    if principal is not None and not get_registry(app).check(
        sess.sid, principal, sess.started, app.config["OPTIN_SESSION_MAX_AGE_S"]
    ):
        sess = SubscriberSession(lang=sess.lang, modified=True)
    g.cm_sub = sess
    return sess


def sign_in(directory_id: str) -> None:
    """Start a signed-in session with a new CSRF token (no fixation of a pre-sign-in token)."""
    # A fresh session: an auditor signed in on this browser before must not stay signed in for
    # the subscriber who signs in now (auditor sign-in likewise ends a subscriber's session).
    _start(subscriber_principal(directory_id))
    sess = load_session()
    sess.directory_id = directory_id


def sign_in_staff(staff_id: int) -> None:
    """Start an auditor's signed-in session in this cookie, ending whoever's it held."""
    _start(staff_principal(staff_id))
    sess = load_session()
    sess.staff_id = staff_id


def _start(principal: str) -> None:
    sign_out()
    sess = load_session()
    app = current_app
    sess.sid = get_registry(app).start(principal, app.config["OPTIN_SESSION_MAX_AGE_S"])
    sess.started = int(time.time())


def sign_out() -> None:
    """End this cookie's session server-side (only this one), forget it, rotate the CSRF token."""
    sess = load_session()
    principal = sess.principal()
    if principal is not None:
        get_registry(current_app).end(sess.sid, principal)
    sess.directory_id, sess.staff_id, sess.sid, sess.started = None, None, None, None
    sess.csrf, sess.modified = secrets.token_urlsafe(24), True


def csrf_ok() -> bool:
    """The form's token matches the session's, and the browser's Origin (if any) is ours."""
    origin = request.headers.get("Origin")
    if origin and origin != "null" and _origin_host(origin) != request.host:
        return False
    sent = request.form.get("csrf_token", "")
    return hmac.compare_digest(sent.encode(), load_session().csrf.encode())


def _origin_host(origin: str) -> str | None:
    # An Origin urlsplit cannot parse ("http://[") names no host of ours: refused as foreign.
    try:
        return urlsplit(origin).netloc
    except ValueError:
        return None


def save_session(response: Response) -> Response:
    """Write the cookie back (refreshing its age) and add the strict headers."""
    app = current_app
    sess: SubscriberSession | None = g.get("cm_sub")
    if sess is not None:
        response.set_cookie(
            cookie_name(app),
            _serializer(app).dumps(sess.to_json()),
            max_age=app.config["OPTIN_SESSION_MAX_AGE_S"],
            path="/",
            secure=app.config["OPTIN_COOKIE_SECURE"],
            httponly=True,
            samesite="Lax",
        )
    secure_headers(response)
    return response


def secure_headers(response: Response) -> Response:
    """CSP without any script, no framing, no referrer (the link token must not leak)."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    return response


def safe_next(target: str | None, default: str) -> str:
    """A same-site path to go to after sign-in; anything else (other host, scheme) is refused."""
    if not target or len(target) > 200 or not target.startswith("/"):
        return default
    if target.startswith(("//", "/\\")) or any(c in target for c in "\\\r\n\t") or ":" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def language() -> str:
    """fr or en: ?lang= (remembered), else the session's, else the browser's preference."""
    sess = load_session()
    asked = request.args.get("lang")
    if asked in LANGS and asked != sess.lang:
        sess.lang, sess.modified = asked, True
    if sess.lang in LANGS:
        return sess.lang
    return request.accept_languages.best_match(LANGS) or "fr"


def _limit_key(app: Flask, scope: str, ident: str) -> str:
    # Identifiers (IP, username) are keyed through an HMAC so Redis never holds them in clear.
    digest = hmac.new(app.config["SECRET_KEY"].encode(), ident.encode(), hashlib.sha256)
    keys = get_keys(app)
    name = f"{scope}:{digest.hexdigest()[:32]}"
    if hasattr(keys, "ratelimit"):
        return keys.ratelimit(name)
    return f"{keys.prefix}ratelimit:{name}"


def parse_rate(rate: str) -> tuple[int, int]:
    """'5/300' -> (5 hits, 300 s window)."""
    hits, window = rate.split("/")
    return int(hits), int(window)


def rate_limited(scope: str, ident: str, rate: str) -> bool:
    """Count one hit; True when this identity is over its limit for the window (fails open)."""
    app = current_app
    hits, window = parse_rate(rate)
    key = _limit_key(app, scope, ident)
    try:
        pipe = get_redis(app).pipeline(transaction=True)
        # SET NX EX then INCR: the window starts at the first hit (works on Redis 6 too).
        pipe.set(key, 0, ex=window, nx=True)
        pipe.incr(key)
        count = pipe.execute()[1]
    except redis.exceptions.RedisError:
        # Like a limiter in front of a login page, prefer availability; the event is logged.
        log.warning("rate limiter unavailable", extra={"scope": scope})
        return False
    return int(count) > hits


def limit_reached(scope: str, ident: str, rate: str) -> bool:
    """Whether this identity used up its window already, counting no hit (fails open)."""
    app = current_app
    hits, _window = parse_rate(rate)
    try:
        count = get_redis(app).get(_limit_key(app, scope, ident))
    except redis.exceptions.RedisError:
        log.warning("rate limiter unavailable", extra={"scope": scope})
        return False
    return count is not None and int(count) >= hits


def forget_limits(app: Flask, scope: str, ident: str) -> None:
    """Remove a limiter's counter (erasure removes those keyed by the account)."""
    get_redis(app).delete(_limit_key(app, scope, ident))


def client_ip() -> str:
    """The client's address as the WSGI server saw it (behind a proxy, configure ProxyFix)."""
    return request.remote_addr or "unknown"


def now() -> float:
    """Wall clock for the views (one place to read it)."""
    return time.time()
