"""Merchant portal: the tablet web app, a Flask blueprint mounted by the composition root."""

from __future__ import annotations

import os
from datetime import timedelta

from flask import Flask

from merchant_portal import auth, operator, sockets, views
from merchant_portal.blueprint import bp
from merchant_portal.pairing import PairingCodes
from merchant_portal.throttle import Throttle
from store_server.redis_store import get_keys, get_redis

__all__ = ["auth", "bp", "init_app", "operator", "views"]


def init_app(app: Flask) -> None:
    """Mount the portal at /portal and its Socket.IO handlers on the app's server."""
    # Session cookies carry the staff sign-in: not readable by scripts, not sent cross-site, and
    # HTTPS-only outside tests (PORTAL_COOKIE_SECURE overrides, e.g. for a plain-HTTP demo).
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    secure = app.config.get("PORTAL_COOKIE_SECURE")
    if secure is None:
        env = os.environ.get("PORTAL_COOKIE_SECURE")
        secure = env == "1" if env is not None else not (app.testing or app.debug)
    app.config["SESSION_COOKIE_SECURE"] = bool(secure)
    if secure:
        # The __Host- prefix makes browsers refuse the cookie unless Secure, path / and no
        # Domain: no sibling subdomain can plant or read a staff session.
        app.config["SESSION_COOKIE_NAME"] = "__Host-cm_portal"
        app.config["SESSION_COOKIE_PATH"] = "/"
        app.config["SESSION_COOKIE_DOMAIN"] = None
    app.config["PERMANENT_SESSION_LIFETIME"] = min(
        app.config["PERMANENT_SESSION_LIFETIME"], timedelta(hours=12)
    )
    # In Redis, not in this process: behind several workers a code shown by one is redeemed on
    # another, and a guesser spreading attempts over workers still meets one limit.
    redis_client, keys, secret = lambda: get_redis(app), get_keys(app), app.config["SECRET_KEY"]
    app.extensions["cm_portal_pairing"] = PairingCodes(redis_client, keys, secret)
    # Ten wrong passwords per account, twenty wrong codes per address, per five minutes; and a
    # hundred wrong passwords per address (PORTAL_LOGIN_IP_FAILURES), whatever the accounts, so
    # one password cannot be tried on every account (an office behind one address has room).
    app.extensions["cm_portal_login_throttle"] = Throttle(
        redis_client, keys, secret, "login", 10, 300.0
    )
    app.extensions["cm_portal_login_ip_throttle"] = Throttle(
        redis_client,
        keys,
        secret,
        "login-ip",
        int(app.config.get("PORTAL_LOGIN_IP_FAILURES", 100)),
        300.0,
    )
    app.extensions["cm_portal_pair_throttle"] = Throttle(
        redis_client, keys, secret, "pair", 20, 300.0
    )
    app.register_blueprint(bp)
    sockets.register(app, app.extensions["socketio"])
