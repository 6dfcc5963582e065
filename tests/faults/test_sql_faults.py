"""PostgreSQL unreachable behind a TCP proxy the test cuts: clear 503s, nothing half-written, and
recovery without a restart. The machine's PostgreSQL itself is never touched."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import make_url

from store_server import db, journal, rights
from store_server import events as pending
from store_server.db import upgrade
from store_server.models import AuditEntry, Device, Subscriber, Visit
from store_server.redis_store import get_keys, get_redis
from tests.conftest import fresh_database
from tests.faults.support import (
    Stack,
    TcpProxy,
    batch_body,
    eid_rows,
    make_stack,
    signed,
    stranger_rows,
)
from tests.helpers import audit_actions

pytestmark = pytest.mark.faults
SCANNER = "demo-salon-scanner-1"


@dataclass
class ProxiedStack:
    """A stack whose every SQL connection goes through a proxy, and a direct engine to check."""

    stack: Stack
    proxy: TcpProxy
    direct: Any

    def count(self, model: Any) -> int:
        """Rows of a table, read past the proxy."""
        with self.direct.connect() as c:
            return c.execute(select(func.count()).select_from(model)).scalar_one()


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[ProxiedStack]:
    """Fresh PostgreSQL database reached only through a cuttable proxy."""
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith(("postgresql", "postgres")):
        pytest.skip("needs DATABASE_URL on PostgreSQL: the proxy sits in front of a server")
    direct_url, drop = fresh_database(tmp_path, base)
    upgrade(direct_url)
    url = make_url(direct_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    stack = make_stack(tmp_path, db_url=through)
    direct = create_engine(direct_url)
    try:
        yield ProxiedStack(stack, proxy, direct)
    finally:
        proxy.restore()
        stack.close()
        proxy.close()
        direct.dispose()
        drop()


def post(client, stack: Stack, body: bytes):  # type: ignore[no-untyped-def]
    """Sign with a fresh nonce, as a scanner's retry does, and post."""
    return client.post(
        "/api/v1/sightings", data=body, headers=signed(SCANNER, stack.secret(SCANNER), body)
    )


def test_sql_down_clear_503s_then_recovery_without_restart(proxied):
    stack, client = proxied.stack, proxied.stack.app.test_client()
    proxied.proxy.cut()
    for path in ("/readyz", "/healthz"):
        resp = client.get(path)
        assert resp.status_code == 503
        assert resp.get_json()["sql"].startswith("error")
    body = batch_body(stranger_rows(time.time(), 3))
    # The scanner is not cached yet, so authenticating it needs the database.
    resp = post(client, stack, body)
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert resp.get_json() == {"error": "database unavailable, retry later"}
    scrape = client.get("/metrics")
    assert scrape.status_code == 200 and 'cm_store_up{store="sql"} 0.0' in scrape.text

    proxied.proxy.restore()
    assert client.get("/readyz").status_code == 200
    assert post(client, stack, body).get_json() == {"accepted": 3, "duplicate": False}


def _alice_enters(stack: Stack) -> bytes:
    """Four seconds of alice at chair 1: enough for the zone's 2 s stability, so she enters."""
    return batch_body(eid_rows(stack.world.emitters["alice"], time.time(), 4, rssi=-50))


def _chair1_pushes(proxied: ProxiedStack) -> list:
    """Pending push events of the chair 1 speaker (its id read past the proxy)."""
    with proxied.direct.connect() as c:
        device_id = c.scalar(select(Device.id).where(Device.name == "demo-chair-1-speaker"))
    stack = proxied.stack
    events = get_redis(stack.app).xrange(get_keys(stack.app).outbox(device_id))
    return [e for _, e in events if json.loads(e["e"])["type"] == "push"]


def test_enter_with_sql_up_pushes_and_audits(proxied):
    """Control for the next test: the same batch with the database up."""
    stack, client = proxied.stack, proxied.stack.app.test_client()
    audited = proxied.count(AuditEntry)
    assert post(client, stack, _alice_enters(stack)).status_code == 200
    assert len(_chair1_pushes(proxied)) == 1
    assert proxied.count(AuditEntry) == audited + 1


def test_enter_while_sql_down_is_delivered_after_recovery(proxied):
    stack, client = proxied.stack, proxied.stack.app.test_client()
    # Warm the topology cache, so ingest itself needs no SQL and only delivery does.
    assert post(client, stack, batch_body(stranger_rows(time.time(), 1))).status_code == 200
    body = _alice_enters(stack)
    audited, visits = proxied.count(AuditEntry), proxied.count(Visit)
    proxied.proxy.cut()
    resp = post(client, stack, body)
    assert resp.status_code == 503
    # Nothing half-written: no disclosure left without its audit entry, no visit.
    assert _chair1_pushes(proxied) == []
    assert proxied.count(AuditEntry) == audited and proxied.count(Visit) == visits
    proxied.proxy.restore()
    retry = post(client, stack, body)
    assert retry.status_code == 200
    assert len(_chair1_pushes(proxied)) == 1
    assert proxied.count(AuditEntry) == audited + 1


def test_pooled_connection_pinged_only_after_idling_and_replaced_if_dead(tmp_path, monkeypatch):
    """No ping round trip for a connection used a moment ago; one that idled past PING_IDLE_S
    and died meanwhile is replaced at checkout, unseen by the caller."""
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith(("postgresql", "postgres")):
        pytest.skip("needs DATABASE_URL on PostgreSQL: the proxy sits in front of a server")
    direct_url, drop = fresh_database(tmp_path, base)
    url = make_url(direct_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    engine = db.make_engine(
        url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
        pool_size=1,
    )
    pings: list[bool] = []
    real_ping = engine.dialect.do_ping

    def counted_ping(dbapi_conn: Any) -> bool:
        pings.append(True)
        return real_ping(dbapi_conn)

    monkeypatch.setattr(engine.dialect, "do_ping", counted_ping)
    try:
        for _ in range(3):
            with engine.connect() as c:
                assert c.exec_driver_sql("select 1").scalar() == 1
        assert pings == []
        proxy.cut()  # kills the pooled connection
        proxy.restore()
        monkeypatch.setattr(db, "PING_IDLE_S", 0.0)  # as if it had idled since
        with engine.connect() as c:
            assert c.exec_driver_sql("select 1").scalar() == 1
        assert pings == [True]
    finally:
        engine.dispose()
        proxy.close()
        drop()


def _alice(proxied: ProxiedStack) -> int:
    with proxied.direct.connect() as c:
        return c.scalar(select(Subscriber.id).where(Subscriber.directory_id == "demo:alice"))


@pytest.mark.privacy
def test_a_push_out_before_sql_refused_its_audit_entry_is_audited_later_and_not_pushed_again(
    proxied,
):
    stack, client = proxied.stack, proxied.stack.app.test_client()
    app = stack.app
    r, keys = get_redis(app), get_keys(app)
    alice = _alice(proxied)

    def cut_at_the_audit(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        # The push is out (outbox, emit): the database goes away as its audit entry is written.
        if statement.startswith("INSERT INTO audit_log"):
            proxied.proxy.cut()

    engine = app.extensions["cm_engine"]
    event.listen(engine, "before_cursor_execute", cut_at_the_audit)
    try:
        assert post(client, stack, _alice_enters(stack)).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", cut_at_the_audit)
    assert len(_chair1_pushes(proxied)) == 1
    assert proxied.count(AuditEntry) == 0
    # Done as far as the devices go: nothing left to deliver again; the entry waits in Redis.
    assert r.xlen(keys.pending_events()) == 0 and r.xlen(keys.journal()) == 1
    assert journal.drain(app, min_age_s=0) == 0  # still down: kept
    proxied.proxy.restore()
    # She withdraws before the jobs come round: the revoke is audited at once, and the push
    # that preceded it is not lost from her log (before, only a redelivery could audit it, and
    # her ended presence withheld that).
    assert rights.withdraw(app, alice) == 1
    assert r.xlen(keys.journal()) == 1
    assert journal.drain(app, min_age_s=60) == 0  # young: still its inline writer's
    assert journal.drain(app, min_age_s=0) == 1 and r.xlen(keys.journal()) == 0
    assert audit_actions(app, alice) == ["push", "revoke"]
    assert len(_chair1_pushes(proxied)) == 0  # the revoke dropped it from the outbox


def _bob_enters(stack: Stack) -> bytes:
    """Four seconds of bob at chair 1 (he shares preferences, without statistics)."""
    return batch_body(eid_rows(stack.world.emitters["bob"], time.time(), 4, rssi=-50))


def test_sql_lost_after_the_push_is_out_never_pushes_or_audits_it_twice(proxied):
    """The database goes away after a push and its audit entry are in the outbox and the
    journal, while the zone's blended queue is computed: the scanner's retry (and the jobs)
    must not deliver that enter again, with a new event id and a second audit entry."""
    stack, client = proxied.stack, proxied.stack.app.test_client()
    app = stack.app
    r, keys = get_redis(app), get_keys(app)
    alice = _alice(proxied)
    assert post(client, stack, _bob_enters(stack)).status_code == 200
    cut: list[str] = []

    def cut_at_the_queue(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        # Bob's profile, read for the zone's blended queue: alice's push is out by then.
        if not cut and statement.startswith("SELECT subscribers.id, subscribers.public_id"):
            cut.append(statement)
            proxied.proxy.cut()

    engine = app.extensions["cm_engine"]
    event.listen(engine, "before_cursor_execute", cut_at_the_queue)
    body = _alice_enters(stack)
    try:
        first = post(client, stack, body)
    finally:
        event.remove(engine, "before_cursor_execute", cut_at_the_queue)
    assert cut, "the blended queue never read bob's profile"
    assert first.status_code >= 500
    assert len(_chair1_pushes(proxied)) == 2  # bob's and alice's: out before the database went
    proxied.proxy.restore()
    assert post(client, stack, body).status_code == 200  # the scanner's retry
    pending.flush(app, min_age_s=0)  # and the jobs' round
    journal.drain(app, min_age_s=0)
    assert len(_chair1_pushes(proxied)) == 2
    assert audit_actions(app, alice) == ["push"]
    assert r.xlen(keys.pending_events()) == 0
