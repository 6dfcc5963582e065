"""SQL system of record (SQLAlchemy 2): merchants, venues, zones, scanners, devices, subscribers,
emitter keys, consents, visits and the disclosure audit log. Schema changes go through Alembic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from shapely.geometry import shape
from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    and_,
    false,
    or_,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

# Every id column is INTEGER, 32-bit signed on PostgreSQL: a larger id in a query is an error
# there ("integer out of range"), not a row that is missing. Ids from outside are checked first.
MAX_ID = 2**31 - 1


def utcnow() -> datetime:
    """Timezone-aware now, the only clock models use."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base for every table."""

    type_annotation_map: ClassVar[dict] = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Merchant(Base):
    """An affiliated business (salon, VTC driver, shop, cinema)."""

    __tablename__ = "merchants"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="active")
    # Key of the per-merchant pseudonym HMAC: the same subscriber looks different to two merchants.
    pseudonym_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    rules: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    venues: Mapped[list[Venue]] = relationship(back_populates="merchant")


class StaffUser(Base):
    """A person who signs in to the portal: merchant owner/staff, programme operator or auditor."""

    __tablename__ = "staff_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    merchant_id: Mapped[int | None] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Venue(Base):
    """A fixed site or a vehicle, with its own local metric frame."""

    __tablename__ = "venues"
    id: Mapped[int] = mapped_column(primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # site | vehicle
    area_code: Mapped[str | None] = mapped_column(String(16))
    calibration: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    merchant: Mapped[Merchant] = relationship(back_populates="venues")
    zones: Mapped[list[Zone]] = relationship(back_populates="venue", cascade="all, delete-orphan")
    scanners: Mapped[list[Scanner]] = relationship(
        back_populates="venue", cascade="all, delete-orphan"
    )


class Zone(Base):
    """A polygon in the venue's metric frame (chair, cabin, shop area) with presence timings."""

    __tablename__ = "zones"
    __table_args__ = (UniqueConstraint("venue_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # chair | cabin | area
    polygon: Mapped[dict[str, Any]] = mapped_column(JSON)  # GeoJSON geometry
    enter_stable_s: Mapped[float] = mapped_column(Float, default=3.0)
    exit_absent_s: Mapped[float] = mapped_column(Float, default=8.0)
    max_radius_m: Mapped[float] = mapped_column(Float, default=4.0)
    venue: Mapped[Venue] = relationship(back_populates="zones")

    @validates("polygon")
    def _valid_polygon(self, _key: str, value: dict[str, Any]) -> dict[str, Any]:
        geom = shape(value)
        if geom.geom_type != "Polygon" or not geom.is_valid or geom.area <= 0:
            raise ValueError("zone polygon must be a valid, non-empty Polygon")
        return value

    @validates("enter_stable_s", "exit_absent_s", "max_radius_m")
    def _valid_timing(self, key: str, value: float) -> float:
        # Entering may be immediate (0 s), but an exit delay or a radius of 0 ends or refuses a
        # presence the moment it starts, and inf keeps a departed visitor present forever.
        number = isinstance(value, int | float) and not isinstance(value, bool)
        low, ok = (">= 0", number and 0 <= value < float("inf"))
        if key != "enter_stable_s":
            low, ok = ("> 0", number and 0 < value < float("inf"))
        if not ok:
            raise ValueError(f"zone {key} must be a finite number {low}, got {value!r}")
        return float(value)


class Scanner(Base):
    """A BLE scanner daemon at a known position; its shared secret is encrypted at rest."""

    __tablename__ = "scanners"
    id: Mapped[int] = mapped_column(primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64), unique=True)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    secret_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # It has heartbeated at least once (migration 0006): kept here, not only in Redis, so that a
    # Redis that lost its data still judges it silent if it never reports again
    # (scanner_health).
    reports_health: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    venue: Mapped[Venue] = relationship(back_populates="scanners")


class Device(Base):
    """A merchant playback device bound to one zone; only a hash of its token is kept."""

    __tablename__ = "devices"
    id: Mapped[int] = mapped_column(primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id", ondelete="CASCADE"))
    zone_id: Mapped[int | None] = mapped_column(ForeignKey("zones.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    paired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Subscriber(Base):
    """A consenting premium subscriber under a pseudonymous id, with a streaming profile."""

    __tablename__ = "subscribers"
    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(36), unique=True)
    directory_id: Mapped[str] = mapped_column(String(128), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    playlists: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    taste: Mapped[dict[str, Any]] = mapped_column(default=dict)
    home_area: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EmitterKey(Base):
    """An Eddystone-EID identity key provisioned to a phone or wearable (encrypted at rest)."""

    __tablename__ = "emitter_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    key_enc: Mapped[bytes] = mapped_column(LargeBinary)
    exponent: Mapped[int] = mapped_column(Integer, default=10)
    time_base: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Consent(Base):
    """One consent: presence at a merchant (or all), what is shared, statistics, validity."""

    __tablename__ = "consents"
    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    merchant_id: Mapped[int | None] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    share: Mapped[str] = mapped_column(String(16))  # playlist | preferences
    statistics: Mapped[bool] = mapped_column(Boolean, default=False)
    valid_from: Mapped[datetime] = mapped_column(default=utcnow)
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    receipt_id: Mapped[str] = mapped_column(String(36), unique=True)
    receipt: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Visit(Base):
    """A completed presence, kept only under statistics consent and purged after retention."""

    __tablename__ = "visits"
    # One row per presence: an exit delivered twice (a delivery taken over once its claim
    # lapsed) must not count the visit twice (migration 0004).
    __table_args__ = (
        Index("uq_visits_presence", "subscriber_id", "venue_id", "zone", "started_at", unique=True),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id", ondelete="CASCADE"))
    zone: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    dwell_s: Mapped[float] = mapped_column(Float)


def statistics_cover() -> ColumnElement[bool]:
    """A Visit and a Consent that lets it feed reports: a statistics consent covering its
    merchant (or all) from its start to its end, never withdrawn. Reports read only such visits
    (analytics.job) and retention keeps only them (retention.purge): one definition for both."""
    return and_(
        Consent.subscriber_id == Visit.subscriber_id,
        Consent.statistics.is_(True),
        Consent.withdrawn_at.is_(None),
        or_(Consent.merchant_id.is_(None), Consent.merchant_id == Visit.merchant_id),
        Consent.valid_from <= Visit.started_at,
        or_(Consent.valid_until.is_(None), Consent.valid_until >= Visit.ended_at),
    )


class AuditEntry(Base):
    """A disclosure to a merchant device, or a tombstone after erasure; subscribers read theirs."""

    __tablename__ = "audit_log"
    # One row per device event: the journal's entries may be written twice, inline and by the
    # jobs (migration 0005). NULLs differ, so tombstones and deleted devices' rows are free.
    __table_args__ = (Index("uq_audit_device_event", "device_id", "event_id", unique=True),)
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    action: Mapped[str] = mapped_column(String(16))  # push | revoke | erased
    pseudonym: Mapped[str | None] = mapped_column(String(32))
    merchant_id: Mapped[int | None] = mapped_column(ForeignKey("merchants.id", ondelete="SET NULL"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
    scope: Mapped[str | None] = mapped_column(String(16))
    receipt_id: Mapped[str | None] = mapped_column(String(36))
    event_id: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(32))
