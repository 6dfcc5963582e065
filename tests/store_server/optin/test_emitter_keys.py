"""Lost phone or wearable: revoking its key takes effect at the resolver and on devices at once,
and a replacement key is provisioned once."""

from __future__ import annotations

import queue

import pytest
from sqlalchemy import select

from store_server.models import EmitterKey, Subscriber
from store_server.redis_store import get_keys
from tests.store_server.optin.helpers import (
    Device,
    csrf,
    make_account,
    make_live_shop,
    new_client,
    opt_in,
    provisioning_doc,
    sighted,
    token_for,
)

pytestmark = pytest.mark.consent


def _dropped(redis, app) -> int:  # type: ignore[no-untyped-def]
    keys = get_keys(app)
    return sum(int(redis.get(k)) for k in redis.scan_iter(match=f"{keys.prefix}dropped:*"))


def test_replacing_a_lost_emitter_revokes_at_once_and_the_new_key_works(
    app, live_server, db, redis
):
    live = make_live_shop(app)
    user, pw = make_account(app, "Lost Phone")
    client = new_client(app)
    old = provisioning_doc(opt_in(client, token_for(app, live.shop), user, pw).text)
    device = Device(live_server.url, live.device_token)
    try:
        sighted(live_server.url, live, old.identity_key, old.exponent, old.time_base)
        push = device.next()
        assert push["type"] == "push"

        page = client.get("/me/")
        resp = client.post("/me/emitter/replace", data={"csrf_token": csrf(page.text)})
        assert resp.status_code == 200 and 'id="emitter-new"' in resp.text
        new = provisioning_doc(resp.text)
        assert new.identity_key != old.identity_key
        revoke = device.next(timeout=5)
        assert revoke["type"] == "revoke" and revoke["reason"] == "key_revoked"
        assert revoke["subscriber"] == push["subscriber"]

        before = _dropped(redis, app)
        sighted(live_server.url, live, old.identity_key, old.exponent, old.time_base)
        assert _dropped(redis, app) - before == 4  # the thief's phone is nobody now
        with pytest.raises(queue.Empty):
            device.events.get(timeout=0.5)

        sighted(live_server.url, live, new.identity_key, new.exponent, new.time_base)
        again = device.next()
        assert again["type"] == "push" and again["subscriber"] == push["subscriber"]
    finally:
        device.close()
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    keys = db.scalars(select(EmitterKey).where(EmitterKey.subscriber_id == sub.id)).all()
    assert len(keys) == 2 and sum(k.revoked_at is None for k in keys) == 1


def test_revoke_only_leaves_no_live_key_and_needs_csrf(app, live_server, db, redis):
    live = make_live_shop(app)
    user, pw = make_account(app, "Revoke Only")
    client = new_client(app)
    doc = provisioning_doc(opt_in(client, token_for(app, live.shop), user, pw).text)
    assert client.post("/me/emitter/revoke", data={"csrf_token": "forged"}).status_code == 400
    page = client.get("/me/")
    resp = client.post("/me/emitter/revoke", data={"csrf_token": csrf(page.text)})
    assert resp.status_code == 303
    notice = client.get(resp.headers["Location"]).text
    assert "no longer recognised" in notice or "plus reconnu" in notice
    before = _dropped(redis, app)
    sighted(live_server.url, live, doc.identity_key, doc.exponent, doc.time_base)
    assert _dropped(redis, app) - before == 4
    sub = db.scalar(select(Subscriber).where(Subscriber.directory_id == f"dir:{user}"))
    keys = db.scalars(select(EmitterKey).where(EmitterKey.subscriber_id == sub.id)).all()
    assert keys and all(k.revoked_at is not None for k in keys)
