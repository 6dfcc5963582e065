"""Two workers of one deployment (the composed app in two processes on one database, Redis and
Socket.IO message queue): a sign-out served by one closes what the same session watches live
through the other."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from store_server import services
from store_server.db import sessions
from store_server.redis_store import get_keys, get_redis
from tests.conftest import scaled_out
from tests.merchant_portal.conftest import csrf_of, signed_in_session
from tests.merchant_portal.test_live_socket import PortalWatcher

pytestmark = [pytest.mark.authz, pytest.mark.e2e, pytest.mark.slow]
EMAIL, PASSWORD = "owner@scaleout.test", "scaleout-pass-2026"


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[Any, str, str, int, int]]:
    """(app of worker A, URL of A, URL of B, the venue's id, its owner's id)."""
    with scaled_out(tmp_path, "wsgi:build_app") as (app, url_a, url_b):
        with sessions(app)() as db:
            merchant = services.create_merchant(db, "scaleout", "Scale-out salon", "salon")
            venue = services.create_venue(db, merchant, "Scale-out salon", "site")
            owner = services.create_staff(db, EMAIL, PASSWORD, "owner", merchant)
            db.commit()
            venue_id, owner_id = venue.id, owner.id
        yield app, url_a, url_b, venue_id, owner_id


def test_signing_out_on_one_worker_closes_the_live_view_held_by_the_other(two_workers):
    app, url_a, url_b, venue_id, owner_id = two_workers
    browser = signed_in_session(url_b, EMAIL, PASSWORD)
    # A copy of the cookie watches the venue live through worker B.
    watcher = PortalWatcher(url_b, venue_id, f"session={browser.cookies['session']}")
    assert watcher.outcome == "connected"
    gone: queue.Queue = queue.Queue()
    watcher.sio.on("disconnect", lambda *_a: gone.put(True), namespace="/portal")
    try:
        assert get_redis(app).scard(get_keys(app).staff_sockets(owner_id)) == 1
        # The owner signs out in the browser; nginx sends that request to worker A, which holds
        # no socket of hers: before, only A's own sockets were closed, and the copy kept
        # watching every presence through B until its network dropped.
        page = browser.get(f"{url_a}/portal/", timeout=10).text
        out = browser.post(f"{url_a}/portal/logout", data={"csrf_token": csrf_of(page)}, timeout=10)
        assert out.status_code == 200
        assert gone.get(timeout=10)
        assert get_redis(app).exists(get_keys(app).staff_sockets(owner_id)) == 0
    finally:
        watcher.close()
