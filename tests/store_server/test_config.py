"""Configuration from the environment: every value is checked at start, a bad one is named in one
line by each entry point (exit status 2), and the defaults stay what they were."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from store_server.config import ConfigError, from_env
from tests.conftest import REPO

DEFAULTS = {
    "SOCKETIO_ASYNC_MODE": "threading",
    "INGEST_MAX_SKEW_S": 300,
    "INGEST_MAX_BATCH": 1000,
    "INGEST_MAX_BODY": 256 * 1024,
    "INGEST_RATE_PER_MIN": 6000,
    "BATCH_ID_TTL_S": 7 * 86400,
    "RESOLVER_REFRESH_S": 60.0,
    "RESOLVER_WINDOW": 2,
    "SWEEP_INTERVAL_S": 0.5,
    "PUSH_TTL_S": 3600,
    "OUTBOX_MAXLEN": 1000,
    "SQL_POOL_SIZE": 16,
    "PROXY_HOPS": 0,
    "LOG_LEVEL": "INFO",
    "REDIS_URL": None,
    "BACKGROUND_JOBS": True,
}


def test_defaults_are_unchanged(tmp_path):
    cfg = from_env({"CM_VAR_DIR": str(tmp_path)})
    assert {k: cfg[k] for k in DEFAULTS} == DEFAULTS
    assert cfg["DATABASE_URL"] == f"sqlite:///{tmp_path / 'cmood.db'}"
    assert not (tmp_path / "cmood.db").exists()  # reading the configuration creates nothing


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "INGEST_MAX_SKEW_S",
            "abc",
            "INGEST_MAX_SKEW_S must be a whole number of seconds between 1 and 315360000, "
            "got 'abc'",
        ),
        ("INGEST_MAX_SKEW_S", "0", "INGEST_MAX_SKEW_S must be a whole number of seconds"),
        ("INGEST_MAX_SKEW_S", "1e3", "INGEST_MAX_SKEW_S must be a whole number of seconds"),
        (
            "SWEEP_INTERVAL_S",
            "nan",
            "SWEEP_INTERVAL_S must be a number of seconds between 0.01 and 3600, got 'nan'",
        ),
        # Each of these made the sweep lock's TTL 0 ms: the jobs loop raised every round.
        ("SWEEP_INTERVAL_S", "0", "SWEEP_INTERVAL_S must be a number of seconds between 0.01"),
        ("SWEEP_INTERVAL_S", "0.001", "SWEEP_INTERVAL_S must be a number of seconds between"),
        ("SWEEP_INTERVAL_S", "-1", "SWEEP_INTERVAL_S must be a number of seconds between"),
        ("SWEEP_INTERVAL_S", "inf", "SWEEP_INTERVAL_S must be a number of seconds between"),
        ("RESOLVER_REFRESH_S", "nan", "RESOLVER_REFRESH_S must be a number of seconds > 0"),
        ("RESOLVER_REFRESH_S", "0", "RESOLVER_REFRESH_S must be a number of seconds > 0"),
        ("RESOLVER_REFRESH_S", "inf", "RESOLVER_REFRESH_S must be a number of seconds > 0"),
        ("INGEST_MAX_BATCH", "-5", "INGEST_MAX_BATCH must be a number of sightings >= 1"),
        ("INGEST_MAX_BODY", "0", "INGEST_MAX_BODY must be a number of bytes >= 1"),
        ("INGEST_RATE_PER_MIN", "-1", "INGEST_RATE_PER_MIN must be a number of batches"),
        ("BATCH_ID_TTL_S", "0", "BATCH_ID_TTL_S must be a whole number of seconds between 1"),
        ("PUSH_TTL_S", str(10**20), "PUSH_TTL_S must be a whole number of seconds between 1"),
        ("RESOLVER_WINDOW", "-1", "RESOLVER_WINDOW must be a number of EID periods >= 0"),
        ("OUTBOX_MAXLEN", "0", "OUTBOX_MAXLEN must be a number of events >= 1"),
        ("SQL_POOL_SIZE", "zero", "SQL_POOL_SIZE must be a number of connections >= 1"),
        ("PROXY_HOPS", "one", "PROXY_HOPS must be a number of proxies >= 0"),
        ("SOCKETIO_ASYNC_MODE", "asyncio", "SOCKETIO_ASYNC_MODE must be one of threading, "),
        ("LOG_LEVEL", "loud", "LOG_LEVEL must be a logging level name"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL must be a redis://, rediss://, unix:// or"),
        ("REDIS_URL", "redis://host:port/0", "REDIS_URL must be a redis://"),
        ("REDIS_URL", "redis+sentinel://a:26379/mymaster", "REDIS_URL must be a redis://"),
        ("DATABASE_URL", "nonsense", "DATABASE_URL must be a database URL such as"),
        ("DATABASE_URL", "nosuchdb://h/x", "DATABASE_URL must be a database URL such as"),
        # What phones scanning the opt-in QR open: a bare host would be a relative link.
        ("PUBLIC_BASE_URL", "mood.example.com", "PUBLIC_BASE_URL must be an absolute http"),
        ("PUBLIC_BASE_URL", "ftp://mood.example.com", "PUBLIC_BASE_URL must be an absolute"),
        ("PUBLIC_BASE_URL", "https://mood.example.com/?a=1", "PUBLIC_BASE_URL must be an"),
        ("PUBLIC_BASE_URL", "https://mood.example.com:port", "PUBLIC_BASE_URL must be an"),
        ("PUBLIC_BASE_URL", "https://user:pw@mood.example.com", "PUBLIC_BASE_URL must be an"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_must_be(tmp_path, name, value, message):
    with pytest.raises(ConfigError) as caught:
        from_env({"CM_VAR_DIR": str(tmp_path), name: value})
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError)  # callers catching ValueError still do


def test_a_database_url_password_is_never_repeated(tmp_path):
    with pytest.raises(ConfigError) as caught:
        from_env({"DATABASE_URL": "postgresql://cm:hunter2@db:port/cm"})
    assert "hunter2" not in str(caught.value)
    assert str(caught.value).endswith("(unreadable port)")


@pytest.mark.parametrize(
    ("name", "value", "read"),
    [
        ("SWEEP_INTERVAL_S", "0.01", 0.01),
        ("SWEEP_INTERVAL_S", "3600", 3600.0),
        ("RESOLVER_REFRESH_S", "0.5", 0.5),
        ("INGEST_RATE_PER_MIN", "0", 0),  # documented: no limit
        ("RESOLVER_WINDOW", "0", 0),
        ("INGEST_MAX_SKEW_S", " 30 ", 30),
        ("LOG_LEVEL", "debug", "DEBUG"),  # logging itself takes upper case only
        ("SOCKETIO_ASYNC_MODE", "gevent", "gevent"),
        ("REDIS_URL", "", None),
        ("REDIS_URL", "rediss://default:pw@cache:6380/0", "rediss://default:pw@cache:6380/0"),
        ("REDIS_URL", "unix:///run/redis.sock", "unix:///run/redis.sock"),
        (
            "REDIS_URL",
            "redis+sentinel://:pw@a:26379,b/0/mymaster",
            "redis+sentinel://:pw@a:26379,b/0/mymaster",
        ),
        ("DATABASE_URL", "postgresql://cm@db/cm", "postgresql+psycopg://cm@db/cm"),
        # Documented for the opt-in QR (merchant_portal/README.md) and read from the environment.
        ("PUBLIC_BASE_URL", "https://mood.example.com/", "https://mood.example.com"),
        ("PUBLIC_BASE_URL", "http://192.0.2.7:8000/store", "http://192.0.2.7:8000/store"),
        ("PUBLIC_BASE_URL", "", None),
    ],
)
def test_sensible_values_are_read(tmp_path, name, value, read):
    assert from_env({"CM_VAR_DIR": str(tmp_path), name: value})[name] == read


def run_script(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run an entry point of the repository with these variables set (and no store reached)."""
    full = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    full.update({"CM_VAR_DIR": str(tmp_path / "var"), "LOG_LEVEL": "WARNING", **env})
    return subprocess.run(
        [sys.executable, script], cwd=REPO, env=full, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("script", "env", "line"),
    [
        (
            "serve.py",
            {"INGEST_MAX_SKEW_S": "abc"},
            "serve.py: INGEST_MAX_SKEW_S must be a whole number of seconds between 1 and "
            "315360000, got 'abc'",
        ),
        ("serve.py", {"PORT": "http"}, "serve.py: PORT must be a TCP port number between 1 and "),
        (
            "serve.py",
            {"GC_GEN0_THRESHOLD": "0"},
            "serve.py: GC_GEN0_THRESHOLD must be a number of allocations >= 1, got '0'",
        ),
        ("serve.py", {"PROXY_HOPS": "-1"}, "serve.py: PROXY_HOPS must be a number of proxies"),
        (
            "worker.py",
            {"SWEEP_INTERVAL_S": "0"},
            "worker.py: SWEEP_INTERVAL_S must be a number of seconds between 0.01 and 3600, "
            "got '0'",
        ),
        ("worker.py", {"REDIS_URL": "localhost:6379"}, "worker.py: REDIS_URL must be a "),
        ("demo.py", {"DEMO_SECONDS": "nan"}, "demo.py: DEMO_SECONDS must be a number of seconds"),
        ("demo.py", {"DATABASE_URL": "nonsense"}, "demo.py: DATABASE_URL must be a database URL"),
        # The opt-in pages' settings: a typo used to fail every request, or start with a trace.
        ("serve.py", {"OPTIN_OPEN_RATE": "60 per minute"}, 'serve.py: OPTIN_OPEN_RATE must be "'),
        ("serve.py", {"OPTIN_TIMEZONE": "Paris"}, "serve.py: OPTIN_TIMEZONE must be a time zone"),
        ("worker.py", {"RETENTION_DAYS": "90d"}, "worker.py: RETENTION_DAYS must be a number"),
    ],
)
def test_entry_points_refuse_a_bad_setting_in_one_line(tmp_path, script, env, line):
    done = run_script(script, tmp_path, **env)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(line), done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "var").exists()  # refused before anything was created


@pytest.mark.parametrize(
    ("script", "env", "what"),
    [
        ("serve.py", {"CM_VAR_DIR": "{tmp}/afile/var"}, "the SQLite database's directory"),
        ("worker.py", {"CM_VAR_DIR": "{tmp}/afile/var"}, "the SQLite database's directory"),
        (
            "serve.py",
            {"DATABASE_URL": "sqlite:///{tmp}/afile/x.db"},
            "the SQLite database's directory",
        ),
        (
            "worker.py",
            {"CM_VAR_DIR": "{tmp}/afile/var", "DATABASE_URL": "sqlite:///{tmp}/db/x.db"},
            "the embedded Redis's directory (CM_VAR_DIR)",
        ),
        ("demo.py", {"CM_VAR_DIR": "{tmp}/afile/var"}, "CM_VAR_DIR"),
    ],
)
def test_entry_points_refuse_a_directory_they_cannot_create_in_one_line(
    tmp_path, script, env, what
):
    (tmp_path / "afile").write_text("")  # a file where a directory would go
    done = run_script(script, tmp_path, **{k: v.format(tmp=tmp_path) for k, v in env.items()})
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"{script}: cannot create {what} "), done.stderr
    assert done.stderr.endswith(f"{tmp_path / 'afile'} is not a directory\n"), done.stderr
