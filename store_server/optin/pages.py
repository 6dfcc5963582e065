"""Rendering helpers shared by the subscriber pages: translated templates and clear error pages."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from flask import Response, make_response, render_template, request, url_for

from store_server.lang_switch import language_switch
from store_server.optin.i18n import translate
from store_server.optin.web import LANGS, language, load_session

# Where the language switch of a page that only a POST renders goes (its URL refuses a GET).
SWITCH_FALLBACK = {"rights": "rights.dashboard", "auditor": "auditor.index"}


def switch_url(lang: str) -> str:
    """This page in the other language (lang_switch.language_switch); a page only a form's POST
    renders switches to the page the form belongs to."""
    other = next(x for x in LANGS if x != lang)

    def form_page() -> str:
        token = (request.view_args or {}).get("token")
        if request.blueprint == "optin" and isinstance(token, str):
            return url_for("optin.landing", token=token)
        return url_for(SWITCH_FALLBACK.get(request.blueprint or "", "rights.dashboard"))

    return language_switch(other, form_page)


def render(template: str, code: int = 200, **ctx: Any) -> Response:
    """A page in the visitor's language, with the CSRF token at hand."""
    lang = language()
    html = render_template(
        template,
        lang=lang,
        t=partial(translate, lang),
        csrf_token=load_session().csrf,
        lang_switch=switch_url(lang),
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
