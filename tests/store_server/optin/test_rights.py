"""Rights over HTTP against a live server: withdrawal reaches the device within a second; the
disclosure history and the export show what was sent; erasure leaves no trace anywhere."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select

from store_server import resolver
from store_server.crypto import pseudonym
from store_server.models import AuditEntry, Consent, Merchant, Subscriber
from store_server.redis_store import get_keys
from store_server.sessions import get_registry, subscriber_principal
from tests.helpers import redis_dump, sql_dump
from tests.store_server.optin.helpers import (
    Device,
    csrf,
    make_account,
    make_live_shop,
    make_shop,
    new_client,
    opt_in,
    provisioning_doc,
    sighted,
    token_for,
)

pytestmark = pytest.mark.consent


def _present_on_device(app, live_server, live, client, user, pw, **choices):  # type: ignore[no-untyped-def]
    resp = opt_in(client, token_for(app, live.shop), user, pw, **choices)
    assert resp.status_code == 200, resp.text
    doc = provisioning_doc(resp.text)
    device = Device(live_server.url, live.device_token)
    sighted(live_server.url, live, doc.identity_key, doc.exponent, doc.time_base)
    push = device.next()
    assert push["type"] == "push"
    return device, push, doc


def test_withdraw_reaches_the_device_within_a_second(app, live_server, db, redis):
    live = make_live_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    device, push, doc = _present_on_device(app, live_server, live, client, user, pw)
    try:
        assert push["scope"] == "playlist" and push["playlist"]
        page = client.get("/me/")
        assert "withdraw-all" in page.text
        started = time.monotonic()
        resp = client.post("/me/withdraw-all", data={"csrf_token": csrf(page.text)})
        assert resp.status_code == 303
        revoke = device.next(timeout=5)
        assert revoke["type"] == "revoke" and revoke["subscriber"] == push["subscriber"]
        assert revoke["reason"] == "withdrawn"
        assert revoke["_received"] - started < 1.0
    finally:
        device.close()
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    consents = db.scalars(select(Consent).where(Consent.subscriber_id == sub.id)).all()
    assert all(c.withdrawn_at is not None for c in consents)
    # No identifier of hers resolves any more, and she is present nowhere.
    from beacons.eid import compute_eid

    eid = compute_eid(doc.identity_key, doc.exponent, int(time.time()) - doc.time_base).hex()
    field = resolver.lookup_key(resolver.lookup_secret(app.config["DATA_KEY"]), eid)
    assert redis.hget(get_keys(app).resolver(), field) is None
    assert not [
        m for m in redis.zrange(get_keys(app).last_seen(), 0, -1) if m.endswith(f":{sub.id}")
    ]
    # The dashboard shows it withdrawn; the history shows the push and the revoke.
    assert "withdrawn" in client.get("/me/?lang=en").text
    history = client.get("/me/disclosures?lang=en").text
    assert 'class="push"' in history and 'class="revoke"' in history


def _next_of(device: Device, kind: str) -> dict:
    """The next event of one type (the zone's queue updates come in between)."""
    while (event := device.next(timeout=5))["type"] != kind:
        pass
    return event


def test_an_answer_for_all_merchants_given_here_applies_here(app, live_server, db):
    live = make_live_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    device, push, doc = _present_on_device(app, live_server, live, client, user, pw)
    try:
        assert push["scope"] == "playlist"
        # At the same counter she now says: only my preferences, at every merchant.
        resp = opt_in(
            client, token_for(app, live.shop), user, pw, presence="all", share="preferences"
        )
        assert resp.status_code == 200, resp.text
        revoke = _next_of(device, "revoke")
        assert revoke["subscriber"] == push["subscriber"]
        sighted(live_server.url, live, doc.identity_key, doc.exponent, doc.time_base)
        again = _next_of(device, "push")
        assert again["scope"] == "preferences"
        assert "playlist" not in again
    finally:
        device.close()
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    live_ones = db.scalars(
        select(Consent).where(Consent.subscriber_id == sub.id, Consent.withdrawn_at.is_(None))
    ).all()
    assert [(c.merchant_id, c.share) for c in live_ones] == [(None, "preferences")]


def test_withdraw_one_keeps_the_other(app, db):
    live = make_live_shop(app)
    elsewhere = make_live_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    opt_in(client, token_for(app, live.shop), user, pw)
    opt_in(client, token_for(app, elsewhere.shop), user, pw, presence="all", share="preferences")
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    one, everywhere = db.scalars(
        select(Consent).where(Consent.subscriber_id == sub.id).order_by(Consent.id)
    ).all()
    page = client.get("/me/")
    resp = client.post(f"/me/consents/{one.id}/withdraw", data={"csrf_token": csrf(page.text)})
    assert resp.status_code == 303
    db.expire_all()
    assert db.get(Consent, one.id).withdrawn_at is not None
    assert db.get(Consent, everywhere.id).withdrawn_at is None
    # Someone else's consent cannot be withdrawn by id.
    other = new_client(app)
    ou, op = make_account(app)
    opt_in(other, token_for(app, live.shop), ou, op)
    page = other.get("/me/")
    resp = other.post(
        f"/me/consents/{everywhere.id}/withdraw", data={"csrf_token": csrf(page.text)}
    )
    assert resp.status_code == 404
    db.expire_all()
    assert db.get(Consent, everywhere.id).withdrawn_at is None


def test_export_is_one_document_with_everything(app, live_server, db):
    live = make_live_shop(app)
    user, pw = make_account(app, "Export Person")
    client = new_client(app)
    device, push, _doc = _present_on_device(app, live_server, live, client, user, pw)
    device.close()
    resp = client.get("/me/export.json")
    assert resp.status_code == 200 and "attachment" in resp.headers["Content-Disposition"]
    doc = json.loads(resp.text)
    assert doc["profile"]["display_name"] == "Export Person"
    assert doc["profile"]["home_area"] == "75111" and doc["profile"]["playlists"]
    [consent] = doc["consents"]
    assert consent["status"] == "active" and consent["receipt"]["jws"].count(".") == 2
    assert consent["merchant"] == live.shop.name
    [disclosure] = doc["disclosures"]
    assert disclosure["action"] == "push" and disclosure["pseudonym"] == push["subscriber"]
    assert disclosure["device"].endswith("-speaker") and disclosure["merchant"] == live.shop.name
    assert doc["emitters"] and "identity_key" not in json.dumps(doc["emitters"])
    assert new_client(app).get("/me/export.json").status_code == 303


@pytest.mark.privacy
def test_export_says_where_she_is_being_tracked_now(app, live_server, db):
    live = make_live_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    device, _push, _doc = _present_on_device(app, live_server, live, client, user, pw)
    device.close()
    # Her live presence is personal data the store holds (in Redis): the export shows it.
    [here] = client.get("/me/export.json").get_json()["presence_now"]
    assert here["merchant"] == live.shop.name and here["venue"] == f"{live.shop.name} site"
    assert here["zone"] == "chair-1" and here["since"] and here["last_heard"]
    page = client.get("/me/")
    assert client.post("/me/withdraw-all", data={"csrf_token": csrf(page.text)}).status_code == 303
    assert client.get("/me/export.json").get_json()["presence_now"] == []


@pytest.mark.privacy
@pytest.mark.parametrize("share", ["playlist", "preferences"])
def test_receipt_names_what_the_merchant_device_receives(app, live_server, db, share):
    live = make_live_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    device, push, _doc = _present_on_device(app, live_server, live, client, user, pw, share=share)
    device.close()
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    consent = db.scalar(select(Consent).where(Consent.subscriber_id == sub.id))
    purposes = consent.receipt["receipt"]["services"][0]["purposes"]
    [to_merchant] = [p for p in purposes if p["thirdPartyDisclosure"]]
    assert to_merchant["thirdPartyName"] == live.shop.name
    # Every field about her that the device got is a category the receipt says it discloses.
    category = {
        "subscriber": "Pseudonym (different at each merchant)",
        "zone": "Presence (zone, time)",
        "at": "Presence (zone, time)",
        "playlist": "Playlist",
        "preferences": "Musical preferences",
    }
    about_her = set(push) - {"type", "scope", "expires_at", "event_id", "_received"}
    assert about_her <= set(category), about_her
    assert {category[f] for f in about_her} <= set(to_merchant["piiCategory"])


def test_erasure_leaves_only_a_tombstone(app, live_server, db, redis):
    live = make_live_shop(app)
    user, pw = make_account(app, "Zoé Effacée")
    client = new_client(app)
    # The device stays offline after the push: its outbox keeps events about her until erasure.
    device, push, doc = _present_on_device(app, live_server, live, client, user, pw)
    device.close()
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    sid, public_id = sub.id, sub.public_id
    receipt_ids = [
        c.receipt_id for c in db.scalars(select(Consent).where(Consent.subscriber_id == sid))
    ]
    pseudonyms = [pseudonym(m.pseudonym_key, public_id) for m in db.scalars(select(Merchant))]
    assert push["subscriber"] in pseudonyms
    redis.xadd(
        get_keys(app).outbox(live.device_id),
        {"e": json.dumps({"type": "push", "subscriber": push["subscriber"]})},
    )
    tombstones_before = (
        db.scalar(
            select(AuditEntry.id)
            .where(AuditEntry.action == "erased")
            .order_by(AuditEntry.id.desc())
            .limit(1)
        )
        or 0
    )

    page = client.get("/me/")
    refused = client.post("/me/erase", data={"csrf_token": csrf(page.text)})
    assert refused.status_code == 400  # the confirmation box was not ticked
    resp = client.post("/me/erase", data={"csrf_token": csrf(page.text), "confirm": "yes"})
    assert resp.status_code == 200 and 'id="message-heading"' in resp.text

    from beacons.eid import compute_eid

    eids = [
        compute_eid(doc.identity_key, doc.exponent, int(time.time()) + d - doc.time_base).hex()
        for d in range(-3600, 3600, 2**doc.exponent)
    ]
    needles = [
        public_id,
        f"dir:{user}",
        user,
        "Zoé Effacée",
        doc.identity_key.hex(),
        *receipt_ids,
        *pseudonyms,
        *eids,
    ]
    db.expire_all()
    sql = sql_dump(db)
    live_redis = redis_dump(redis, get_keys(app).pattern())
    for needle in needles:
        assert needle not in sql, needle
        assert needle not in live_redis, needle
    # Subscriber ids appear in Redis as hash fields and set members: none is hers.
    for venue_key in redis.scan_iter(match=get_keys(app).tracks(live.shop.venue_id)):
        assert str(sid) not in redis.hkeys(venue_key)
    assert str(sid) not in redis.hkeys(get_keys(app).occupants(live.shop.venue_id))
    assert not [m for m in redis.zrange(get_keys(app).last_seen(), 0, -1) if m.endswith(f":{sid}")]
    assert db.get(Subscriber, sid) is None
    assert db.scalar(select(AuditEntry).where(AuditEntry.subscriber_id == sid)) is None
    tomb = db.scalar(
        select(AuditEntry).where(AuditEntry.action == "erased", AuditEntry.id > tombstones_before)
    )
    assert tomb is not None and tomb.subscriber_id is None and tomb.pseudonym is None
    assert tomb.merchant_id is None and tomb.device_id is None and tomb.receipt_id is None
    # Her sign-in counter (keyed by an HMAC of her username) went with her.
    from store_server.optin.web import _limit_key

    assert redis.exists(_limit_key(app, "signin-user", user)) == 0
    # Signed out, and signing in again finds nothing held.
    assert client.get("/me/").status_code == 303


@pytest.mark.privacy
def test_erasure_ends_her_sign_ins_in_every_browser(app):
    user, pw = make_account(app, "Ines Partout")
    phone, laptop = new_client(app), new_client(app)
    assert opt_in(phone, token_for(app, make_shop(app)), user, pw).status_code == 200
    signin = laptop.get("/me/signin")
    form = {"csrf_token": csrf(signin.text), "username": user, "password": pw}
    assert laptop.post("/me/signin", data=form).status_code == 303
    assert laptop.get("/me/").status_code == 200

    page = phone.get("/me/")
    resp = phone.post("/me/erase", data={"csrf_token": csrf(page.text), "confirm": "yes"})
    assert resp.status_code == 200

    # The laptop's sign-in went with her: nothing of it (her principal's HMAC, its session id)
    # is left in Redis, and the page sends it to sign in.
    assert get_registry(app).end_all(subscriber_principal(f"dir:{user}")) == 0
    again = laptop.get("/me/")
    assert again.status_code == 303 and "/me/signin" in again.headers["Location"]
