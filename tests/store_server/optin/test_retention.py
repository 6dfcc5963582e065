"""Retention on its own database: visits, disclosures and ended consents past the period go,
data only an ended consent justified goes, tombstones stay; and the command line runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import select

from analytics.job import consented_visits
from store_server import retention, rights, services
from store_server.app import create_app
from store_server.db import sessions, upgrade
from store_server.models import AuditEntry, Consent, EmitterKey, Subscriber, Visit, utcnow
from store_server.optin.models import UsedNonce
from store_server.redis_store import embedded_url, get_keys, get_redis
from store_server.streaming import refresh_profiles
from tests.conftest import REPO, drop_keys, fresh_database, make_config

pytestmark = pytest.mark.consent


@pytest.fixture(scope="module")
def own_app(tmp_path_factory):  # type: ignore[no-untyped-def]
    """An app on a database of its own: purging must not touch other tests' rows."""
    tmp = tmp_path_factory.mktemp("retention")
    url, drop = fresh_database(tmp, os.environ.get("DATABASE_URL"))
    upgrade(url)
    application = create_app(make_config(tmp, url, os.environ.get("REDIS_URL") or None))
    yield application
    drop_keys(get_redis(application), get_keys(application).pattern())
    application.extensions["cm_engine"].dispose()
    drop()


def _world(app):  # type: ignore[no-untyped-def]
    now = utcnow()
    days = timedelta(days=1)
    with sessions(app)() as db:
        m = services.create_merchant(db, "ret-shop", "Retention Shop", "salon")
        v = services.create_venue(db, m, "Retention site", "site")
        subs = {}
        for name in ("keeps", "long_gone", "just_ended"):
            s = services.create_subscriber(
                db,
                f"dir:{name}",
                name,
                [{"id": "pl:x", "tracks": []}],
                {"genres": {"pop": 1}},
                home_area="75111",
            )
            services.provision_emitter(db, app.config["DATA_KEY"], s)
            subs[name] = s
        # Each consent given before the visits it covers (below), as only a consent lets one be.
        keeps = services.grant_consent(db, subs["keeps"], None, "playlist", True, None)
        keeps.valid_from = now - 200 * days
        gone = services.grant_consent(db, subs["long_gone"], m, "playlist", True, None)
        gone.valid_from, gone.withdrawn_at = now - 130 * days, now - 100 * days
        ended = services.grant_consent(db, subs["just_ended"], m, "preferences", True, now - days)
        ended.valid_from = now - 6 * days
        for sub, age in (("keeps", 100), ("keeps", 10), ("long_gone", 120), ("just_ended", 5)):
            start = now - age * days
            db.add(
                Visit(
                    subscriber_id=subs[sub].id,
                    merchant_id=m.id,
                    venue_id=v.id,
                    zone="chair-1",
                    started_at=start,
                    ended_at=start + timedelta(minutes=30),
                    dwell_s=1800.0,
                )
            )
        for sub, age in (("keeps", 100), ("keeps", 1), ("long_gone", 110)):
            db.add(
                AuditEntry(
                    subscriber_id=subs[sub].id,
                    action="push",
                    pseudonym=f"p{sub}",
                    merchant_id=m.id,
                    at=now - age * days,
                )
            )
        db.add(AuditEntry(subscriber_id=None, action="erased", at=now - 400 * days))
        db.add(UsedNonce(nonce="a" * 64, used_at=now - days))
        db.add(UsedNonce(nonce="b" * 64, used_at=now))
        db.commit()
        return {k: s.id for k, s in subs.items()}, v.id


def test_retention_purges_what_is_past_its_period(own_app):
    ids, venue_id = _world(own_app)
    r, keys = get_redis(own_app), get_keys(own_app)
    # just_ended is still sitting in the chair although her consent ended yesterday.
    r.hset(keys.tracks(venue_id), str(ids["just_ended"]), json.dumps({"p": {}}))
    r.zadd(
        keys.last_seen(),
        {f"{venue_id}:{ids['just_ended']}": 1.0, f"{venue_id}:{ids['keeps']}": 1.0},
    )
    out = retention.run(own_app)
    assert out["presences_ended"] == 1
    assert r.zrange(keys.last_seen(), 0, -1) == [f"{venue_id}:{ids['keeps']}"]
    assert r.hget(keys.tracks(venue_id), str(ids["just_ended"])) is None
    with sessions(own_app)() as db:
        keeps = db.get(Subscriber, ids["keeps"])
        assert keeps.playlists and keeps.home_area == "75111"
        assert [v.subscriber_id for v in db.scalars(select(Visit))].count(ids["keeps"]) == 1
        assert db.get(Subscriber, ids["long_gone"]) is None  # nothing of hers is left to keep
        ended = db.get(Subscriber, ids["just_ended"])
        assert ended is not None, "the proof of a recent consent is kept for the period"
        assert ended.playlists == [] and ended.taste == {} and ended.home_area is None
        assert db.scalar(select(EmitterKey).where(EmitterKey.subscriber_id == ended.id)) is None
        assert db.scalar(select(Consent).where(Consent.subscriber_id == ended.id)) is not None
        audit = db.scalars(select(AuditEntry)).all()
        assert sorted(a.action for a in audit) == ["erased", "push"]
        assert [n.nonce for n in db.scalars(select(UsedNonce))] == ["b" * 64]
    assert out["visits"] == 2 and out["subscribers"] == 1 and out["used_nonces"] == 1
    # A second run finds nothing more to do.
    again = retention.run(own_app)
    assert again["visits"] == 0 and again["subscribers"] == 0 and again["ended_consents"] == 0


def test_retention_command_line(own_app):
    env = {
        **os.environ,
        "DATABASE_URL": own_app.config["DATABASE_URL"],
        "REDIS_URL": own_app.config["REDIS_URL"] or embedded_url(get_redis(own_app)) or "",
        "REDIS_PREFIX": own_app.config["REDIS_PREFIX"],
        "SOCKETIO_MESSAGE_QUEUE": "",
        "DATA_KEY": own_app.config["DATA_KEY"],
        "SECRET_KEY": own_app.config["SECRET_KEY"],
    }
    ok = subprocess.run(
        [sys.executable, "-m", "store_server", "retention", "--days", "30"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["retention_days"] == 30 and "visits" in out
    bad = subprocess.run(
        [sys.executable, "-m", "store_server", "retention", "--days", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "at least 1 day" in bad.stderr


def test_retention_purges_revoked_emitter_keys_of_subscribers_still_consented(own_app):
    with sessions(own_app)() as db:
        sub = services.create_subscriber(db, "dir:lost-phones", "Lost Phones", [], {})
        services.grant_consent(db, sub, None, "preferences", False, None)
        # Two phones lost and replaced: two revoked keys, one in use.
        for _ in range(2):
            lost, _key = services.provision_emitter(db, own_app.config["DATA_KEY"], sub)
            lost.revoked_at = utcnow()
        live, _key = services.provision_emitter(db, own_app.config["DATA_KEY"], sub)
        db.commit()
        sid, live_id = sub.id, live.id
    retention.run(own_app)
    with sessions(own_app)() as db:
        left = db.scalars(select(EmitterKey.id).where(EmitterKey.subscriber_id == sid)).all()
    assert left == [live_id]


@pytest.mark.privacy
def test_the_profile_refresh_does_not_copy_back_a_profile_retention_emptied(own_app):
    with sessions(own_app)() as db:
        sub = services.create_subscriber(
            db, "dir:all-withdrawn", "All Withdrawn", [{"id": "pl:x", "tracks": []}], {"a": 1}
        )
        consent = services.grant_consent(db, sub, None, "playlist", False, None)
        consent.withdrawn_at = utcnow()
        db.commit()
        sid = sub.id
    retention.run(own_app)
    refresh_profiles(own_app)  # the streaming service knows a profile for every dir: account
    with sessions(own_app)() as db:
        sub = db.get(Subscriber, sid)
        assert sub is not None, "kept for the proof of her consent"
        assert sub.playlists == [] and sub.taste == {}


@pytest.mark.privacy
def test_visits_a_withdrawal_left_uncovered_go_at_the_next_run(own_app):
    now, day = utcnow(), timedelta(days=1)
    with sessions(own_app)() as db:
        m = services.create_merchant(db, "ret-stop", "Retention Stop", "salon")
        v = services.create_venue(db, m, "Retention Stop site", "site")
        sub = services.create_subscriber(db, "dir:said-stop", "Said Stop", [], {})
        stats = services.grant_consent(db, sub, m, "playlist", True, None)
        stats.valid_from = now - 20 * day
        db.flush()
        for age in (10, 3):
            start = now - age * day
            db.add(
                Visit(
                    subscriber_id=sub.id,
                    merchant_id=m.id,
                    venue_id=v.id,
                    zone="chair-1",
                    started_at=start,
                    ended_at=start + timedelta(minutes=30),
                    dwell_s=1800.0,
                )
            )
        db.commit()
        sid, mid, consent_id = sub.id, m.id, stats.id
    until = now + day
    with sessions(own_app)() as db:
        assert len(db.execute(consented_visits(mid, until)).all()) == 2
    # She withdraws her statistics consent, keeping presence under a new one without it.
    rights.withdraw(own_app, sid, consent_id)
    with sessions(own_app)() as db:
        services.grant_consent(db, db.get(Subscriber, sid), None, "preferences", False, None)
        db.commit()
        assert db.execute(consented_visits(mid, until)).all() == []  # no report reads them
    assert retention.run(own_app)["visits"] == 2
    with sessions(own_app)() as db:
        assert db.scalars(select(Visit).where(Visit.subscriber_id == sid)).all() == []
        assert db.get(Subscriber, sid) is not None  # her live consent and its proof stay
