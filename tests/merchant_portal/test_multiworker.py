"""Two store server workers of one deployment (two composed apps, each with its own process
state and Redis client, on the same SQL and Redis) see the same pairing codes and throttles, as
workers behind nginx must: a code shown by one is redeemed on the other, once, and failures
spread over workers still meet one limit."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from store_server.redis_store import embedded_url, get_redis
from tests.merchant_portal.conftest import PortalWorld, login
from tests.merchant_portal.test_devices import CODE, post_action
from wsgi import build_app

SHARED = ("TESTING", "DATABASE_URL", "REDIS_PREFIX", "SECRET_KEY", "DATA_KEY")


@pytest.fixture(scope="module")
def worker2(portal_app: Any) -> Iterator[Any]:
    """A second worker: a new app on the first one's database and Redis (and key prefix),
    behind nginx as in docker/compose.yaml (one trusted proxy hop)."""
    config = {k: portal_app.config[k] for k in SHARED}
    config["PROXY_HOPS"] = 1
    # An embedded Redis is reached by other processes through its unix socket.
    config["REDIS_URL"] = portal_app.config["REDIS_URL"] or embedded_url(get_redis(portal_app))
    application = build_app(config)
    assert get_redis(application) is not get_redis(portal_app)
    yield application
    application.extensions["cm_engine"].dispose()


def from_address(application: Any, addr: str) -> Any:
    """A test client whose requests come from `addr`."""
    c = application.test_client()
    c.environ_base["REMOTE_ADDR"] = addr
    return c


def test_a_code_shown_by_one_worker_is_redeemed_once_on_another(
    salon: Any, world: PortalWorld, worker2: Any
) -> None:
    device = world.devices["annex-spare"]
    code = CODE.search(post_action(salon, device, "pair").get_data(as_text=True)).group(1)
    # A fresh address: the session's other pairing tests must not share this one's throttle.
    other = from_address(worker2, "192.0.2.10")
    resp = other.post("/portal/device/pair", json={"code": code})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["device"] == "annex-spare"
    # Consumed for every worker, the one that showed it included.
    again = salon.post(
        "/portal/device/pair", json={"code": code}, environ_base={"REMOTE_ADDR": "192.0.2.10"}
    )
    assert again.status_code == 404


def test_two_workers_racing_to_redeem_a_code_give_it_to_exactly_one(
    portal_app: Any, worker2: Any
) -> None:
    first, second = (a.extensions["cm_portal_pairing"] for a in (portal_app, worker2))
    for n in range(20):
        code = first.issue(10**6 + n)
        barrier = threading.Barrier(2)
        won: list[int | None] = []

        def redeem(codes: Any, code: str, barrier: threading.Barrier, won: list) -> None:
            barrier.wait()
            won.append(codes.redeem(code))

        threads = [
            threading.Thread(target=redeem, args=(c, code, barrier, won)) for c in (first, second)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(won, key=str) == [10**6 + n, None]


def test_sign_in_failures_on_two_workers_add_up(
    client: Any, world: PortalWorld, worker2: Any
) -> None:
    email = f"spread-{secrets.token_hex(3)}@demo.collective-mood.test"
    other = worker2.test_client()
    statuses = [
        login(c, email, f"guess-{i}").status_code for i in range(5) for c in (client, other)
    ]
    assert statuses == [401] * 10
    # The eleventh attempt is refused on either worker.
    assert login(client, email, "again").status_code == 429
    assert login(other, email, "again").status_code == 429


def test_pairing_failures_on_two_workers_add_up(portal_app: Any, worker2: Any) -> None:
    clients = [from_address(a, "192.0.2.77") for a in (portal_app, worker2)]
    statuses = [
        clients[i % 2].post("/portal/device/pair", json={"code": "ZZZZ-ZZZZ"}).status_code
        for i in range(20)
    ]
    assert statuses == [404] * 20
    assert all(
        c.post("/portal/device/pair", json={"code": "x"}).status_code == 429 for c in clients
    )


def test_behind_nginx_each_client_address_has_its_own_pairing_throttle(worker2: Any) -> None:
    proxy = from_address(worker2, "10.0.0.2")  # every request arrives from nginx

    def pair(client_addr: str) -> int:
        headers = {"X-Forwarded-For": client_addr}
        return proxy.post("/portal/device/pair", json={"code": "ZZZZ"}, headers=headers).status_code

    assert [pair("198.51.100.1") for _ in range(20)] == [404] * 20
    assert pair("198.51.100.1") == 429
    # Another client behind the same proxy is not locked out by the first one's guesses.
    assert pair("198.51.100.2") == 404
