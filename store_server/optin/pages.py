"""Rendering helpers shared by the subscriber pages: translated templates and clear error pages."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from flask import Response, make_response, render_template

from store_server.optin.i18n import translate
from store_server.optin.web import language, load_session


def render(template: str, code: int = 200, **ctx: Any) -> Response:
    """A page in the visitor's language, with the CSRF token at hand."""
    lang = language()
    html = render_template(
        template,
        lang=lang,
        t=partial(translate, lang),
        csrf_token=load_session().csrf,
        **ctx,
    )
    resp = make_response(html, code)
    resp.headers["Content-Type"] = "text/html; charset=utf-8"
    return resp


def message(status: int, heading: str, body: str, **kw: Any) -> Response:
    """A plain page that explains what went wrong (a 4xx, never a stack trace)."""
    return render("optin/message.html", status, heading=heading, body=body, kw=kw)


def format_when(value: object, tz: str = "Europe/Paris") -> str:
    """A timestamp (epoch seconds or datetime) as local date and time for the pages."""
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if not isinstance(value, datetime):
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # SQLite drops the zone; values are stored as UTC
    return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M") + f" ({tz})"
