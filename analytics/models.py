"""Stored reports and the privacy-budget releases they were charged to (migration 0003)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from store_server.models import Base, utcnow


class Report(Base):
    """One merchant's report for one fixed week, as the portal shows it (body is the bundle)."""

    __tablename__ = "reports"
    # one report per period, and final: a re-run that would change it is refused (analytics.job),
    # since two versions of one week differ by exactly the people who withdrew in between
    __table_args__ = (UniqueConstraint("merchant_id", "period_start", "kind"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    merchant_id: Mapped[int] = mapped_column(
        ForeignKey("merchants.id", ondelete="CASCADE"), index=True
    )
    period_start: Mapped[date] = mapped_column(Date)  # a Monday, in the report's time zone
    period_end: Mapped[date] = mapped_column(Date)  # the next Monday (exclusive)
    kind: Mapped[str] = mapped_column(String(32))
    k: Mapped[int] = mapped_column(Integer)
    epsilon: Mapped[float] = mapped_column(Float)  # 0: exact k-anonymous, no noise
    delta: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


class PrivacyRelease(Base):
    """A week released for a merchant and the (epsilon, delta) it spent; never deleted."""

    __tablename__ = "privacy_releases"
    # the database, not only the job, refuses a second release of a window (two concurrent runs)
    __table_args__ = (UniqueConstraint("merchant_id", "window_start"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    merchant_id: Mapped[int] = mapped_column(
        ForeignKey("merchants.id", ondelete="CASCADE"), index=True
    )
    window_start: Mapped[date] = mapped_column(Date)
    window_end: Mapped[date] = mapped_column(Date)
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
