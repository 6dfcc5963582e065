"""The demo world: a hair salon (two chairs) and a VTC car, and three simulated subscribers.

alice shares her playlist, bob only his preferences, carol never opted in (she is not in the
database at all: her phone's identifiers are just noise to us). Re-running rotates device tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shapely.geometry import box
from sqlalchemy import select
from sqlalchemy.orm import Session

from store_server import services
from store_server.models import Device, EmitterKey, Merchant, Scanner, Subscriber

SALON_LOGIN = ("salon@demo.collective-mood.test", "demo-salon-2026")
CAR_LOGIN = ("vtc@demo.collective-mood.test", "demo-vtc-2026")

ALICE_PLAYLIST = {
    "id": "pl:alice:sunday-morning",
    "title": "Sunday Morning",
    "tracks": [
        {"id": "trk:1001", "title": "Golden Hour", "artist": "Lumen", "explicit": False},
        {"id": "trk:1002", "title": "Rue des Martyrs", "artist": "Les Nuits", "explicit": False},
        {"id": "trk:1003", "title": "Late Again", "artist": "Kid Ordinal", "explicit": True},
    ],
}


@dataclass
class DemoWorld:
    """Credentials and layout the demo harness needs (secrets in clear: shown once)."""

    scanners: dict[str, dict] = field(default_factory=dict)  # name -> venue, x, y, secret
    devices: dict[str, str] = field(default_factory=dict)  # device name -> token
    emitters: dict[str, tuple[bytes, int, int]] = field(
        default_factory=dict
    )  # name -> key, K, base
    subscribers: dict[str, str] = field(default_factory=dict)  # demo name -> public id
    merchant_keys: dict[str, bytes] = field(default_factory=dict)  # venue name -> pseudonym key


def seed_demo(db: Session, data_key: str) -> DemoWorld:
    """Create the demo world if absent and return its credentials (device tokens are rotated,
    since only their hashes are kept)."""
    if db.scalar(select(Merchant).where(Merchant.slug == "salon-meche")) is None:
        _create(db, data_key)
    world = DemoWorld()
    for s in db.scalars(select(Scanner)):
        if s.venue.merchant.slug in ("salon-meche", "vtc-leon"):
            world.scanners[s.name] = {
                "venue": s.venue.name,
                "x": s.x,
                "y": s.y,
                "secret": services.scanner_secret(data_key, s),
            }
            world.merchant_keys[s.venue.name] = s.venue.merchant.pseudonym_key
    for d in db.scalars(select(Device).where(Device.name.like("demo-%"))):
        world.devices[d.name] = services.issue_device_token(d)
    for sub in db.scalars(select(Subscriber).where(Subscriber.directory_id.like("demo:%"))):
        name = sub.directory_id.split(":", 1)[1]
        world.subscribers[name] = sub.public_id
        k = db.scalar(select(EmitterKey).where(EmitterKey.subscriber_id == sub.id))
        world.emitters[name] = (services.emitter_key(data_key, k), k.exponent, k.time_base)
    db.commit()
    return world


def _create(db: Session, data_key: str) -> None:
    salon = services.create_merchant(db, "salon-meche", "Salon Mèche Rebelle", "salon")
    car = services.create_merchant(db, "vtc-leon", "Léon VTC", "vtc")
    services.create_staff(db, SALON_LOGIN[0], SALON_LOGIN[1], "owner", salon)
    services.create_staff(db, CAR_LOGIN[0], CAR_LOGIN[1], "owner", car)

    sv = services.create_venue(db, salon, "Salon Mèche Rebelle — Oberkampf", "site")
    sv.area_code = "75111"
    chair1 = services.add_zone(
        db, sv, "chair-1", "chair", box(0.5, 0.5, 2.5, 2.5), enter_stable_s=2.0, exit_absent_s=4.0
    )
    chair2 = services.add_zone(
        db, sv, "chair-2", "chair", box(5.0, 0.5, 7.0, 2.5), enter_stable_s=2.0, exit_absent_s=4.0
    )
    services.add_scanner(db, data_key, sv, "demo-salon-scanner-1", 1.5, 1.5)
    services.add_scanner(db, data_key, sv, "demo-salon-scanner-2", 6.0, 1.5)
    services.add_device(db, sv, chair1, "demo-chair-1-speaker")
    services.add_device(db, sv, chair2, "demo-chair-2-speaker")

    cv = services.create_venue(db, car, "Berline AB-123-CD", "vehicle")
    cabin = services.add_zone(
        db, cv, "cabin", "cabin", box(0.0, 0.0, 3.0, 1.6), enter_stable_s=2.0, exit_absent_s=4.0
    )
    services.add_scanner(db, data_key, cv, "demo-car-scanner", 1.5, 0.8)
    services.add_device(db, cv, cabin, "demo-car-tablet")

    alice = services.create_subscriber(
        db,
        "demo:alice",
        "Alice",
        [ALICE_PLAYLIST],
        {"genres": {"pop": 0.5, "electro": 0.3, "jazz": 0.2}, "mood": "bright"},
        home_area="75111",
    )
    bob = services.create_subscriber(
        db,
        "demo:bob",
        "Bob",
        [{"id": "pl:bob:private", "title": "Bob's private mix", "tracks": []}],
        {"genres": {"rock": 0.6, "blues": 0.4}, "mood": "mellow"},
        home_area="93048",
    )
    for sub, share, stats in ((alice, "playlist", True), (bob, "preferences", False)):
        services.provision_emitter(db, data_key, sub)
        services.grant_consent(db, sub, None, share, stats, None)
    db.flush()
