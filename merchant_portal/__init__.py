"""Merchant portal: the tablet web app, a Flask blueprint mounted by the composition root."""

from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("portal", __name__, url_prefix="/portal", template_folder="templates")


@bp.get("/")
def index() -> str:
    """Portal home."""
    return "Collective Mood merchant portal"


def init_app(app: Flask) -> None:
    """Mount the portal on a store server app."""
    app.register_blueprint(bp)
