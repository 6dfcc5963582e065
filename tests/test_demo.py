"""`make demo`'s contract: DEMO_SECONDS=N runs the whole system on embedded defaults, prints push
lines for alice (playlist) and bob (preferences), none for carol, and exits 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.privacy, pytest.mark.slow]


def test_demo_runs_for_demo_seconds_and_prints_the_timeline(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(DEMO_SECONDS="20", CM_VAR_DIR=str(tmp_path / "var"), DEMO_PORT=str(free_port()))
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
    assert "carol" not in proc.stderr
    assert (tmp_path / "var" / "cmood.db").exists()  # the SQLite file under var/
