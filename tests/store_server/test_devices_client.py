"""The reference device client as installers run it: a subprocess printing JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from store_server import device_client, outbox
from store_server.redis_store import get_keys, get_redis
from tests.conftest import REPO, free_port
from tests.store_server.test_push_e2e import build_world, enter

pytestmark = pytest.mark.e2e


def client(*args: str, **kw) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    return subprocess.Popen(
        [sys.executable, "-m", "store_server.device_client", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def finished(p: subprocess.Popen) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=30)
    return p.returncode, out, err


@pytest.mark.parametrize(
    "args",
    [
        ["--url", "http://127.0.0.1:1"],
        ["--token", "x" * 43],
        ["--url", "ftp://host", "--token", "x" * 43],
        ["--url", "http://h", "--token", "t", "--count", "many"],
        ["--url", "http://h", "--token", "t", "--duration", "-1"],
        # URLs the connection would have raised on with a traceback.
        ["--url", "http://[::1", "--token", "t"],
        ["--url", "http://h:99999", "--token", "t"],
        ["--url", "http://h:x", "--token", "t"],
        ["--url", "http://", "--token", "t"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, capsys):
    assert device_client.main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("device_client: ")


def test_bad_arguments_as_a_command():
    code, out, err = finished(client("--url", "http://h"))
    assert (
        code == 2
        and out == ""
        and err.strip() == ("device_client: the following arguments are required: --token")
    )


def test_unreachable_and_refused_exit_1_with_one_line(live_server):
    code, _, err = finished(client("--url", f"http://127.0.0.1:{free_port()}", "--token", "x" * 43))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "cannot connect" in err
    code, _, err = finished(client("--url", live_server.url, "--token", "x" * 43))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "unknown or revoked device token" in err


def test_prints_one_json_line_per_event_and_acks(app, live_server, db):
    world = build_world(app, db, people=(("ida", "playlist"),))
    device_id = world.devices["seat"][0][0]
    p = client("--url", live_server.url, f"--token={world.token('seat')}", "--count", "2")
    try:
        hello = json.loads(p.stdout.readline())  # connected and in its room
        assert hello["event"] == "hello" and hello["device"].startswith("dev-")
        enter(live_server.url, world, "seat", "ida")
        code, out, err = finished(p)
    finally:
        p.kill()
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["event"], x["type"]) for x in lines] == [("event", "push"), ("queue", "queue")]
    assert lines[0]["subscriber"] == world.pseudonym("ida")
    # Both were acked before exiting: nothing is left pending for this device.
    assert outbox.pending(get_redis(app), get_keys(app), device_id, time.time()) == []
