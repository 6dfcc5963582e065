"""`make demo`'s contract: DEMO_SECONDS=N runs the whole system on embedded defaults, prints push
lines for alice (playlist) and bob (preferences), none for carol, and exits 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import pytest

import demo
from tests.conftest import REPO, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.privacy, pytest.mark.slow]


def test_demo_runs_for_demo_seconds_and_prints_the_timeline(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(DEMO_SECONDS="20", CM_VAR_DIR=str(tmp_path / "var"), DEMO_PORT=str(free_port()))
    # A fresh machine's first run: numba has no compiled kernels cached yet.
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba")
    proc = subprocess.run(
        [sys.executable, "demo.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert re.search(r"merchant portal: http://127\.0\.0\.1:\d+/portal/", out)
    assert "demo merchant login: " in out
    lines = re.findall(r"^\S+ ((?:push|revoke) device=\S+.*)$", out, re.M)
    assert "push device=demo-chair-1-speaker scope=playlist subscriber=alice" in lines
    assert "push device=demo-car-tablet scope=preferences subscriber=bob" in lines
    assert not [line for line in lines if "carol" in line or "unknown" in line]
    # Each sat in her first seat once in these 20 s: one push, not pushed, revoked and pushed
    # again because the first batches waited for the kernels to compile.
    assert lines.count("push device=demo-chair-1-speaker scope=playlist subscriber=alice") == 1
    assert lines.count("push device=demo-car-tablet scope=preferences subscriber=bob") == 1
    timeline = out.split("Timeline", 1)[1].splitlines()[1:]
    assert timeline[-1] == "demo stopped"
    well_formed = re.compile(
        r"\d\d:\d\d:\d\d (push device=\S+ scope=\S+ subscriber=\S+|revoke device=\S+ subscriber=\S+"
        r"|stats frames_heard=\d+ unresolved_sightings_dropped=\d+)"
    )
    assert [line for line in timeline[:-1] if not well_formed.fullmatch(line)] == []
    assert "carol" not in proc.stderr
    assert (tmp_path / "var" / "cmood.db").exists()  # the SQLite file under var/


@pytest.mark.parametrize(
    ("setup", "line"),
    [
        ("garbage", "demo.py: the database failed: DatabaseError: file is not a database"),
        ("no-redis", "demo.py: Redis failed: ConnectionError: Error 111 connecting to"),
    ],
)
def test_demo_says_in_one_line_which_store_it_cannot_use(tmp_path, setup, line):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(DEMO_SECONDS="2", CM_VAR_DIR=str(tmp_path / "var"), DEMO_PORT=str(free_port()))
    (tmp_path / "var").mkdir()
    if setup == "garbage":
        (tmp_path / "var" / "cmood.db").write_bytes(b"garbage\n")
    else:
        env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    proc = subprocess.run(
        [sys.executable, "demo.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert len(proc.stderr.splitlines()) == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith(line), proc.stderr
    if setup == "garbage":
        assert (tmp_path / "var" / "cmood.db").read_bytes() == b"garbage\n"  # left as it was


def test_timeline_lines_from_many_devices_never_run_together(capsys):
    # Switch threads as often as possible, so that a line written in two parts gets split.
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [
            threading.Thread(target=lambda n=n: [demo.say(f"device={n}") for _ in range(300)])
            for n in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1800
    assert [line for line in lines if not re.fullmatch(r"\d\d:\d\d:\d\d device=\d", line)] == []
