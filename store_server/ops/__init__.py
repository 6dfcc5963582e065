"""Operations: metrics, readiness, the OpenAPI document and the doctor."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register operational endpoints on the store server."""
