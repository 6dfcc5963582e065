"""Push to merchant devices end to end: signed sightings over HTTP, real Redis and SQL, real
python-socketio devices. Also the small world builder the other push tests use."""

from __future__ import annotations

import json
import queue
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from shapely.geometry import box
from sqlalchemy import select
from sqlalchemy.orm import Session

from beacons.eid import compute_eid
from store_server import jobs, outbox, rights, services
from store_server.crypto import pseudonym
from store_server.device_client import DeviceConnection
from store_server.models import Merchant, Subscriber, Zone
from store_server.occupancy import end_presence
from store_server.presence import PresenceEvent
from store_server.push import Occurrence, deliver
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.faults.support import wait_for
from tests.helpers import audit_actions, post_batch

pytestmark = [pytest.mark.e2e, pytest.mark.privacy]

TRACKS = [
    {"id": "trk:a1", "title": "Aube", "artist": "A", "explicit": False, "genre": "jazz"},
    {"id": "trk:a2", "title": "Brume", "artist": "A", "explicit": True, "genre": "rock"},
    {"id": "trk:a3", "title": "Cendre", "artist": "A", "explicit": False, "genre": "rock"},
    {"id": "trk:a4", "title": "Dune", "artist": "A", "explicit": False, "genre": "pop"},
]


@dataclass
class Person:
    """A consenting subscriber of a test world and the key of their emitter."""

    id: int
    public_id: str
    key: bytes
    scope: str
    name: str


@dataclass
class World:
    """A merchant with one venue: a scanner and some devices per zone, and its subscribers."""

    merchant_id: int
    merchant_key: bytes
    venue_id: int
    scanners: dict[str, tuple[str, str]] = field(default_factory=dict)
    devices: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)

    def pseudonym(self, who: str) -> str:
        """How this merchant sees a person."""
        return pseudonym(self.merchant_key, self.people[who].public_id)

    def token(self, zone: str, i: int = 0) -> str:
        """The token of the i-th device of a zone."""
        return self.devices[zone][i][1]


def build_world(
    app: Any,
    db: Session,
    zones: tuple[str, ...] = ("seat",),
    people: tuple[tuple[str, str], ...] = (("ann", "playlist"),),
    devices_per_zone: int = 1,
    rules: dict[str, Any] | None = None,
    exit_absent_s: float = 60.0,
    tracks: list[dict[str, Any]] | None = None,
) -> World:
    """Create a merchant world with no enter delay; people consent to this merchant only."""
    tag = secrets.token_hex(4)
    m = services.create_merchant(db, f"m-{tag}", f"Merchant {tag}", "salon")
    m.rules = rules or {}
    venue = services.create_venue(db, m, f"Venue {tag}", "site")
    world = World(m.id, m.pseudonym_key, venue.id)
    key = app.config["DATA_KEY"]
    for i, name in enumerate(zones):
        # Zones 20 m apart, each with its own scanner: a batch from a scanner is its zone.
        z = services.add_zone(
            db,
            venue,
            name,
            "chair",
            box(20 * i, 0, 20 * i + 2, 2),
            enter_stable_s=0.0,
            exit_absent_s=exit_absent_s,
        )
        scanner, secret = services.add_scanner(db, key, venue, f"sc-{tag}-{name}", 20 * i + 1, 1)
        world.scanners[name] = (scanner.name, secret)
        for k in range(devices_per_zone):
            d = services.add_device(db, venue, z, f"dev-{tag}-{name}-{k}")
            world.devices.setdefault(name, []).append((d.id, services.issue_device_token(d)))
    for name, scope in people:
        add_person(db, key, world, m, name, scope, tracks)
    db.commit()
    jobs.refresh_resolver(app)
    get_topology(app).invalidate()
    return world


def add_person(
    db: Session,
    data_key: str,
    world: World,
    merchant: Merchant,
    name: str,
    scope: str,
    tracks: list[dict[str, Any]] | None = None,
    valid_until: datetime | None = None,
) -> Person:
    """A subscriber with an emitter and a consent for this merchant (call refresh after)."""
    tag = secrets.token_hex(4)
    playlist = {
        "id": f"pl:{name}:{tag}",
        "title": f"{name} mix",
        "tracks": [{**t, "id": f"{t['id']}:{name}"} for t in (tracks or TRACKS)],
    }
    sub = services.create_subscriber(
        db,
        f"t:{tag}:{name}",
        f"{name.title()} Secretname",
        [playlist],
        {"genres": {"jazz": 0.5, "rock": 0.25, "pop": 0.25}, "mood": "calm"},
        home_area="75011",
    )
    _, key = services.provision_emitter(db, data_key, sub)
    services.grant_consent(db, sub, merchant, scope, False, valid_until)
    world.people[name] = Person(sub.id, sub.public_id, key, scope, name)
    return world.people[name]


def sightings(people: list[Person], t: float) -> list[dict[str, Any]]:
    """Strong sightings of these people at time t, right next to a scanner."""
    return [
        {
            "ts": t,
            "kind": "eid",
            "id": compute_eid(p.key, 10, int(t)).hex(),
            "rssi": -40,
            "tx_power": -20,
        }
        for p in people
    ]


def enter(url: str, world: World, zone: str, *names: str) -> None:
    """Make people enter a zone (no enter delay in test worlds)."""
    name, secret = world.scanners[zone]
    resp = post_batch(url, name, secret, sightings([world.people[n] for n in names], time.time()))
    assert resp.status_code == 200, resp.text


class Device:
    """A real device on the /device namespace (the reference client's connection) that records
    pushes, revokes and queues in arrival order and, if told, acks them."""

    def __init__(self, url: str, token: str, ack: bool = True) -> None:
        self.events: queue.Queue = queue.Queue()
        self.queues: queue.Queue = queue.Queue()
        self.conn = DeviceConnection(url, token, self._record, ack=ack)
        self.sio = self.conn.sio
        self.conn.connect()

    def _record(self, name: str, event: dict, duplicate: bool) -> None:
        event["received_at"] = time.monotonic()
        (self.queues if name == "queue" else self.events).put(event)

    def next(self, timeout: float = 10.0) -> dict:
        """The next push or revoke."""
        return self.events.get(timeout=timeout)

    def next_queue(self, timeout: float = 10.0) -> dict:
        """The next blended queue."""
        return self.queues.get(timeout=timeout)

    def sync(self) -> None:
        """A round trip: everything the server sent before has been received when it returns."""
        self.conn.sync()

    def drained(self) -> bool:
        """True when nothing else is waiting after a round trip."""
        self.sync()
        return self.events.empty() and self.queues.empty()

    def close(self) -> None:
        """Disconnect."""
        self.conn.close()


@pytest.fixture
def devices():  # type: ignore[no-untyped-def]
    """Connect devices and always disconnect them."""
    made: list[Device] = []

    def connect(url: str, token: str, ack: bool = True) -> Device:
        made.append(Device(url, token, ack))
        return made[-1]

    yield connect
    for d in made:
        d.close()


FORBIDDEN_PUSH_KEYS = {"name", "display_name", "email", "public_id", "directory_id", "taste"}


def test_payload_minimised_per_scope_with_expiry(app, live_server, db, devices):
    world = build_world(app, db, people=(("ann", "playlist"), ("bob", "preferences")))
    dev = devices(live_server.url, world.token("seat"))
    enter(live_server.url, world, "seat", "ann", "bob")
    got = {e["subscriber"]: e for e in (dev.next(), dev.next())}
    ann, bob = got[world.pseudonym("ann")], got[world.pseudonym("bob")]
    base = {"type", "scope", "subscriber", "zone", "expires_at", "at", "event_id", "received_at"}
    assert set(ann) == base | {"playlist"} and ann["scope"] == "playlist"
    assert set(ann["playlist"]) == {"ref", "title", "tracks"}
    assert all(set(t) <= {"id", "title", "artist", "explicit"} for t in ann["playlist"]["tracks"])
    assert len(ann["playlist"]["tracks"]) == 4
    assert set(bob) == base | {"preferences"} and bob["scope"] == "preferences"
    assert set(bob["preferences"]) <= {"genres", "mood"}
    assert bob["preferences"]["genres"] == {"jazz": 0.5, "rock": 0.25, "pop": 0.25}
    for e in (ann, bob):
        assert time.time() < e["expires_at"] <= time.time() + app.config["PUSH_TTL_S"]
        text = json.dumps(e)
        person = world.people["ann" if e is ann else "bob"]
        assert person.public_id not in text and "Secretname" not in text
        assert not FORBIDDEN_PUSH_KEYS & set(e)


def test_cross_merchant_isolation_and_unlinkable_pseudonyms(app, live_server, db, devices):
    a = build_world(app, db, people=(("eve", "playlist"),))
    b = build_world(app, db, people=())
    # The same person consents to merchant B too.
    b.people["eve"] = a.people["eve"]
    services.grant_consent(
        db,
        db.get(Subscriber, a.people["eve"].id),
        db.get(Merchant, b.merchant_id),
        "preferences",
        False,
        None,
    )
    db.commit()
    jobs.refresh_resolver(app)
    dev_a = devices(live_server.url, a.token("seat"))
    dev_b = devices(live_server.url, b.token("seat"))
    enter(live_server.url, b, "seat", "eve")
    at_b = dev_b.next()
    assert at_b["scope"] == "preferences" and at_b["subscriber"] == b.pseudonym("eve")
    assert b.pseudonym("eve") != a.pseudonym("eve")
    end_presence(app, a.people["eve"].id, "withdrawn")
    assert dev_b.next()["type"] == "revoke"
    # Merchant A's device heard nothing of the presence at B: no push, revoke or queue.
    assert dev_a.drained()


def test_withdrawal_while_connected_revokes_within_a_second(app, live_server, db, devices):
    world = build_world(app, db, people=(("wes", "playlist"),))
    dev = devices(live_server.url, world.token("seat"))
    enter(live_server.url, world, "seat", "wes")
    assert dev.next()["type"] == "push"
    assert dev.next_queue()["members"] == [world.pseudonym("wes")]
    services.withdraw_all(db, db.get(Subscriber, world.people["wes"].id))
    db.commit()
    jobs.refresh_resolver(app)
    started = time.monotonic()
    assert end_presence(app, world.people["wes"].id, "withdrawn") == 1
    revoke = dev.next(timeout=1.0)
    assert revoke["received_at"] - started < 1.0
    assert revoke["type"] == "revoke" and revoke["reason"] == "withdrawn"
    assert revoke["subscriber"] == world.pseudonym("wes")
    assert dev.next_queue(timeout=1.0)["members"] == []
    # Withdrawn: new sightings resolve to nobody, so nothing is pushed again.
    enter(live_server.url, world, "seat", "wes")
    assert dev.drained()


def test_reconnect_replays_missed_once_in_order_revokes_first(app, live_server, db, devices):
    people = (("ann", "playlist"), ("bob", "playlist"), ("cid", "preferences"))
    world = build_world(app, db, people=people)
    dev = devices(live_server.url, world.token("seat"))
    enter(live_server.url, world, "seat", "ann")
    assert dev.next()["subscriber"] == world.pseudonym("ann")
    dev.next_queue()
    dev.sync()  # the acks reached the server: ann's push is no longer pending
    dev.close()

    enter(live_server.url, world, "seat", "bob")
    enter(live_server.url, world, "seat", "cid")
    end_presence(app, world.people["ann"].id, "withdrawn")
    end_presence(app, world.people["bob"].id, "withdrawn")

    dev = devices(live_server.url, world.token("seat"), ack=False)
    first, second, third = dev.next(), dev.next(), dev.next()
    # Revokes first; bob's push was revoked meanwhile, so it never arrives; then cid's push.
    assert [(e["type"], e["subscriber"]) for e in (first, second, third)] == [
        ("revoke", world.pseudonym("ann")),
        ("revoke", world.pseudonym("bob")),
        ("push", world.pseudonym("cid")),
    ]
    assert first["event_id"] < second["event_id"]
    latest = dev.next_queue()
    assert latest["members"] == [world.pseudonym("cid")]  # only the newest queue
    assert dev.drained()
    dev.close()

    # Nothing was acked: the same events again, recognisable as duplicates by their ids.
    dev = devices(live_server.url, world.token("seat"))
    again = [dev.next(), dev.next(), dev.next()]
    assert [e["event_id"] for e in again] == [e["event_id"] for e in (first, second, third)]
    assert dev.next_queue()["event_id"] == latest["event_id"]
    assert dev.drained()
    dev.close()

    # Acked now: a reconnect gets nothing.
    dev = devices(live_server.url, world.token("seat"))
    assert dev.drained()


def test_blended_queue_follows_every_enter_and_exit(app, live_server, db, devices):
    rules = {"explicit": False, "veto": ["trk:a4:cy"], "volume_max": 60}
    people = (("al", "playlist"), ("bo", "preferences"), ("cy", "playlist"))
    world = build_world(app, db, people=people, rules=rules, devices_per_zone=2)
    speakers = [devices(live_server.url, world.token("seat", i)) for i in range(2)]
    al, bo, cy = (world.pseudonym(n) for n in ("al", "bo", "cy"))

    enter(live_server.url, world, "seat", "al")
    q = [s.next_queue()["queue"] for s in speakers]
    assert q[0] == q[1]
    assert [t["id"] for t in q[0]["tracks"]] == ["trk:a1:al", "trk:a3:al", "trk:a4:al"]
    assert q[0]["volume_max"] == 60 and q[0]["genres"] == {}

    enter(live_server.url, world, "seat", "bo")
    event = speakers[0].next_queue()
    assert event["members"] == sorted([al, bo])
    # bo only shares preferences: they steer the genres, jazz first, and no tracks of theirs.
    assert event["queue"]["genres"] == {"jazz": 0.5, "rock": 0.25, "pop": 0.25}
    assert all(t["by"] == al for t in event["queue"]["tracks"])
    assert event["queue"]["tracks"][0]["id"] == "trk:a1:al"

    enter(live_server.url, world, "seat", "cy")
    event = speakers[0].next_queue()
    owners = [t["by"] for t in event["queue"]["tracks"]]
    assert sorted(set(owners)) == sorted([al, cy])
    assert "trk:a4:cy" not in {t["id"] for t in event["queue"]["tracks"]}  # vetoed
    assert not any(t["explicit"] for t in event["queue"]["tracks"])
    # Interleaved: nobody gets two turns in a row while the other still has tracks.
    assert owners[:4] in ([al, cy, al, cy], [cy, al, cy, al])

    end_presence(app, world.people["al"].id, "withdrawn")
    event = speakers[0].next_queue()
    assert event["members"] == sorted([bo, cy])
    assert {t["by"] for t in event["queue"]["tracks"]} == {cy}
    for s in speakers:
        s.sync()


def test_disclosures_expire_when_the_consent_does(app, live_server, db, devices):
    world = build_world(app, db, people=())
    until = datetime.now(UTC) + timedelta(minutes=2)
    add_person(
        db,
        app.config["DATA_KEY"],
        world,
        db.get(Merchant, world.merchant_id),
        "kim",
        "preferences",
        valid_until=until,
    )
    db.commit()
    jobs.refresh_resolver(app)
    dev = devices(live_server.url, world.token("seat"))
    enter(live_server.url, world, "seat", "kim")
    # Well before the hour-long push TTL: what the person allowed ends with their consent.
    assert dev.next()["expires_at"] == pytest.approx(until.timestamp(), abs=0.01)
    assert dev.next_queue()["expires_at"] == pytest.approx(until.timestamp(), abs=0.01)


@dataclass
class Entered:
    """Someone who entered the seat, her push received by its device (a real connection)."""

    conn: DeviceConnection
    got: queue.Queue
    first: dict
    again: Occurrence  # her enter, as a retry would deliver it again
    subscriber: int


def _entered(app: Any, live_server: Any, db: Session, name: str) -> Entered:
    """A world where `name` entered the seat and its device got her push."""
    world = build_world(app, db, people=((name, "playlist"),))
    got: queue.Queue = queue.Queue()
    conn = DeviceConnection(live_server.url, world.token("seat"), lambda *e: got.put(e))
    conn.connect()
    enter(live_server.url, world, "seat", name)
    name_, first, duplicate = got.get(timeout=10)
    assert (name_, first["type"], duplicate) == ("event", "push", False)
    venue = get_topology(app).venue(world.venue_id)
    r, keys = get_redis(app), get_keys(app)
    sub = world.people[name].id
    state = json.loads(r.hget(keys.tracks(venue.id), str(sub)))
    event = PresenceEvent("enter", "seat", first["at"], state["p"]["since"])
    return Entered(conn, got, first, Occurrence(sub, venue, state["c"], event), sub)


def test_an_occurrence_delivered_again_is_recognised_as_a_duplicate(app, live_server, db):
    her = _entered(app, live_server, db, "dup")
    conn, got, first = her.conn, her.got, her.first
    try:
        # What the pending-events retry does after a delivery that failed half way: the same
        # enter, while its presence holds, delivered again.
        deliver(app, [her.again])
        conn.sync()
        pushes = [(e, dup) for name, e, dup in list(got.queue) if name == "event"]
        assert [dup for _, dup in pushes] == [True]
        (second, _dup) = pushes[0]
        assert first["event_id"] != second["event_id"] and first["at"] == second["at"]
        assert conn.duplicates == 1
    finally:
        conn.close()


def test_queues_read_only_the_zones_occupants(app, live_server, db, devices):
    """The occupant index follows enters and ends; a blended queue is built from the states it
    points to, and an entry whose state is gone or in another zone is read past."""
    world = build_world(app, db, zones=("seat", "sofa"), people=(("al", "playlist"),))
    r, keys = get_redis(app), get_keys(app)
    index = keys.occupants(world.venue_id)
    al = world.people["al"]
    sofa = devices(live_server.url, world.token("sofa"))

    enter(live_server.url, world, "seat", "al")
    assert wait_for(lambda: r.hgetall(index) == {str(al.id): "seat"}, 10)
    # Entries the states contradict: a subscriber whose state is gone, and al, whose state is
    # in the seat. Neither belongs in the sofa's queue.
    r.hset(index, mapping={"999999": "sofa", str(al.id): "sofa"})
    venue = get_topology(app).venue(world.venue_id)
    consent = json.loads(r.hget(keys.tracks(world.venue_id), str(al.id)))["c"]
    gone = PresenceEvent("exit", "sofa", time.time(), time.time() - 5)
    deliver(app, [Occurrence(al.id, venue, consent, gone, True)])
    assert sofa.next_queue()["members"] == []

    end_presence(app, al.id, "withdrawn")
    assert str(al.id) not in r.hgetall(index)
    assert r.hget(keys.tracks(world.venue_id), str(al.id)) is None


@pytest.mark.consent
def test_an_enter_delivered_after_its_withdrawal_is_not_pushed_behind_the_revoke(
    app, live_server, db
):
    # The delivery checked that her presence held, then read her profile; meanwhile she
    # withdrew and her revoke went out. Appended now, the push would sit behind the revoke
    # and be replayed to the device after it.
    her = _entered(app, live_server, db, "wd")
    conn, got, sub = her.conn, her.got, her.subscriber
    try:
        assert rights.withdraw(app, sub) == 1
        revoke = _next_event(got)
        assert (revoke["type"], revoke["reason"]) == ("revoke", "withdrawn")
        deliver(app, [her.again])
        conn.sync()
        assert [e for name, e, _dup in list(got.queue) if name == "event"] == []
        r, keys = get_redis(app), get_keys(app)
        device = her.again.venue.devices_by_zone["seat"][0]
        assert all(e["type"] != "push" for e in outbox.pending(r, keys, device, time.time()))
        assert audit_actions(app, sub) == ["push", "revoke"]
    finally:
        conn.close()


def _next_event(got: queue.Queue) -> dict:
    """The next push or revoke a device received (its blended queues passed over)."""
    while True:
        name, event, _duplicate = got.get(timeout=10)
        if name == "event":
            return event


@pytest.mark.parametrize("ended_by", ["absent", "withdrawn"])
def test_a_zone_redrawn_away_while_occupied_still_revokes_on_its_devices(
    app, live_server, db, devices, ended_by
):
    # The owner uploads zones without the seat (left out, or renamed) while ann sits there: the
    # seat's device is bound to no zone any more, and her exit's revoke, addressed to the
    # seat's devices as the zones are now, reached nobody. The device kept playing her
    # playlist, and its outbox kept her push and queue to replay, for the push's hour.
    world = build_world(app, db, zones=("seat", "sofa"), exit_absent_s=1.0)
    dev = devices(live_server.url, world.token("seat"), ack=False)
    enter(live_server.url, world, "seat", "ann")
    assert dev.next()["type"] == "push"
    assert dev.next_queue()["members"] == [world.pseudonym("ann")]
    seat = db.scalars(
        select(Zone).where(Zone.venue_id == world.venue_id, Zone.name == "seat")
    ).one()
    db.delete(seat)  # as the portal's zone upload does with a zone the new file leaves out
    db.commit()
    get_topology(app).invalidate()
    ann = world.people["ann"]
    if ended_by == "withdrawn":
        services.withdraw_all(db, db.get(Subscriber, ann.id))
        db.commit()
        jobs.refresh_resolver(app)
        end_presence(app, ann.id, "withdrawn")
    # else: she is not heard again, and the jobs' sweeper ends her presence.
    revoke = dev.next(timeout=10)
    assert (revoke["type"], revoke["subscriber"]) == ("revoke", world.pseudonym("ann"))
    assert revoke["reason"] == ended_by
    assert wait_for(lambda: audit_actions(app, ann.id) == ["push", "revoke"], 10)
    device = world.devices["seat"][0][0]
    # Never acked: what a reconnect would replay is the revoke, not her push or queue.
    pending = outbox.pending(get_redis(app), get_keys(app), device, time.time())
    assert [e["type"] for e in pending] == ["revoke"]
