"""The database job: a seeded week in SQL, reports stored per merchant and week, every row
re-counted from SQL, consent honoured, one release per window, exact re-runs idempotent."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from analytics import job
from analytics.cli import main
from analytics.models import PrivacyRelease, Report
from analytics.reports import MECHANISMS
from store_server.db import make_engine, sessions, upgrade
from store_server.models import Merchant, Subscriber, Visit
from store_server.services import create_merchant, create_subscriber, create_venue, grant_consent

REPO = Path(__file__).resolve().parents[2]
W47 = date(2026, 11, 16)  # Monday of ISO week 2026-W47
W48 = date(2026, 11, 23)
# W48 ended on 2026-11-30 in Paris: runs of it say when they happen, past its settle day
AFTER_W48 = datetime(2026, 12, 2, tzinfo=UTC)
WEEK = timedelta(days=7)
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)
# home area -> eligible subscribers: 75120, 93048 and 94080 are each under k=5 and must be
# generalised together; 99999 has no polygon, so that subscriber can never be placed
ELIGIBLE = {"75111": 12, "75112": 7, "75120": 4, "93048": 3, "94080": 2, "99999": 1}
K = 5


@dataclass
class Scenario:
    """A seeded cinema and a tiny salon, with who should and should not count."""

    cinema: str
    salon: str
    cinema_id: int = 0
    salon_id: int = 0
    eligible: set[int] = field(default_factory=set)
    excluded: set[int] = field(default_factory=set)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    """A UTC instant on a day."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def visit(db: Session, sub: Subscriber, merchant: Merchant, venue_id: int, start: datetime) -> None:
    """A completed 90-minute visit, written as the push path writes them."""
    db.add(
        Visit(
            subscriber_id=sub.id,
            merchant_id=merchant.id,
            venue_id=venue_id,
            zone="salle",
            started_at=start,
            ended_at=start + timedelta(minutes=90),
            dwell_s=5400.0,
        )
    )


def person(db: Session, tag: str, area: str, genres: dict[str, float]) -> Subscriber:
    """A subscriber with a home area and genre tastes."""
    return create_subscriber(
        db, f"dir:{tag}:{secrets.token_hex(4)}", tag, [], {"genres": genres}, area
    )


def stats_consent(db: Session, sub: Subscriber, merchant: Merchant | None, **changes):  # type: ignore[no-untyped-def]
    """A statistics consent in force since long before the scenario (unless told otherwise)."""
    c = grant_consent(db, sub, merchant, "preferences", True, None)
    c.valid_from = changes.pop("valid_from", LONG_AGO)
    for name, value in changes.items():
        setattr(c, name, value)
    return c


def seed(db: Session, suffix: str) -> Scenario:
    """Seed the week of 2026-W47; excluded people all love classical, eligible ones never do."""
    rng = np.random.default_rng(47)
    sc = Scenario(cinema=f"cine-{suffix}", salon=f"salon-{suffix}")
    cinema = create_merchant(db, sc.cinema, "Cinéma du Onzième", "cinema")
    other = create_merchant(db, f"other-{suffix}", "Another shop", "shop")
    salon = create_merchant(db, sc.salon, "Salon Mèche", "salon")
    hall = create_venue(db, cinema, "Salle 1", "site").id
    chair = create_venue(db, salon, "Fauteuil", "site").id
    sc.cinema_id, sc.salon_id = cinema.id, salon.id
    n = 0
    for area, count in ELIGIBLE.items():
        for _ in range(count):
            n += 1
            taste = {"pop": float(rng.random()), "jazz": float(rng.random()), "electro": 0.2}
            sub = person(db, f"ok{n}", area, taste)
            # half consent to all merchants, half to this cinema only
            stats_consent(db, sub, None if n % 2 else cinema)
            for day in range(1 + n % 3):
                visit(db, sub, cinema, hall, at(W47 + timedelta(days=day + 1), 14 + day))
            if n % 4 == 0:
                visit(db, sub, cinema, hall, at(W47 - timedelta(days=3), 15))  # returning
            sc.eligible.add(sub.id)
    # Monday 00:30 in Paris is still Sunday in UTC: counts for W47 in the Paris week
    early = person(db, "early", "75111", {"pop": 1.0})
    stats_consent(db, early, cinema)
    visit(db, early, cinema, hall, at(W47 - timedelta(days=1), 23, 30))
    sc.eligible.add(early.id)
    classical = {"classical": 1.0}
    no_stats = [person(db, f"nostats{i}", "75111", classical) for i in range(6)]
    for sub in no_stats:
        grant_consent(db, sub, cinema, "playlist", False, None).valid_from = LONG_AGO
    withdrawn = [person(db, f"withdrawn{i}", "75112", classical) for i in range(6)]
    for sub in withdrawn:
        stats_consent(db, sub, cinema, withdrawn_at=at(W47 + timedelta(days=5), 9))
    later = [person(db, f"later{i}", "75111", classical) for i in range(6)]
    for sub in later:
        stats_consent(db, sub, cinema, valid_from=at(W47 + timedelta(days=4), 0))
    elsewhere = [person(db, f"elsewhere{i}", "75111", classical) for i in range(6)]
    for sub in elsewhere:
        stats_consent(db, sub, other)
    expired = [person(db, f"expired{i}", "75111", classical) for i in range(6)]
    for sub in expired:
        # a "today only" consent that ended while the visit was still going on
        stats_consent(db, sub, cinema, valid_until=at(W47 + timedelta(days=1), 15))
    next_week = [person(db, f"next{i}", "75111", classical) for i in range(6)]
    for sub in next_week:
        stats_consent(db, sub, cinema)
        # Monday 00:30 in Paris of W48, still Sunday of W47 in UTC
        visit(db, sub, cinema, hall, at(W48 - timedelta(days=1), 23, 30))
    last_week = [person(db, f"last{i}", "75112", classical) for i in range(6)]
    for sub in last_week:
        stats_consent(db, sub, cinema)
        # Sunday 23:30 in Paris, the end of W46 (already Sunday 22:30 in UTC)
        visit(db, sub, cinema, hall, at(W47 - timedelta(days=1), 22, 30))
    for sub in no_stats + withdrawn + later + elsewhere + expired:
        visit(db, sub, cinema, hall, at(W47 + timedelta(days=1), 14))
    excluded = no_stats + withdrawn + later + elsewhere + expired + next_week + last_week
    sc.excluded = {s.id for s in excluded}
    for i in range(3):  # too few for any row anywhere
        sub = person(db, f"salon{i}", "75111", {"pop": 1.0})
        stats_consent(db, sub, salon)
        visit(db, sub, salon, chair, at(W47 + timedelta(days=2), 10))
    db.commit()
    return sc


@pytest.fixture(scope="module")
def geography(shared_data):  # type: ignore[no-untyped-def]
    """The shared Paris polygons and their code -> département -> * hierarchy."""
    return job.load_geography(shared_data / "geo" / "paris-petite-couronne.geojson")


@pytest.fixture(scope="module")
def scenario(app) -> Scenario:  # type: ignore[no-untyped-def]
    """The seeded week on the session's database."""
    with sessions(app)() as db:
        return seed(db, secrets.token_hex(3))


@pytest.fixture(scope="module")
def first_run(app, scenario, geography):  # type: ignore[no-untyped-def]
    """The exact W47 run for the cinema, done once for the tests that read its result."""
    with sessions(app)() as db:
        return job.run(db, W47, job.JobOptions(k=K), *geography, merchant_slug=scenario.cinema)


def stored(db: Session, merchant_id: int, monday: date) -> Report:
    """The one stored weekly report of a merchant's week."""
    return db.scalars(
        select(Report).where(Report.merchant_id == merchant_id, Report.period_start == monday)
    ).one()


def releases(db: Session, merchant_id: int) -> list[PrivacyRelease]:
    """The merchant's privacy releases."""
    return list(db.scalars(select(PrivacyRelease).where(PrivacyRelease.merchant_id == merchant_id)))


def recount(db: Session, ids: set[int], labels: list[str]) -> Counter:
    """Published cell (`code+code+…`) -> distinct subscribers, from home areas read from SQL."""
    homes = dict(db.execute(select(Subscriber.id, Subscriber.home_area)).all())
    counts: Counter = Counter()
    for sid in ids:
        row = next((label for label in labels if homes[sid] in label.split("+")), None)
        if row is not None:
            counts[row] += 1
    return counts


def test_exact_week_rows_each_cover_k_subscribers_recounted_from_sql(db, scenario, first_run):
    assert first_run["merchants"][0]["status"] == "stored"
    assert first_run["refused"] == 0 and first_run["period"] == "2026-W47"
    report = stored(db, scenario.cinema_id, W47)
    body = report.body
    assert (report.k, report.epsilon, report.kind) == (K, 0.0, "weekly")
    assert report.period_end == W48
    assert body["guarantees"]["k"] == K and body["guarantees"]["epsilon"] == 0
    labels = [row["area"] for row in body["taste"]]
    # 75120 (4), 93048 (3) and 94080 (2) are each under k and adjacent: only their union is shown
    assert labels == ["75111", "75120+93048+94080", "75112"]
    counts = recount(db, scenario.eligible, labels)
    for row in body["taste"]:
        assert row["subscribers"] >= K
        assert row["subscribers"] == counts[row["area"]]
    placed = len(scenario.eligible) - ELIGIBLE["99999"]
    assert sum(row["subscribers"] for row in body["taste"]) == placed
    # the one unplaceable subscriber is withheld, and that count (under k) is not published
    assert body["suppression"]["all_suppressed"] is False
    assert body["suppression"]["suppressed_subscribers"] is None
    assert body["suppression"]["suppressed_below_k"] is True
    cells = body["catchment"]["cells"]
    assert cells and all(cell["subscribers"] >= K for cell in cells)
    assert sum(cell["subscribers"] for cell in cells) <= placed
    assert body["catchment"]["polygon"]["type"] in {"Polygon", "MultiPolygon"}
    assert body["period"] == {
        "iso_week": "2026-W47",
        "start": "2026-11-16",
        "end": "2026-11-23",
        "time_zone": "Europe/Paris",
        "start_utc": "2026-11-15T23:00:00+00:00",
        "end_utc": "2026-11-22T23:00:00+00:00",
    }
    assert len(body["suggestions"]) == 5


def test_people_without_a_live_statistics_consent_never_count(db, scenario, first_run):
    body = stored(db, scenario.cinema_id, W47).body
    # every excluded person's taste is pure classical; one of them counted would show
    assert all(row["classical"] == 0.0 for row in body["taste"])
    assert all(profile["classical"] == 0.0 for profile in body["segments"])
    total = sum(row["subscribers"] for row in body["taste"])
    assert total == len(scenario.eligible) - 1
    visits = sum(cell["visits"] for cell in body["catchment"]["cells"])
    eligible_visits = db.scalar(
        select(func.count())
        .select_from(Visit)
        .where(
            Visit.subscriber_id.in_(scenario.eligible),
            Visit.started_at >= datetime(2026, 11, 15, 23, tzinfo=UTC),
        )
    )
    # the unplaceable subscriber's visits are the only eligible ones outside the cells
    assert visits + body["catchment"]["suppressed_visits"] <= eligible_visits


def test_too_few_subscribers_store_a_report_saying_all_was_suppressed(app, db, scenario, geography):
    with sessions(app)() as s:
        out = job.run(s, W47, job.JobOptions(k=K), *geography, merchant_slug=scenario.salon)
    line = out["merchants"][0]
    assert line["status"] == "stored" and line["all_suppressed"] is True and line["rows"] == 0
    body = stored(db, scenario.salon_id, W47).body
    assert body["taste"] == [] and body["catchment"]["cells"] == []
    assert body["catchment"]["polygon"] is None
    # 3 visits by 3 people: the number itself would be a cell under k
    assert body["catchment"]["suppressed_visits"] is None
    assert body["catchment"]["suppressed_below_k"] is True
    assert body["suppression"]["all_suppressed"] is True
    assert body["suppression"]["suppressed_subscribers"] is None  # 3 < k is not published
    assert body["guarantees"]["k"] == K


def test_exact_rerun_is_idempotent(app, db, scenario, geography, first_run):
    before = stored(db, scenario.cinema_id, W47)
    body, report_id = before.body, before.id
    with sessions(app)() as s:
        again = job.run(s, W47, job.JobOptions(k=K), *geography, merchant_slug=scenario.cinema)
    assert again["merchants"][0]["status"] == "unchanged"
    assert again["merchants"][0]["report_id"] == report_id
    db.expire_all()
    after = stored(db, scenario.cinema_id, W47)
    assert after.id == report_id and after.body == body
    weekly = [r for r in releases(db, scenario.cinema_id) if r.window_start == W47]
    assert len(weekly) == 1 and weekly[0].epsilon == 0.0


def test_exact_rerun_with_another_k_is_refused(app, db, scenario, geography, first_run):
    with sessions(app)() as s:
        out = job.run(s, W47, job.JobOptions(k=6), *geography, merchant_slug=scenario.cinema)
    line = out["merchants"][0]
    assert line["status"] == "refused" and "k=5" in line["reason"] and out["refused"] == 1
    assert stored(db, scenario.cinema_id, W47).k == K


def test_noisy_week_is_released_once_and_the_second_draw_is_refused(
    app, db, scenario, geography, first_run
):
    noisy = job.JobOptions(k=K, epsilon=1.0, epsilon_budget=3.0)
    # W47 already has an exact release: a noisy one of the same week is refused too
    with sessions(app)() as s:
        out = job.run(s, W47, noisy, *geography, merchant_slug=scenario.cinema)
    assert out["merchants"][0]["status"] == "refused"
    assert "already released" in out["merchants"][0]["reason"]
    # W48 holds only the next-week visitors, who are excluded elsewhere but count here
    with sessions(app)() as s:
        first = job.run(s, W48, noisy, *geography, merchant_slug=scenario.cinema, now=AFTER_W48)
    assert first["merchants"][0]["status"] == "stored"
    assert first["merchants"][0]["epsilon_spent"] == pytest.approx(1.0)
    report = stored(db, scenario.cinema_id, W48)
    assert report.epsilon == 1.0 and report.body["guarantees"]["mechanism"] == "laplace"
    assert report.body["guarantees"]["threshold"] > K
    assert report.body["suppression"]["suppressed_subscribers"] is None
    body = report.body
    for options in (noisy, job.JobOptions(k=K)):  # neither a second draw nor an exact copy
        with sessions(app)() as s:
            out = job.run(s, W48, options, *geography, merchant_slug=scenario.cinema, now=AFTER_W48)
        assert out["merchants"][0]["status"] == "refused"
        assert "already released" in out["merchants"][0]["reason"]
    db.expire_all()
    assert stored(db, scenario.cinema_id, W48).body == body
    weekly = [r for r in releases(db, scenario.cinema_id) if r.window_start == W48]
    assert [(r.epsilon, r.delta) for r in weekly] == [(1.0, 1e-6)]


def test_budget_is_kept_across_runs(app, db, scenario, geography, first_run):
    tight = job.JobOptions(k=K, epsilon=0.5, epsilon_budget=0.4)
    with sessions(app)() as s:
        out = job.run(s, date(2026, 11, 2), tight, *geography, merchant_slug=scenario.salon)
    assert out["merchants"][0]["status"] == "refused"
    assert "budget" in out["merchants"][0]["reason"]
    assert all(r.window_start != date(2026, 11, 2) for r in releases(db, scenario.salon_id))


def test_latest_reports_are_bundles_newest_first_with_their_guarantees(db, scenario, first_run):
    reports = job.latest_reports(db, scenario.cinema_id)
    assert [r["id"] for r in reports][-1] == "2026-11-16"
    assert [r["id"] for r in reports] == sorted((r["id"] for r in reports), reverse=True)
    exact = reports[-1]
    assert exact["k"] == K and exact["noisy"] is False and exact["epsilon"] == 0.0
    assert exact["guarantees"]["k"] == K and "suppression" in exact and exact["taste"]
    json.dumps(reports)  # ready for a template or an API as is
    assert job.latest_reports(db, scenario.cinema_id, limit=1) == reports[:1]
    assert job.latest_reports(db, -1) == []


@pytest.mark.parametrize(
    ("text", "monday"),
    [("2026-W47", W47), ("2026-11-16", W47), ("2026-W01", date(2025, 12, 29))],
)
def test_period_is_an_iso_week_or_its_monday(text: str, monday: date) -> None:
    assert job.parse_period(text) == monday


@pytest.mark.parametrize("text", ["2026-11-17", "2026-W54", "last week", "2026-13-01"])
def test_other_periods_are_refused(text: str) -> None:
    with pytest.raises(job.JobError):
        job.parse_period(text)


def test_paris_weeks_follow_daylight_saving_time() -> None:
    # summer time ends on Sunday 25 October 2026: that week is one hour longer
    start, end = job.week_bounds(date(2026, 10, 19), "Europe/Paris")
    assert start == datetime(2026, 10, 18, 22, tzinfo=UTC)
    assert end == datetime(2026, 10, 25, 23, tzinfo=UTC)


def cli(*args: str, url: str, areas: str | None = None) -> subprocess.CompletedProcess:
    """`python -m analytics ...` in a real process against the given database."""
    env = {**os.environ, "DATABASE_URL": url}
    if areas is not None:
        env["CM_AREAS_FILE"] = areas
    return subprocess.run(
        [sys.executable, "-m", "analytics", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_command_line_run_on_a_migrated_sqlite_file(tmp_path, geography):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(url)
    engine = make_engine(url, pooled=False)
    with Session(engine) as db:
        sc = seed(db, "cli")
    done = cli("run", "--period", "2026-W47", "--merchant", sc.cinema, url=url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["merchants"][0]["status"] == "stored" and summary["k"] == 5
    with Session(engine) as db:
        # the same week again, from its Monday: nothing changes
        again = job.run(db, job.parse_period("2026-11-16"), job.JobOptions(), *geography,
                        merchant_slug=sc.cinema)  # fmt: skip
        assert again["merchants"][0]["status"] == "unchanged"
        # every active merchant when none is named: one noisy week each
        noisy = job.run(db, W48, job.JobOptions(epsilon=1.0), *geography, now=AFTER_W48)
        assert {m["status"] for m in noisy["merchants"]} == {"stored"}
    # W48 may have ended less than a day before this suite runs: its settle day is waived
    refused = cli("run", "--period", "2026-W48", "--epsilon", "1", "--settle-hours", "0", url=url)
    assert refused.returncode == 3
    assert refused.stderr.count("\n") == 1 and "2026-W48 is published and final" in refused.stderr
    statuses = [m["status"] for m in json.loads(refused.stdout)["merchants"]]
    assert statuses == ["refused"] * 3
    with Session(engine) as db:
        bodies = job.latest_reports(db, sc.cinema_id)
        count = db.scalar(select(func.count()).select_from(PrivacyRelease))
    engine.dispose()
    assert [b["id"] for b in bodies] == ["2026-11-23", "2026-11-16"]
    assert count == 1 + 3  # W47 for the cinema, W48 for each of the three merchants
    assert all(row["subscribers"] >= 5 for b in bodies for row in b["taste"])


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    """A migrated SQLite file with nobody in it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('empty') / 'empty.db'}"
    upgrade(url)
    return url


def test_the_job_checks_the_mechanisms_the_reports_offer() -> None:
    assert job.MECHANISMS == MECHANISMS


def test_a_bad_period_exits_2_with_one_line_from_a_real_process(empty_db):
    done = cli("run", "--period", "2026-11-17", url=empty_db)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "analytics run: error: --period 2026-11-17 is a Tuesday; report weeks start on a Monday\n"
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--period", "2026-W47", "--k", "3"], "--k"),
        (["--period", "2026-W47", "--epsilon", "-1"], "--epsilon"),
        (["--period", "2026-W47", "--epsilon", "nan"], "--epsilon"),
        (["--period", "2026-W47", "--merchant", "nobody-here"], "nobody-here"),
        (["--period", "2026-W47", "--mechanism", "coin"], "--mechanism"),
        (["--period", "2026-W47", "--tz", "UTC"], "unrecognized arguments"),
        (["--period", "2026-W47", "--k", "five"], "invalid int"),
        (["--period", "2026-W99"], "ISO week"),
        (["--k", "5"], "--period"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(empty_db, capsys, args, words):
    with pytest.raises(SystemExit) as stop:  # argparse's own errors leave through SystemExit
        raise SystemExit(main(["run", *args, "--database-url", empty_db]))
    out, err = capsys.readouterr()
    assert stop.value.code == 2
    assert out == "" and len(err.strip().splitlines()) == 1
    assert words in err


def test_missing_polygons_fail_with_one_clear_line(tmp_path, capsys):
    missing = tmp_path / "nowhere.geojson"
    code = main(["run", "--period", "2026-W47", "--areas", str(missing),
                 "--database-url", f"sqlite:///{tmp_path / 'x.db'}"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(missing) in err and "CM_AREAS_FILE" in err


def test_unmigrated_database_fails_with_one_line(tmp_path, capsys):
    code = main(["run", "--period", "2026-W47", "--database-url", f"sqlite:///{tmp_path / 'r.db'}"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "database" in err and "upgrade head" in err


def test_concurrent_runs_never_spend_the_budget_twice(app, db, geography):
    with sessions(app)() as s:
        merchant = create_merchant(s, f"duo-{secrets.token_hex(3)}", "Duo", "shop")
        slug, merchant_id = merchant.slug, merchant.id
        s.commit()
    # each release fits the budget alone, both together do not
    options = job.JobOptions(k=K, epsilon=0.6, epsilon_budget=1.0)
    start = threading.Barrier(2)
    outcomes: list[object] = []

    def one(monday: date) -> None:
        with sessions(app)() as s:
            start.wait()
            try:
                outcomes.append(job.run(s, monday, options, *geography, merchant_slug=slug))
            except OperationalError as exc:  # SQLite may refuse the loser's write outright
                outcomes.append(exc)

    threads = [threading.Thread(target=one, args=(d,)) for d in (date(2026, 11, 2), W47 - WEEK)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    statuses = sorted(
        o["merchants"][0]["status"] if isinstance(o, dict) else "error" for o in outcomes
    )
    assert len(statuses) == 2 and statuses[0] in {"error", "refused"} and statuses[1] == "stored"
    spent = [r.epsilon for r in releases(db, merchant_id)]
    assert spent == [0.6]


@pytest.mark.privacy
def test_a_noisy_week_does_not_tell_whether_anyone_came(app, db, geography):
    # neighbouring weeks of one merchant: nobody at all, or one placed visitor (withheld by
    # the noise). The empty week was published through the hierarchy report with its own
    # threshold (k + tail of a count noise on epsilon/2) and `suppressed_visits: 0`; the
    # other through the catchment with k + tail on epsilon/8 and no suppressed visits
    with sessions(app)() as s:
        merchant = create_merchant(s, f"alone-{secrets.token_hex(3)}", "Alone", "salon")
        chair = create_venue(s, merchant, "Fauteuil", "site").id
        sub = person(s, "alone", "75111", {"pop": 1.0})
        stats_consent(s, sub, merchant)
        visit(s, sub, merchant, chair, at(W47 + timedelta(days=2), 10))
        slug, merchant_id = merchant.slug, merchant.id
        s.commit()
    noisy = job.JobOptions(k=K, epsilon=1.0, epsilon_budget=3.0)
    bodies = []
    for monday in (W47, W47 - WEEK):  # one visitor, then nobody
        with sessions(app)() as s:
            out = job.run(s, monday, noisy, *geography, merchant_slug=slug)
        assert out["merchants"][0]["status"] == "stored"
        bodies.append(stored(db, merchant_id, monday).body)
    published = ("guarantees", "suppression", "catchment", "taste", "segments", "suggestions")
    one, nobody = ({key: body[key] for key in published} for body in bodies)
    assert one == nobody
    assert one["catchment"]["suppressed_visits"] is None and one["guarantees"]["threshold"] > K
