"""Subscriber opt-in (QR), consent receipts and data-protection rights.

Configuration keys (defaults set here, overridable in the app config or the environment):
  OPTIN_LINK_MAX_AGE_S     how long an opt-in link (QR) is valid, seconds (3600)
  OPTIN_SESSION_MAX_AGE_S  idle lifetime of a subscriber's sign-in, seconds (1800)
  OPTIN_COOKIE_SECURE      send the session cookie over HTTPS only, as __Host-cm_sub (true)
  OPTIN_SIGNIN_IP_RATE     sign-in attempts per client address, "hits/seconds" ("20/300")
  OPTIN_SIGNIN_USER_RATE   sign-in attempts per username ("5/300")
  OPTIN_OPEN_RATE          opt-in link openings and receipt checks per address ("60/60")
  OPTIN_SUBMIT_RATE        consent submissions per address ("10/600")
  OPTIN_TIMEZONE           where "today only" ends at midnight ("Europe/Paris")
  OPTIN_RESOLVER_ID        resolver id written into emitter provisioning documents ("cm-store")
  OPTIN_POLICY_URL         the privacy policy named on pages and receipts
  OPTIN_CONTROLLER         the controller named on pages and receipts (name, contact, address,
                           email, phone, url)
  RETENTION_DAYS           visits, disclosure log entries and ended consents are kept this many
                           days, then purged by `python -m store_server retention` (90)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Flask

from store_server.config import ConfigError, env_int
from store_server.directory import BuiltinDirectory
from store_server.optin import models  # noqa: F401 - registers the opt-in tables on Base
from store_server.streaming import FixtureStreaming

CONTROLLER = {
    "name": "Collective Mood — programme of the streaming service",
    "contact": "Data protection officer",
    "address": "10 rue de l'Exemple, 75011 Paris, France",
    "email": "dpo@collective-mood.example",
    "phone": "+33 1 00 00 00 00",
    "url": "https://collective-mood.example",
}


def defaults(env: dict[str, str] | None = None) -> dict[str, object]:
    """The opt-in configuration from the environment, with safe defaults."""
    e = os.environ if env is None else env
    return {
        "OPTIN_LINK_MAX_AGE_S": env_int(e, "OPTIN_LINK_MAX_AGE_S", 3600, 1, what=SECONDS),
        "OPTIN_SESSION_MAX_AGE_S": env_int(e, "OPTIN_SESSION_MAX_AGE_S", 1800, 1, what=SECONDS),
        "OPTIN_COOKIE_SECURE": e.get("OPTIN_COOKIE_SECURE", "1") == "1",
        "OPTIN_SIGNIN_IP_RATE": _rate(e, "OPTIN_SIGNIN_IP_RATE", "20/300"),
        "OPTIN_SIGNIN_USER_RATE": _rate(e, "OPTIN_SIGNIN_USER_RATE", "5/300"),
        "OPTIN_OPEN_RATE": _rate(e, "OPTIN_OPEN_RATE", "60/60"),
        "OPTIN_SUBMIT_RATE": _rate(e, "OPTIN_SUBMIT_RATE", "10/600"),
        "OPTIN_TIMEZONE": _zone(e, "OPTIN_TIMEZONE", "Europe/Paris"),
        "OPTIN_RESOLVER_ID": e.get("OPTIN_RESOLVER_ID", "cm-store"),
        "OPTIN_POLICY_URL": e.get("OPTIN_POLICY_URL", "https://collective-mood.example/privacy"),
        "OPTIN_CONTROLLER": dict(CONTROLLER),
        "RETENTION_DAYS": env_int(e, "RETENTION_DAYS", 90, 1, what="a number of days"),
    }


SECONDS = "a number of seconds"
_RATE = re.compile(r"[1-9][0-9]{0,8}/[1-9][0-9]{0,8}")


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    """A "hits/seconds" limit, checked at start: a typo would otherwise fail every request."""
    value = env.get(name, default)
    if not _RATE.fullmatch(value):
        raise ConfigError(f'{name} must be "hits/seconds" such as "{default}", got {value!r}')
    return value


def _zone(env: Mapping[str, str], name: str, default: str) -> str:
    """An IANA time zone name (receipts and reports show local dates)."""
    value = env.get(name, default)
    try:
        ZoneInfo(value)
    except (ValueError, ZoneInfoNotFoundError):
        message = f"{name} must be a time zone such as {default!r}, got {value!r}"
        raise ConfigError(message) from None
    return value


def init_app(app: Flask) -> None:
    """Register the opt-in and rights pages on the store server."""
    from store_server.optin import auditor, rights_views, views
    from store_server.optin.pages import format_when

    for key, value in defaults().items():
        app.config.setdefault(key, value)
    app.extensions.setdefault("cm_directory", BuiltinDirectory())
    app.extensions.setdefault("cm_streaming", FixtureStreaming())
    tz = app.config["OPTIN_TIMEZONE"]
    app.add_template_filter(lambda v: format_when(v, tz), "receipt_date")
    app.register_blueprint(views.bp)
    app.register_blueprint(rights_views.bp)
    app.register_blueprint(auditor.bp)
