"""Redis killed under ingest: clear 503s with Retry-After while it is down, and afterwards the
batches the scanners kept are processed exactly once. Each test runs its own redis-server."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from store_server import ingest, jobs
from store_server.redis_store import get_keys, get_redis
from tests.conftest import free_port
from tests.faults.support import (
    RedisServer,
    Stack,
    batch_body,
    eid_rows,
    make_stack,
    signed,
    stranger_rows,
    wait_for,
)

pytestmark = pytest.mark.faults
SCANNER = "demo-salon-scanner-1"


class Served:
    """The stack's app on a real threaded HTTP server."""

    def __init__(self, stack: Stack) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = make_server("127.0.0.1", self.port, stack.app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._thread.join(5)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with an append-only file, as production runs it."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture
def stack(tmp_path: Path, redis_server: RedisServer) -> Iterator[Stack]:
    """The store server on the private Redis, served over HTTP."""
    s = make_stack(tmp_path, redis_url=redis_server.url)
    yield s
    s.close()


def post(url: str, stack: Stack, body: bytes, path: str = "/api/v1/sightings"):  # type: ignore[no-untyped-def]
    """Sign (fresh nonce, as a scanner's retry does) and post."""
    return requests.post(
        url + path, data=body, headers=signed(SCANNER, stack.secret(SCANNER), body), timeout=10
    )


def dropped_total(stack: Stack) -> int:
    """All dropped-sighting counters of the stack's prefix."""
    r, keys = get_redis(stack.app), get_keys(stack.app)
    return sum(int(r.get(k)) for k in r.scan_iter(match=f"{keys.prefix}dropped:*"))


def test_redis_down_gives_503_then_retried_batches_count_once(stack, redis_server):
    served = Served(stack)
    try:
        now = time.time()
        first = batch_body(eid_rows(stack.world.emitters["alice"], now, 2) + stranger_rows(now, 3))
        assert post(served.url, stack, first).json() == {"accepted": 5, "duplicate": False}

        redis_server.kill()
        kept = batch_body(stranger_rows(now + 1, 4))  # what the scanner queues meanwhile
        for _ in range(3):
            started = time.monotonic()
            resp = post(served.url, stack, kept)
            assert resp.status_code == 503, resp.text
            assert int(resp.headers["Retry-After"]) > 0
            assert "retry" in resp.json()["error"]
            assert time.monotonic() - started < 5  # refused promptly, not hung on a dead socket
        beat = post(served.url, stack, b'{"queue_depth": 1}', "/api/v1/heartbeat")
        assert beat.status_code == 503 and beat.headers["Retry-After"]
        ready = requests.get(served.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["redis"].startswith("error")
        assert requests.get(served.url + "/healthz", timeout=10).status_code == 503
        scrape = requests.get(served.url + "/metrics", timeout=10)
        assert scrape.status_code == 200 and 'cm_store_up{store="redis"} 0.0' in scrape.text

        redis_server.start()  # same port and data directory: a restart, not a new server
        resp = post(served.url, stack, kept)
        assert resp.status_code == 200 and resp.json() == {"accepted": 4, "duplicate": False}
        # The scanner did not see that answer (say) and sends both batches again.
        for body in (first, kept):
            again = post(served.url, stack, body)
            assert again.status_code == 200 and again.json()["duplicate"] is True
        assert dropped_total(stack) == 3 + 4
        assert requests.get(served.url + "/readyz", timeout=10).status_code == 200
    finally:
        served.stop()


def test_redis_dying_between_reads_and_writes_loses_nothing(stack, redis_server):
    """The worst moment: the batch's checks and resolver lookup ran, the state write did not."""
    r = get_redis(stack.app)

    class DiesBeforeWriting(type(r)):  # type: ignore[misc]
        """The app's own Redis client class; the server dies just before the state write."""

        armed = True

        def evalsha(self, sha, *args):  # type: ignore[no-untyped-def]
            if sha == ingest.WRITE_SHA and DiesBeforeWriting.armed:
                DiesBeforeWriting.armed = False
                redis_server.kill()
            return super().evalsha(sha, *args)

    stack.app.extensions["cm_redis"] = DiesBeforeWriting(connection_pool=r.connection_pool)
    served = Served(stack)
    try:
        now = time.time()
        body = batch_body(eid_rows(stack.world.emitters["alice"], now, 3) + stranger_rows(now, 2))
        resp = post(served.url, stack, body)
        assert resp.status_code == 503 and resp.headers["Retry-After"]
        assert not DiesBeforeWriting.armed
        redis_server.start()
        keys = get_keys(stack.app)
        assert dropped_total(stack) == 0  # nothing of the batch was counted
        retry = post(served.url, stack, body)
        if retry.status_code == 503:
            # The dead attempt's claim on the batch outlived it: the scanner is told to come
            # back, and the claim expires by itself; here its time is made to pass.
            assert retry.headers["Retry-After"]
            claims = list(r.scan_iter(match=f"{keys.prefix}batch:*"))
            assert len(claims) == 1 and 0 < r.ttl(claims[0]) <= 120
            r.pexpire(claims[0], 1)
            assert wait_for(lambda: not r.exists(claims[0]), 5)
            retry = post(served.url, stack, body)
        assert retry.json() == {"accepted": 5, "duplicate": False}
        assert post(served.url, stack, body).json()["duplicate"] is True
        assert dropped_total(stack) == 2
    finally:
        served.stop()


def test_redis_restarted_empty_resolver_and_presence_rebuild(tmp_path):
    """A Redis that lost its data (no persistence): the jobs rebuild the resolver table, so
    consented emitters resolve again without a store server restart."""
    server = RedisServer(tmp_path / "volatile", persistent=False).start()
    stack = make_stack(tmp_path, redis_url=server.url, RESOLVER_REFRESH_S=0.2)
    stop = threading.Event()
    jobs.start(stack.app, stop)
    served = Served(stack)
    r, keys = get_redis(stack.app), get_keys(stack.app)
    try:
        assert r.hlen(keys.resolver()) > 0
        server.kill()
        server.start()  # same port; neither snapshot nor append-only file: nothing kept
        assert wait_for(lambda: r.hlen(keys.resolver()) > 0, 10), "resolver table not rebuilt"
        rows = eid_rows(stack.world.emitters["alice"], time.time(), 3)
        body = batch_body(rows, uuid.uuid4().hex)
        assert post(served.url, stack, body).json() == {"accepted": 3, "duplicate": False}
        venue = stack.app.extensions["cm_topology"].scanner(SCANNER).venue_id
        # Alice resolved (nothing dropped) and her tracking state exists again.
        assert dropped_total(stack) == 0
        assert r.hlen(keys.tracks(venue)) == 1
    finally:
        stop.set()
        served.stop()
        stack.close()
        server.kill()
