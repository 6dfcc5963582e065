"""Profiles from the streaming adapter at opt-in and on refresh; a second opt-in replaces the
first for the same merchant without a new emitter key; the home area can be changed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from store_server import rights
from store_server.models import Consent, EmitterKey, Subscriber, utcnow
from store_server.streaming import Profile, get_streaming, made_up_profile, refresh_profiles
from tests.store_server.optin.helpers import (
    csrf,
    make_account,
    make_shop,
    new_client,
    opt_in,
    token_for,
)

pytestmark = pytest.mark.consent


def test_profile_is_copied_at_opt_in_and_refreshed(app, db):
    shop = make_shop(app)
    user, pw = make_account(app)
    opt_in(new_client(app), token_for(app, shop), user, pw)
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    assert sub.taste == made_up_profile(f"dir:{user}").taste
    new = Profile([{"id": "pl:new", "title": "New", "tracks": []}], {"genres": {"jazz": 1.0}})
    get_streaming(app).set(f"dir:{user}", new)
    assert refresh_profiles(app) >= 1
    db.expire_all()
    sub = db.get(Subscriber, sub.id)
    assert sub.playlists == new.playlists and sub.taste == new.taste


def test_second_opt_in_at_the_same_merchant_replaces_the_first(app, db):
    shop = make_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    first = opt_in(client, token_for(app, shop), user, pw)
    assert 'id="provisioning-qr"' in first.text
    second = opt_in(client, token_for(app, shop), user, pw, share="preferences")
    assert second.status_code == 200 and 'id="emitter-known"' in second.text
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    old, new = db.scalars(
        select(Consent).where(Consent.subscriber_id == sub.id).order_by(Consent.id)
    ).all()
    assert old.withdrawn_at is not None and new.withdrawn_at is None
    assert new.share == "preferences"
    assert len(db.scalars(select(EmitterKey).where(EmitterKey.subscriber_id == sub.id)).all()) == 1


def test_home_area_can_be_changed_only_under_statistics(app, db):
    shop = make_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    opt_in(client, token_for(app, shop), user, pw)
    page = client.get("/me/")
    token = csrf(page.text)
    bad = client.post("/me/home-area", data={"csrf_token": token, "home_area": "99999"})
    assert bad.status_code == 400
    ok = client.post("/me/home-area", data={"csrf_token": token, "home_area": "93048"})
    assert ok.status_code == 303
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    assert sub.home_area == "93048"
    client.post("/me/withdraw-all", data={"csrf_token": token})
    db.expire_all()
    assert db.get(Subscriber, sub.id).home_area is None, "no statistics consent, no area kept"
    refused = client.post("/me/home-area", data={"csrf_token": token, "home_area": "93048"})
    assert refused.status_code == 409


def test_opting_in_again_leaves_a_consent_that_ran_out_as_expired_not_withdrawn(app, db):
    shop = make_shop(app)
    user, pw = make_account(app)
    client = new_client(app)
    opt_in(client, token_for(app, shop), user, pw, duration="today")
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    yesterday = db.scalar(select(Consent).where(Consent.subscriber_id == sub.id))
    yesterday.valid_from = utcnow() - timedelta(days=1, hours=2)
    yesterday.valid_until = utcnow() - timedelta(days=1)
    db.commit()
    # Back the next week: "today only" again.
    assert opt_in(client, token_for(app, shop), user, pw, duration="today").status_code == 200
    db.expire_all()
    old, new = db.scalars(
        select(Consent).where(Consent.subscriber_id == sub.id).order_by(Consent.id)
    ).all()
    # She never said stop: the visits it covered still feed reports (models.statistics_cover).
    assert old.withdrawn_at is None and rights.consent_status(old, utcnow()) == "expired"
    assert new.withdrawn_at is None and rights.consent_status(new, utcnow()) == "active"
