"""The browser Socket.IO client is vendored from npm by scripts/vendor_js.sh, idempotently."""

from __future__ import annotations

import subprocess
import time

from tests.merchant_portal.conftest import REPO

SCRIPT = REPO / "scripts" / "vendor_js.sh"
VENDORED = REPO / "merchant_portal" / "static" / "vendor" / "socket.io.min.js"


def test_vendored_client_is_the_pinned_4x_and_rerunning_is_a_fast_no_op():
    lines = SCRIPT.read_text().splitlines()
    pinned = next(line.split('"')[1] for line in lines if line.startswith("VERSION="))
    assert pinned.startswith("4.")
    before = VENDORED.stat().st_mtime_ns if VENDORED.exists() else None
    started = time.monotonic()
    subprocess.run(["bash", str(SCRIPT)], check=True, capture_output=True, timeout=120)
    assert f"Socket.IO v{pinned}" in VENDORED.read_text()[:200]
    if before is not None:
        assert VENDORED.stat().st_mtime_ns == before  # untouched
        assert time.monotonic() - started < 2


def test_portal_serves_it_as_a_static_file(client):
    resp = client.get("/portal/static/vendor/socket.io.min.js")
    assert resp.status_code == 200 and b"Socket.IO" in resp.data[:200]
