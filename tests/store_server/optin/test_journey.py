"""The opt-in journey over HTTP: link, sign-in, choices, consent, receipt, resolver."""

from __future__ import annotations

import html
import json
import time
from datetime import UTC, timedelta
from datetime import time as dt_time
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from beacons import provisioning
from beacons.eid import compute_eid
from store_server import receipts, resolver
from store_server.models import Consent, EmitterKey, Subscriber, utcnow
from store_server.redis_store import get_keys
from tests.store_server.optin.helpers import (
    make_account,
    make_shop,
    new_client,
    opt_in,
    sign_in,
    token_for,
)

pytestmark = pytest.mark.consent


def test_full_journey_records_consent_receipt_and_resolves(app, db, redis):
    shop = make_shop(app)
    user, pw = make_account(app, "Camille Test")
    client = new_client(app)
    token = token_for(app, shop)
    resp = opt_in(client, token, user, pw)
    assert resp.status_code == 200, resp.text
    assert 'id="done"' in resp.text
    assert resp.headers["Cache-Control"] == "no-store"

    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    assert sub.display_name == "Camille Test" and sub.home_area == "75111"
    assert sub.playlists and sub.taste["genres"]
    consent = db.scalar(select(Consent).where(Consent.subscriber_id == sub.id))
    assert consent.merchant_id == shop.merchant_id and consent.share == "playlist"
    assert consent.statistics is True and consent.valid_until is None

    # The receipt is Kantara v1.1, signed, and verifies with the public key only.
    jws = consent.receipt["jws"]
    assert consent.receipt_id in resp.text
    key = receipts.key_from_jwk(client.get("/optin/receipts/key").get_json()["keys"][0])
    claims = receipts.verify(key, jws)
    assert claims == consent.receipt["receipt"]
    assert claims["consentReceiptID"] == consent.receipt_id
    assert claims["piiPrincipalId"] == sub.public_id
    assert claims["version"] == "KI-CR-v1.1.0" and claims["jurisdiction"] == "FR"
    purposes = claims["services"][0]["purposes"]
    assert [p["piiCategory"][0] for p in purposes][1:] == ["Playlist", "Home area (INSEE code)"]
    assert purposes[1]["thirdPartyName"] == shop.name
    # Written in the language the subscriber read the form in.
    assert claims["language"] == "fr" and purposes[1]["purpose"].startswith(
        "Envoyer votre playlist"
    )

    # The emitter key shown once is the one the resolver now knows.
    doc_json = resp.text.split('id="provisioning-json">')[1].split("</pre>")[0]
    doc = provisioning.parse(html.unescape(doc_json))
    row = db.scalar(select(EmitterKey).where(EmitterKey.subscriber_id == sub.id))
    assert doc.emitter_id == f"em-{row.id}"
    eid = compute_eid(doc.identity_key, doc.exponent, doc.counter(time.time())).hex()
    field = resolver.lookup_key(resolver.lookup_secret(app.config["DATA_KEY"]), eid)
    entry = json.loads(redis.hget(get_keys(app).resolver(), field))
    assert entry["s"] == sub.id and entry["c"][0]["receipt"] == consent.receipt_id

    # The human receipt page is its owner's only.
    page = client.get(f"/optin/receipts/{consent.receipt_id}")
    assert page.status_code == 200 and consent.receipt_id in page.text
    assert new_client(app).get(f"/optin/receipts/{consent.receipt_id}").status_code == 404


def test_choices_page_has_nothing_preticked_and_says_what_it_must(app):
    shop = make_shop(app, "Salon Infos")
    user, pw = make_account(app)
    page = sign_in(new_client(app), token_for(app, shop), user, pw)
    html = page.text
    assert " checked" not in html and " selected" not in html
    for needle in ("dpo@collective-mood.example", "90", "/me/", "Salon Infos"):
        assert needle in html
    en = sign_in(new_client(app), token_for(app, shop), user, pw)
    assert en.status_code == 200


def test_today_only_ends_at_local_midnight(app, db):
    shop = make_shop(app)
    user, pw = make_account(app)
    resp = opt_in(
        new_client(app),
        token_for(app, shop),
        user,
        pw,
        duration="today",
        statistics="no",
        home_area=None,
        presence="all",
        share="preferences",
    )
    assert resp.status_code == 200, resp.text
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    c = db.scalar(select(Consent).where(Consent.subscriber_id == sub.id))
    assert c.merchant_id is None and c.share == "preferences" and not c.statistics
    assert c.valid_until is not None and sub.home_area is None
    midnight = c.valid_until.replace(tzinfo=c.valid_until.tzinfo or UTC).astimezone(
        ZoneInfo(app.config["OPTIN_TIMEZONE"])
    )
    assert midnight.time() == dt_time(0, 0)
    # The signed receipt states that end as she chose it: midnight where she is.
    purposes = c.receipt["receipt"]["services"][0]["purposes"]
    assert all(f"Prend fin le {midnight.isoformat()}" in p["termination"] for p in purposes)


@pytest.mark.privacy
def test_a_new_answer_without_statistics_drops_the_home_area(app, db):
    shop = make_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    token = token_for(app, shop)
    assert opt_in(client, token, user, pw, presence="all").status_code == 200
    assert opt_in(client, token, user, pw).status_code == 200
    # Another live consent with statistics still justifies the area.
    assert opt_in(client, token, user, pw, statistics="no", home_area=None).status_code == 200
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    assert sub.home_area == "75111"
    # Once the answer for all merchants says no as well, no statistics consent is left.
    resp = opt_in(client, token, user, pw, presence="all", statistics="no", home_area=None)
    assert resp.status_code == 200
    db.expire_all()
    assert db.get(Subscriber, sub.id).home_area is None
    assert client.get("/me/export.json").get_json()["profile"]["home_area"] is None


def test_a_new_answer_leaves_an_expired_consent_expired(app, db):
    shop = make_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    token = token_for(app, shop)
    assert opt_in(client, token, user, pw, duration="today").status_code == 200
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    yesterday = db.scalar(select(Consent).where(Consent.subscriber_id == sub.id))
    yesterday.valid_from = utcnow() - timedelta(days=1, hours=2)
    yesterday.valid_until = utcnow() - timedelta(hours=2)
    db.commit()
    assert opt_in(client, token, user, pw).status_code == 200
    db.expire_all()
    # She never withdrew it: it ran out, and her record and export say so.
    assert db.get(Consent, yesterday.id).withdrawn_at is None
    exported = {c["id"]: c for c in client.get("/me/export.json").get_json()["consents"]}
    assert exported[yesterday.id]["status"] == "expired"
    assert exported[yesterday.id]["withdrawn_at"] is None
    page = client.get("/me/?lang=en").text
    status = page.split(f'id="consent-{yesterday.id}"')[1].split('class="status">')[1]
    assert status.startswith("expired")
