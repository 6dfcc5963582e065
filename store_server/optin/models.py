"""Tables of the opt-in flow: single-use markers that make opt-in links and forms unreplayable."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from store_server.models import Base, utcnow


class UsedNonce(Base):
    """A consumed single-use link id or form nonce (random, never linked to a subscriber)."""

    __tablename__ = "optin_used_nonces"
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    used_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
