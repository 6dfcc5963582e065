"""Opt-in links: signed, expiring tokens bound to a merchant and venue, as the portal's QR shows.

token = URLSafeTimedSerializer(SECRET_KEY, salt="optin").dumps({"m": merchant_id, "v": venue_id})
and optionally "j": a random id that makes the link single-use (a QR shown to one customer).
"""

from __future__ import annotations

import io
import re
import secrets
from dataclasses import dataclass

import segno
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

SALT = "optin"
JTI = re.compile(r"^[0-9a-f]{16,64}\Z")


class LinkError(Exception):
    """An opt-in link that cannot be used; `kind` is expired, invalid or replayed."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True)
class OptinLink:
    """A verified opt-in link's content."""

    merchant_id: int
    venue_id: int
    jti: str | None = None


def make_token(
    secret_key: str, merchant_id: int, venue_id: int, *, single_use: bool = False
) -> str:
    """A signed opt-in token (the part after /optin/)."""
    payload: dict[str, object] = {"m": merchant_id, "v": venue_id}
    if single_use:
        payload["j"] = secrets.token_hex(16)
    return URLSafeTimedSerializer(secret_key, salt=SALT).dumps(payload)


def make_link(
    base_url: str, secret_key: str, merchant_id: int, venue_id: int, *, single_use: bool = False
) -> str:
    """The full opt-in URL for a QR code."""
    token = make_token(secret_key, merchant_id, venue_id, single_use=single_use)
    return f"{base_url.rstrip('/')}/optin/{token}"


def read_token(secret_key: str, token: str, max_age_s: int) -> OptinLink:
    """Verify a token; LinkError("expired") or LinkError("invalid") when it cannot be used."""
    if not isinstance(token, str) or not 10 <= len(token) <= 400:
        raise LinkError("invalid")
    try:
        data = URLSafeTimedSerializer(secret_key, salt=SALT).loads(token, max_age=max_age_s)
    except SignatureExpired:
        raise LinkError("expired") from None
    except BadSignature:
        raise LinkError("invalid") from None
    if not isinstance(data, dict) or set(data) - {"m", "v", "j"}:
        raise LinkError("invalid")
    m, v, j = data.get("m"), data.get("v"), data.get("j")
    if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in (m, v)):
        raise LinkError("invalid")
    if j is not None and not (isinstance(j, str) and JTI.match(j)):
        raise LinkError("invalid")
    return OptinLink(m, v, j)  # type: ignore[arg-type]


def qr_png(url: str, scale: int = 6) -> bytes:
    """The link as a PNG QR code."""
    out = io.BytesIO()
    segno.make(url, error="m", micro=False).save(out, kind="png", scale=scale, border=4)
    return out.getvalue()


def qr_svg(url: str, scale: int = 6) -> bytes:
    """The link as an SVG QR code."""
    out = io.BytesIO()
    segno.make(url, error="m", micro=False).save(out, kind="svg", scale=scale, border=4)
    return out.getvalue()
