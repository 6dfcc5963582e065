"""Topology cache: scanners reload together, secrets change at once in this process, and unknown
names stay unknown."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

from sqlalchemy import event

from store_server import services, topology
from store_server.db import sessions
from store_server.models import Scanner, Venue
from store_server.topology import TTL_S, Topology


def _venue_with_scanners(app, n: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A new venue with n scanners: name -> secret."""
    tag = uuid.uuid4().hex[:8]
    with sessions(app)() as db:
        merchant = services.create_merchant(db, f"topo-{tag}", "Topology test", "shop")
        venue = services.create_venue(db, merchant, "Shop", "shop")
        secrets = {}
        for i in range(n):
            name = f"topo-{tag}-{i}"
            _, secrets[name] = services.add_scanner(
                db, app.config["DATA_KEY"], venue, name, float(i), 0.0
            )
        db.commit()
    return secrets


@contextlib.contextmanager
def _statements(app) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    """The SQL statements the app runs meanwhile."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement)

    engine = app.extensions["cm_engine"]
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_a_stale_scanner_reloads_every_half_stale_one_in_one_query(app) -> None:  # type: ignore[no-untyped-def]
    secrets = _venue_with_scanners(app, 5)
    names = list(secrets)
    topo = Topology(app)
    for n in names:
        assert topo.scanner(n).secret == secrets[n]
    # Every entry is now stale: the next lookup reloads them all at once (in the background,
    # as they went stale only a moment ago).
    for n in names:
        topo._scanners[n] = (time.monotonic() - 1, topo._scanners[n][1])
    with _statements(app) as seen:
        assert topo.scanner(names[0]).secret == secrets[names[0]]
        topo.wait_reloads()
        for n in names[1:]:
            assert topo.scanner(n).secret == secrets[n]
    assert len([s for s in seen if "FROM scanners" in s]) == 1
    # Fresh again, each for 70-100 % of the TTL (spread, so they do not all reload together).
    now = time.monotonic()
    assert all(now + 0.6 * TTL_S < topo._scanners[n][0] <= now + TTL_S for n in names)


def test_a_rotated_secret_and_an_unknown_name_after_invalidation(app) -> None:  # type: ignore[no-untyped-def]
    secrets = _venue_with_scanners(app, 2)
    names = list(secrets)
    topo = Topology(app)
    assert topo.scanner(names[0]).secret == secrets[names[0]]
    assert topo.scanner("no-such-scanner-" + uuid.uuid4().hex) is None
    with sessions(app)() as db:
        s = db.query(Scanner).filter_by(name=names[0]).one()
        new = services.rotate_scanner_secret(db, app.config["DATA_KEY"], s)
        db.commit()
    topo.invalidate()  # what a setup change in this process does
    assert topo.scanner(names[0]).secret == new != secrets[names[0]]
    assert topo.scanner(names[1]).secret == secrets[names[1]]


def test_a_just_stale_venue_is_served_while_it_reloads_and_a_long_stale_one_waits(app) -> None:  # type: ignore[no-untyped-def]
    secrets = _venue_with_scanners(app, 1)
    topo = Topology(app)
    venue_id = topo.scanner(next(iter(secrets))).venue_id
    first = topo.venue(venue_id)
    with sessions(app)() as db:
        merchant = db.get(Venue, venue_id).merchant
        merchant.status = "suspended"  # changed by another process: no invalidation here
        db.commit()
    # Stale for a moment: the cached entry at once, without a query; the reload follows.
    topo._venues[venue_id] = (time.monotonic() - 1, first)
    with _statements(app) as seen:
        assert topo.venue(venue_id) is first and first.merchant_active
        topo.wait_reloads()
    assert seen and topo.venue(venue_id).merchant_active is False
    # Stale for longer than a TTL: the lookup itself reloads, nothing older is served.
    with sessions(app)() as db:
        db.get(Venue, venue_id).merchant.status = "active"
        db.commit()
    topo._venues[venue_id] = (time.monotonic() - TTL_S - 1, first)
    assert topo.venue(venue_id).merchant_active is True


def test_names_nobody_registered_are_remembered_but_not_without_bound(app, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Any client can send any scanner name: each would otherwise stay cached for the process's
    # life. Known scanners are never forgotten with them.
    monkeypatch.setattr(topology, "MAX_UNKNOWN_SCANNERS", 8)
    secrets = _venue_with_scanners(app, 2)
    topo = Topology(app)
    for n in secrets:
        assert topo.scanner(n) is not None
    with _statements(app) as seen:
        assert topo.scanner("probe-0") is None
        assert topo.scanner("probe-0") is None
    # A repeated unknown name is answered from the cache (other threads' queries aside).
    assert sum("FROM scanners" in q for q in seen) == 1
    for i in range(100):
        assert topo.scanner(f"probe-{i}") is None
    assert len(topo._scanners) <= 8 + len(secrets)
    for n in secrets:
        with _statements(app) as seen:
            assert topo.scanner(n).secret == secrets[n]
        assert not [q for q in seen if "FROM scanners" in q]
