"""The weekly job after the audit: a stored week is final, only ended weeks run, one partition
per bundle, shares over published cells, finite budgets, one line for every bad argument, and a
database failure that is not mistaken for a concurrent release."""

from __future__ import annotations

import json
import math
import secrets
import sqlite3
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from analytics import job
from analytics.cli import main
from analytics.models import Report
from analytics.privacy import PrivacyError, PrivacyLedger
from store_server.db import make_engine, sessions, upgrade
from store_server.models import Merchant, Subscriber, Visit
from store_server.services import (
    create_merchant,
    create_subscriber,
    create_venue,
    grant_consent,
    withdraw_all,
)
from tests.helpers import run_python

W47 = date(2026, 11, 16)
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)
K = 5


@pytest.fixture(scope="module")
def geography(shared_data):  # type: ignore[no-untyped-def]
    """The shared Paris polygons and their code -> département -> * hierarchy."""
    return job.load_geography(shared_data / "geo" / "paris-petite-couronne.geojson")


@pytest.fixture(scope="module")
def empty_url(tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    """A migrated SQLite file with nobody in it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('final') / 'empty.db'}"
    upgrade(url)
    return url


def seed(db: Session, homes: list[tuple[str, dict[str, float], int]]) -> tuple[str, int, list[int]]:
    """A cinema whose visitors (home area, tastes, visits in W47) all consented to statistics."""
    slug = f"final-{secrets.token_hex(4)}"
    merchant = create_merchant(db, slug, "Cinéma", "cinema")
    hall = create_venue(db, merchant, "Salle", "site").id
    people = []
    for n, (area, genres, visits) in enumerate(homes):
        sub = create_subscriber(db, f"dir:f{n}:{secrets.token_hex(4)}", f"f{n}", [],
                                {"genres": genres}, area)  # fmt: skip
        grant_consent(db, sub, None, "preferences", True, None).valid_from = LONG_AGO
        for day in range(visits):
            start = datetime(2026, 11, 17 + day, 14, tzinfo=UTC)
            db.add(Visit(subscriber_id=sub.id, merchant_id=merchant.id, venue_id=hall,
                         zone="salle", started_at=start, ended_at=start + timedelta(minutes=90),
                         dwell_s=5400.0))  # fmt: skip
        people.append(sub.id)
    db.commit()
    return slug, merchant.id, people


def stored(db: Session, merchant_id: int) -> Report:
    """The merchant's one stored W47 report, read afresh."""
    db.expire_all()
    return db.scalars(
        select(Report).where(Report.merchant_id == merchant_id, Report.period_start == W47)
    ).one()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m analytics …` in a real process, in a scratch directory."""
    return run_python("-m", "analytics", *args, cwd=cwd)


SIX_ONE_CLASSICAL = [("75111", {"pop": 0.5, "jazz": 0.5}, 1)] * 5 + [
    ("75111", {"classical": 1.0}, 1)
]


def test_a_stored_week_is_final_a_withdrawal_never_replaces_it(app, db, geography):
    with sessions(app)() as s:
        slug, merchant_id, people = seed(s, SIX_ONE_CLASSICAL)
        first = job.run(s, W47, job.JobOptions(k=K), *geography, merchant_slug=slug)
    assert first["merchants"][0]["status"] == "stored"
    before = stored(db, merchant_id)
    body, created = before.body, before.created_at
    with sessions(app)() as s:
        again = job.run(s, W47, job.JobOptions(k=K), *geography, merchant_slug=slug)
    # the same data gives the same bundle: that is no second version
    assert again["merchants"][0]["status"] == "unchanged" and again["refused"] == 0
    with sessions(app)() as s:
        withdraw_all(s, s.get(Subscriber, people[-1]))
        s.commit()
        third = job.run(s, W47, job.JobOptions(k=K), *geography, merchant_slug=slug)
    line = third["merchants"][0]
    assert line["status"] == "refused" and line["final"] is True and third["refused"] == 1
    assert "published" in line["reason"] and "final" in line["reason"]
    after = stored(db, merchant_id)
    # still the first version: 6 people, one of them all classical; never a second one to diff
    assert after.body == body and after.created_at == created
    assert after.body["taste"][0]["subscribers"] == 6
    assert after.body["taste"][0]["classical"] == pytest.approx(1 / 6)


def test_the_command_refuses_a_changed_rerun_with_exit_3_and_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'final.db'}"
    upgrade(url)
    engine = make_engine(url, pooled=False)
    with Session(engine) as s:
        _slug, _merchant_id, people = seed(s, SIX_ONE_CLASSICAL)
    done = run_cli("run", "--period", "2026-W47", "--database-url", url, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    same = run_cli("run", "--period", "2026-W47", "--database-url", url, cwd=tmp_path)
    assert same.returncode == 0 and json.loads(same.stdout)["merchants"][0]["status"] == "unchanged"
    with Session(engine) as s:
        withdraw_all(s, s.get(Subscriber, people[0]))
        s.commit()
    engine.dispose()
    refused = run_cli("run", "--period", "2026-W47", "--database-url", url, cwd=tmp_path)
    assert refused.returncode == 3
    assert refused.stderr.count("\n") == 1
    assert "week 2026-W47 is published and final" in refused.stderr
    assert json.loads(refused.stdout)["merchants"][0]["status"] == "refused"


def paris_monday(offset_weeks: int = 0) -> str:
    """The ISO week of this week's (or a later week's) Monday in Europe/Paris."""
    today = datetime.now(ZoneInfo("Europe/Paris")).date()
    monday = today - timedelta(days=today.weekday()) + timedelta(weeks=offset_weeks)
    year, week, _ = monday.isocalendar()
    return f"{year}-W{week:02d}"


@pytest.mark.parametrize(
    ("period", "words"),
    [
        (paris_monday(0), "has not ended"),
        (paris_monday(1), "has not ended"),
        ("9999-W52", "has not ended"),
        ("0001-W01", "before 2020-W01"),
        ("2019-W52", "before 2020-W01"),
        ("2019-12-23", "before 2020-W01"),
    ],
)
def test_weeks_not_ended_or_before_2020_exit_2_with_one_line(empty_url, capsys, period, words):
    code = main(["run", "--period", period, "--database-url", empty_url])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and words in err


def test_the_job_itself_refuses_a_week_until_its_paris_end() -> None:
    _start, end = job.week_bounds(W47)
    job.check_period(W47, now=end, settle_hours=0)  # Monday 00:00 in Paris: the week is over
    with pytest.raises(job.JobError, match="has not ended"):
        job.check_period(W47, now=end - timedelta(seconds=1), settle_hours=0)
    with pytest.raises(job.JobError, match="has not ended"):
        job.check_period(date(9999, 12, 27), now=end)


def test_a_week_is_run_only_once_late_uploads_have_had_a_day_to_arrive() -> None:
    _start, end = job.week_bounds(W47)
    # a scanner cut off on Sunday evening uploads its queue on Monday: those are W47's visits
    for early in (end, end + timedelta(hours=23, minutes=59)):
        with pytest.raises(job.JobError, match=r"ended less than 24 h ago.*--settle-hours"):
            job.check_period(W47, now=early)
    job.check_period(W47, now=end + timedelta(hours=24))
    job.check_period(W47, now=end + timedelta(hours=2), settle_hours=2)
    with pytest.raises(job.JobError, match=r"ended less than 2\.5 h ago"):
        job.check_period(W47, now=end + timedelta(hours=2), settle_hours=2.5)


def test_run_waits_for_the_settle_time_it_is_given(app, db, geography) -> None:
    slug, _merchant_id, _people = seed(db, [("75111", {"pop": 1.0}, 1)] * 6)
    _start, end = job.week_bounds(W47)
    options = job.JobOptions(k=K, settle_hours=48)
    with pytest.raises(job.JobError, match="ended less than 48 h ago"):
        job.run(db, W47, options, *geography, merchant_slug=slug, now=end + timedelta(hours=47))
    out = job.run(db, W47, options, *geography, merchant_slug=slug, now=end + timedelta(hours=48))
    assert out["merchants"][0]["status"] == "stored"


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "1e9"])
def test_a_settle_time_that_is_not_a_sane_number_exits_2(empty_url, capsys, value) -> None:
    code = main(["run", "--period", "2026-W47", "--settle-hours", value,
                 "--database-url", empty_url])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "analytics run: error: --settle-hours must be a number from 0 to 8784 (a year)"
    ]


def test_catchment_cells_and_taste_rows_are_one_partition(app, db, geography):
    # the audit's case: taste 75111 (5) inside catchment 75111+75112 (7) gave away 75112's two
    homes = (
        [("75111", {"pop": 1.0}, 1)] * 5
        + [("75112", {"jazz": 1.0}, 1)] * 2
        + [("92004", {"pop": 1.0}, 1)] * 6
        + [("93001", {"pop": 1.0}, 1)] * 4
        + [("94002", {"pop": 1.0}, 1)] * 2
    )
    with sessions(app)() as s:
        slug, merchant_id, _people = seed(s, homes)
        out = job.run(s, W47, job.JobOptions(k=K), *geography, merchant_slug=slug)
    assert out["merchants"][0]["status"] == "stored"
    body = stored(db, merchant_id).body
    rows = {row["area"]: row["subscribers"] for row in body["taste"]}
    cells = {cell["cell"]: cell["subscribers"] for cell in body["catchment"]["cells"]}
    assert rows == cells and rows
    assert all(n >= K for n in rows.values())
    # any taste row and any cell are the same group or share nobody, so no difference is small
    for row in rows:
        for cell in cells:
            mine, theirs = set(row.split("+")), set(cell.split("+"))
            assert mine == theirs or not mine & theirs
    # 93001 (4) and 94002 (2) reach k nowhere: withheld from both, their 6 stated as one number
    assert body["suppression"]["suppressed_subscribers"] == 6


def test_catchment_shares_count_only_published_cells(app, db, geography):
    # six from the 11e; one person from Asnières, alone, came three times
    homes = [("75111", {"pop": 1.0}, 1)] * 6 + [("92004", {"jazz": 1.0}, 3)]
    with sessions(app)() as s:
        slug, merchant_id, _people = seed(s, homes)
        job.run(s, W47, job.JobOptions(k=K), *geography, merchant_slug=slug)
    area = stored(db, merchant_id).body["catchment"]
    assert area["suppressed_visits"] is None and area["suppressed_below_k"] is True
    (cell,) = area["cells"]
    # 6 / 9 would say that 3 visits were withheld, which suppressed_visits hides
    assert cell["share"] == 1.0 and area["share"] == 1.0
    assert cell["visits"] / cell["share"] == 6


@pytest.mark.parametrize(
    "args",
    [
        ["--epsilon-budget", "nan"],
        ["--delta-budget", "nan"],
        ["--epsilon-budget", "-1"],
        ["--epsilon-budget", "inf"],
        ["--delta-budget=-1e-9"],
    ],
)
def test_budgets_must_be_finite_and_not_negative(empty_url, capsys, args):
    code = main(["run", "--period", "2026-W47", "--epsilon", "1", *args,
                 "--database-url", empty_url])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and args[0].split("=")[0] in err


def test_the_ledger_refuses_a_nan_budget_or_charge() -> None:
    for budgets in ((math.nan, 1e-6), (1.0, math.nan), (-1.0, 1e-6)):
        with pytest.raises(PrivacyError):
            PrivacyLedger(*budgets)
    ledger = PrivacyLedger(1.0)
    with pytest.raises(PrivacyError):
        ledger.charge("m", "2026-11-16", math.nan)
    assert ledger.releases == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--period", "0001-W01"], "2020-W01"),
        (["--period", "9999-W52"], "has not ended"),
        (["--period", "2026-W47", "--database-url", "notaurl"], "--database-url"),
        (["--period", "2026-W47", "--database-url", "foo://bar"], "'foo' is not supported"),
        (["--period", "2026-W47", "--database-url", "mysql://a@b/c"], "'mysql' is not supported"),
        (["--period", "2026-W47", "--database-url", "postgresql+nodriver://u:s3cret@h/db"],
         "unknown database driver"),
        (["--period", "2026-W47", "--database-url", "postgresql://u:s3cret@h:port/db"],
         "--database-url"),
    ],
)  # fmt: skip
def test_overflowing_periods_and_bad_urls_exit_2_with_one_line(tmp_path, args, words):
    done = run_cli("run", *args, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert words in done.stderr
    assert "s3cret" not in done.stderr  # a URL may hold a password: it is never echoed
    assert list(tmp_path.iterdir()) == []  # nothing created, not even a database file


def test_a_failing_insert_is_a_database_failure_not_a_concurrent_release(tmp_path):
    url = f"sqlite:///{tmp_path / 'broken.db'}"
    upgrade(url)
    engine = make_engine(url, pooled=False)
    with Session(engine) as s:
        seed(s, [("75111", {"pop": 1.0}, 1)] * 6)
    engine.dispose()
    con = sqlite3.connect(tmp_path / "broken.db")
    # a real SQLite error on the release's insert (OperationalError: no such function)
    con.execute(
        "CREATE TRIGGER broken BEFORE INSERT ON privacy_releases "
        "BEGIN SELECT no_such_function(1); END"
    )
    con.commit()
    con.close()
    done = run_cli("run", "--period", "2026-W47", "--database-url", url, cwd=tmp_path)
    assert done.returncode == 1
    (line,) = json.loads(done.stdout)["merchants"]
    assert line["status"] == "failed" and line["report_id"] is None
    assert done.stderr.splitlines() == [
        f"analytics run: failed for {line['merchant']}: "
        "the database failed: no such function: no_such_function"
    ]


def test_one_merchants_database_failure_does_not_cost_the_others_their_week(tmp_path):
    url = f"sqlite:///{tmp_path / 'two.db'}"
    upgrade(url)
    engine = make_engine(url, pooled=False)
    with Session(engine) as s:
        broken_slug, broken_id, _ = seed(s, [("75111", {"pop": 1.0}, 1)] * 6)
        fine_slug, fine_id, _ = seed(s, [("75112", {"jazz": 1.0}, 1)] * 6)
    con = sqlite3.connect(tmp_path / "two.db")
    # a real SQLite error at run time on the first merchant's release only (an unknown
    # function would fail every insert: the trigger is compiled with the statement)
    con.execute(
        "CREATE TRIGGER broken BEFORE INSERT ON privacy_releases "
        f"WHEN NEW.merchant_id = {broken_id} BEGIN SELECT zeroblob(2000000000); END"
    )
    con.commit()
    con.close()
    done = run_cli("run", "--period", "2026-W47", "--database-url", url, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"analytics run: failed for {broken_slug}: the database failed: string or blob too big"
    ]
    out = json.loads(done.stdout)
    status = {m["merchant"]: m["status"] for m in out["merchants"]}
    assert status == {broken_slug: "failed", fine_slug: "stored"}
    assert (out["stored"], out["refused"], out["failed"]) == (1, 0, 1)
    with Session(engine) as s:
        assert stored(s, fine_id).k == K
        assert s.scalars(select(Report).where(Report.merchant_id == broken_id)).all() == []
    engine.dispose()


def test_a_locked_database_raises_instead_of_reporting_a_refusal(tmp_path, geography):
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    upgrade(url)
    engine = make_engine(url, pooled=False)
    with Session(engine) as s:
        slug, _merchant_id, _people = seed(s, [("75111", {"pop": 1.0}, 1)] * 6)
    engine.dispose()
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock past our timeout
    impatient = create_engine(url, connect_args={"timeout": 0.2})
    try:
        with Session(impatient) as s, pytest.raises(OperationalError, match="locked"):
            job.run(s, W47, job.JobOptions(k=K), *geography, merchant_slug=slug)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        impatient.dispose()
    # once the lock is gone the week runs: nothing was recorded as released meanwhile
    with Session(make_engine(url, pooled=False)) as s:
        out = job.run(s, W47, job.JobOptions(k=K), *geography, merchant_slug=slug)
        assert out["merchants"][0]["status"] == "stored"
        assert s.scalar(select(Merchant.slug).where(Merchant.slug == slug)) == slug
