"""Composition root: one process serving the store server and the merchant portal.

The store server never imports the portal; only this module knows both. In production they can
run as separate processes sharing SQL and the Socket.IO Redis message queue.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

import merchant_portal
from store_server.app import create_app
from store_server.logs import configure


def build_app(config: dict[str, Any] | None = None) -> Flask:
    """The store server app with the merchant portal mounted at /portal."""
    app = create_app(config)
    merchant_portal.init_app(app)
    # Behind nginx (docker/compose.yaml) every request comes from the proxy: trust that many
    # hops of X-Forwarded-For/-Proto, so per-address throttles see the real client. Never set
    # without a proxy that overwrites those headers, or clients could choose their address.
    hops = int(app.config.get("PROXY_HOPS") or os.environ.get("PROXY_HOPS") or 0)
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    if not app.config.get("TESTING"):
        configure(app.config["LOG_LEVEL"])
    return app
