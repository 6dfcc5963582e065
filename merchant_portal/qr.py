"""The opt-in QR: a signed, expiring link to the store server's opt-in page, drawn as inline SVG."""

from __future__ import annotations

import segno
from flask import Flask, has_request_context, request
from itsdangerous import URLSafeTimedSerializer
from markupsafe import Markup

OPTIN_SALT = "optin"


def optin_link(app: Flask, merchant_id: int, venue_id: int) -> str:
    """Absolute URL of the opt-in page for this venue, signed (the opt-in page checks its age)."""
    token = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=OPTIN_SALT).dumps(
        {"m": merchant_id, "v": venue_id}
    )
    # Phones scanning the code need an absolute URL; behind a proxy, PUBLIC_BASE_URL says which.
    base = app.config.get("PUBLIC_BASE_URL") or (request.host_url if has_request_context() else "")
    return f"{base.rstrip('/')}/optin/{token}"


def qr_svg(data: str) -> Markup:
    """An inline, scalable SVG QR code (no fixed size: CSS sizes it to the screen)."""
    code = segno.make(data, error="m", micro=False)
    svg = code.svg_inline(scale=1, border=2, omitsize=True, svgclass="qr", lineclass="qr-dark")
    return Markup(svg)  # noqa: S704 - segno's own SVG output, the data is only encoded in it
