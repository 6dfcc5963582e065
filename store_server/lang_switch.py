"""The language switch's link, shared by the subscriber pages and the merchant portal: this page
in another language, or, for a page only a form's POST renders, the page that form is on."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from flask import current_app, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect


def takes_get(path: str) -> bool:
    """Whether this app serves `path` to a GET (a form's POST-only URL does not: a 405)."""
    try:
        current_app.url_map.bind_to_environ(request.environ).match(path, method="GET")
    except (HTTPException, RequestRedirect):
        return False
    return True


def language_switch(code: str, fallback: Callable[[], str]) -> str:
    """This page with ?lang=code, its other arguments kept; when a form's POST rendered it and
    its URL takes no GET, `fallback()` (the page the form belongs to) instead, never a 405."""
    page, args = f"{request.script_root}{request.path}", request.args.to_dict()
    if request.method != "GET":
        args = {}  # a form's answer: its query string was the form's, not a page's
        if not takes_get(request.path):
            page = fallback()
    return f"{page}?{urlencode({**args, 'lang': code})}"
