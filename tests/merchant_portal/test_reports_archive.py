"""Reports after the audit: every stored week reachable (pages, CSV by week), the suppression
stated on the page and in the CSV with k and the noise, and CSV cells that cannot run as
formulas. The weeks are computed and stored by the real analytics job on the portal's database."""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from analytics import job
from merchant_portal.reports import taste_csv
from store_server import services
from store_server.db import sessions
from store_server.models import Merchant, Visit
from tests.merchant_portal.conftest import login

W37 = date(2026, 9, 7)
NORMAL_WEEKS = [W37 + timedelta(weeks=i) for i in range(9)]  # 2026-W37 … 2026-W45
EMPTY_WEEK = date(2026, 11, 9)  # 2026-W46: three visitors, everything withheld
EVIL_WEEK = date(2026, 8, 31)  # 2026-W36: areas whose codes look like formulas
NOISY_WEEK = date(2026, 8, 24)  # 2026-W35: epsilon 1
# `+` cannot start a code (it joins merged cells): taste_csv is checked for it below
# Home areas are at most 16 characters (subscribers.home_area).
EVIL_CODES = ["=1-2", "@SUM(A1)", "-3", '=HYPERLINK("x")', "#x"]
PASSWORD = "archive-pass-2026"


def evil_areas(path: Path) -> Path:
    """Five far-apart squares near Paris whose codes a spreadsheet would run as formulas."""
    features = []
    for i, code in enumerate(EVIL_CODES):
        x, y = 2.0 + i * 0.2, 48.5
        ring = [[x, y], [x + 0.01, y], [x + 0.01, y + 0.01], [x, y + 0.01], [x, y]]
        features.append({"type": "Feature", "properties": {"code": code, "departement": "=D"},
                         "geometry": {"type": "Polygon", "coordinates": [ring]}})  # fmt: skip
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.fixture(scope="module")
def archive(portal_app: Any, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A merchant with 12 weeks stored by the job, and its owner's login."""
    slug = f"archive-{secrets.token_hex(3)}"
    email = f"{slug}@demo.collective-mood.test"
    paris = job.load_geography(shared_data / "geo" / "paris-petite-couronne.geojson")
    evil = job.load_geography(evil_areas(tmp_path_factory.mktemp("evil") / "evil.geojson"))
    n = 0
    with sessions(portal_app)() as db:
        merchant = services.create_merchant(db, slug, "Ciné Archive", "cinema")
        hall = services.create_venue(db, merchant, "Salle", "site").id
        services.create_staff(db, email, PASSWORD, "owner", merchant)

        def come(area: str, monday: date, count: int) -> None:
            nonlocal n
            for _ in range(count):
                n += 1
                sub = services.create_subscriber(
                    db, f"dir:arch{n}:{secrets.token_hex(3)}", f"a{n}", [],
                    {"genres": {"pop": 0.6, "jazz": 0.4}}, area,
                )  # fmt: skip
                consent = services.grant_consent(db, sub, None, "preferences", True, None)
                consent.valid_from = datetime(2026, 1, 1, tzinfo=UTC)
                start = datetime(monday.year, monday.month, monday.day, 14, tzinfo=UTC)
                start += timedelta(days=1)
                db.add(Visit(subscriber_id=sub.id, merchant_id=merchant.id, venue_id=hall,
                             zone="salle", started_at=start, ended_at=start + timedelta(hours=1),
                             dwell_s=3600.0))  # fmt: skip

        for monday in NORMAL_WEEKS:
            come("75111", monday, 6)
            come("92004", monday, 1)  # alone in Asnières: withheld, and so is their number
        come("75111", EMPTY_WEEK, 3)
        for code in EVIL_CODES:
            come(code, EVIL_WEEK, 5)
        come("75111", NOISY_WEEK, 40)
        db.commit()
        runs = [(m, job.JobOptions(), paris) for m in [*NORMAL_WEEKS, EMPTY_WEEK]]
        runs += [
            (EVIL_WEEK, job.JobOptions(), evil),
            (NOISY_WEEK, job.JobOptions(epsilon=1), paris),
        ]
        for monday, options, geography in runs:
            out = job.run(db, monday, options, *geography, merchant_slug=slug)
            assert out["merchants"][0]["status"] == "stored", out
    return {"slug": slug, "email": email}


@pytest.fixture
def owner(client: Any, archive: dict) -> Any:
    """A test client signed in as the archive merchant's owner."""
    assert login(client, archive["email"], PASSWORD).status_code == 302
    return client


def weeks_on(page: str) -> list[str]:
    """The weeks a rendered reports page shows, in order."""
    return re.findall(r'<article class="card report" data-report="([^"]+)"', page)


def csv_of(client: Any, monday: date) -> tuple[list[str], list[dict[str, str]]]:
    """The `#` lines and the rows of one week's CSV export."""
    resp = client.get(f"/portal/reports/{monday.isoformat()}.csv")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    lines = resp.get_data(as_text=True).splitlines()
    notes = [line for line in lines if line.startswith("#")]
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    return notes, rows


def test_every_stored_week_is_on_some_page_and_its_csv_is_found(owner):
    first = owner.get("/portal/reports").get_data(as_text=True)
    assert len(weeks_on(first)) == 8 and 'rel="next"' in first and "Page 1 of 2" in first
    second_resp = owner.get("/portal/reports?page=2")
    assert second_resp.status_code == 200
    second = second_resp.get_data(as_text=True)
    assert 'rel="prev"' in second and 'rel="next"' not in second
    stored = [*NORMAL_WEEKS, EMPTY_WEEK, EVIL_WEEK, NOISY_WEEK]
    shown = weeks_on(first) + weeks_on(second)
    assert shown == sorted((m.isoformat() for m in stored), reverse=True)
    # the oldest week is ten weeks back: its CSV is found by its Monday, not among the newest
    assert owner.get(f"/portal/reports/{NOISY_WEEK}.csv").status_code == 200
    for bad in ("3", "0", "-1", "two", "99999999999"):
        assert owner.get(f"/portal/reports?page={bad}").status_code == 404
    for week in ("2026-09-08", "2026-13-01", "2025-09-07", "latest"):
        assert owner.get(f"/portal/reports/{week}.csv").status_code == 404


def test_another_merchant_cannot_fetch_an_old_week(salon, archive):
    assert salon.get(f"/portal/reports/{NOISY_WEEK}.csv").status_code == 404
    assert salon.get(f"/portal/reports/{W37}.csv").status_code == 404


def test_suppression_is_stated_on_the_page(owner):
    page = owner.get("/portal/reports").get_data(as_text=True)
    card = re.search(rf'data-report="{NORMAL_WEEKS[-1]}".*?</article>', page, re.S).group(0)
    said = re.findall(r'data-said="([^"]+)"', card)
    # one person withheld: that it happened is stated, how many is not (it is under k)
    assert said == ["rep_suppressed_below_k", "rep_suppressed_visits_hidden"]
    assert "fewer than k = 5, so their number is withheld" in card
    empty = re.search(rf'data-report="{EMPTY_WEEK}".*?</article>', page, re.S).group(0)
    assert "rep_all_suppressed" in empty and "every row was withheld" in empty


def test_the_csv_states_k_noise_and_suppression(owner):
    notes, rows = csv_of(owner, NORMAL_WEEKS[-1])
    assert "# k: 5" in notes and "# noise: none" in notes and "# epsilon: 0" in notes
    assert "# suppressed_subscribers: withheld (fewer than k)" in notes
    assert "# suppressed_visits: withheld (fewer than k people)" in notes
    assert "# all_suppressed: no" in notes and "# week: 2026-11-02 (Europe/Paris)" in notes
    assert all("," not in note for note in notes)
    assert [(r["area"], r["subscribers"]) for r in rows] == [("75111", "6")]
    notes, rows = csv_of(owner, NOISY_WEEK)
    assert "# noise: laplace" in notes and "# epsilon: 1" in notes
    assert "# suppressed_subscribers: not stated (hidden by the noise)" in notes
    # stated exactly, None or 0 would say whether 1 to k - 1 people were withheld
    assert "# suppressed_visits: not stated (hidden by the noise)" in notes
    threshold = next(n for n in notes if n.startswith("# threshold: "))
    assert float(threshold.split(": ")[1]) > 5


def test_an_all_suppressed_week_still_downloads_what_it_states(owner):
    resp = owner.get(f"/portal/reports/{EMPTY_WEEK}.csv")
    text = resp.get_data(as_text=True)
    assert text  # never a 0-byte file
    notes, rows = csv_of(owner, EMPTY_WEEK)
    assert "# all_suppressed: yes" in notes and "# k: 5" in notes and rows == []
    assert text.splitlines()[-1] == "area,subscribers"


def test_csv_cells_cannot_run_as_formulas(owner):
    _notes, rows = csv_of(owner, EVIL_WEEK)
    assert sorted(r["area"] for r in rows) == sorted(f"'{code}" for code in EVIL_CODES)
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r", "#"))
    assert all(int(r["subscribers"]) == 5 for r in rows)


def test_the_job_stored_the_weeks_under_the_archive_merchant(portal_app, archive):
    with sessions(portal_app)() as db:
        merchant = db.scalar(select(Merchant).where(Merchant.slug == archive["slug"]))
        assert job.count_reports(db, merchant.id) == 12
        oldest = job.report_of_week(db, merchant.id, NOISY_WEEK)
        assert oldest is not None and oldest["noisy"] is True


def test_taste_csv_defuses_every_formula_start_and_keeps_numbers() -> None:
    starts = ["=A1", "+A1", "-A1", "@A1", "\tA1", "\rA1", "#A1", "plain"]
    bundle = {
        "id": "2026-11-16",
        "guarantees": {"k": 5, "epsilon": 0.0},
        "taste": [{"area": s, "subscribers": 5, "pop": -0.5} for s in starts],
    }
    # split on \n only: the quoted \r cell is part of its row
    body = "\n".join(line for line in taste_csv(bundle).split("\n") if not line.startswith("#"))
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    assert [r["area"] for r in rows] == ["'" + s for s in starts[:-1]] + ["plain"]
    # numbers are numbers, not text a spreadsheet might run: they are left alone
    assert {r["pop"] for r in rows} == {"-0.5"}
