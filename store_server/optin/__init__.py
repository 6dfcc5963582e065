"""Subscriber opt-in (QR), consent receipts and data-protection rights."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the opt-in and rights pages on the store server."""
