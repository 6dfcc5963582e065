"""Composition root: one process serving the store server and the merchant portal.

The store server never imports the portal; only this module knows both. In production they can
run as separate processes sharing SQL and the Socket.IO Redis message queue.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

import merchant_portal
from store_server.app import create_app
from store_server.logs import configure


def build_app(config: dict[str, Any] | None = None) -> Flask:
    """The store server app with the merchant portal mounted at /portal."""
    app = create_app(config)
    merchant_portal.init_app(app)
    if not app.config.get("TESTING"):
        configure(app.config["LOG_LEVEL"])
    return app
