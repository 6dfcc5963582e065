"""The weekly report job: consented visits, home areas and tastes out of SQL, through
`analytics.reports.weekly_report`, and the bundle and the privacy budget it spent back into SQL.

A thin adapter: every privacy decision (k, generalisation, noise, one release per window, the
budget) is taken by the pure modules; this file only chooses which rows they see and keeps the
ledger's memory in the `privacy_releases` table.

A stored week is final.  Re-running it recomputes the bundle and answers `unchanged` when it is
identical, and refuses otherwise: two versions of one week that differ by a withdrawal are a
subtraction away from that one person's tastes.  Only weeks that have ended are run, so no
week is frozen half-full.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from analytics.hierarchy import Hierarchy, parse_hierarchy
from analytics.models import PrivacyRelease, Report
from analytics.privacy import PrivacyError, PrivacyLedger, Release
from analytics.taste import MIN_K
from store_server.config import REPO
from store_server.models import Consent, Merchant, Subscriber, Visit, statistics_cover
from store_server.streaming import GENRES

if TYPE_CHECKING:
    import geopandas as gpd

KIND = "weekly"
# analytics.reports.MECHANISMS, repeated so that checking arguments does not load scikit-learn
MECHANISMS = ("laplace", "gaussian")
DEFAULT_AREAS = REPO.parent / "shared" / "data" / "geo" / "paris-petite-couronne.geojson"
AREAS_ENV = "CM_AREAS_FILE"
# Merchants think in local weeks. One zone for every run, never an option: weeks cut in two
# zones would overlap by an hour, and the difference of two such reports is a small cell.
REPORT_TZ = "Europe/Paris"
ISO_WEEK = re.compile(r"^([0-9]{4})-W([0-9]{2})\Z")
# Monday of 2020-W01: no consented visit predates the programme, and an earlier week is a typo
EARLIEST_WEEK = date(2019, 12, 30)
# A week is run a day after it ends: a scanner's disk queue (1,000,000 sightings by default)
# holds some two hours of a busy venue, a day of a quiet one, and it uploads when it is back.
SETTLE_HOURS = 24.0
MAX_SETTLE_HOURS = 24.0 * 366
SCOPE = (
    "visits of subscribers whose statistics consent covered this merchant for the whole visit "
    "and was never withdrawn"
)


class JobError(ValueError):
    """Arguments or configuration the job cannot run with (reported as one line)."""


@dataclass(frozen=True)
class JobOptions:
    """What a run publishes: k, the noise (epsilon 0 = exact) and the per-merchant budget."""

    k: int = MIN_K
    epsilon: float = 0.0
    delta: float = 1e-6
    mechanism: str = "laplace"
    epsilon_budget: float = 10.0
    delta_budget: float = 1e-5
    share: float = 0.7
    # A scanner cut off from the store keeps its sightings on disk and uploads them when it is
    # back; the visits they make are the week's too, and a stored week is final.
    settle_hours: float = SETTLE_HOURS

    def check(self) -> None:
        """Refuse options the report could not honour, before touching the database."""
        if self.k < MIN_K:
            raise JobError(f"--k must be at least {MIN_K}")
        if not (self.epsilon >= 0 and np.isfinite(self.epsilon)):
            raise JobError("--epsilon must be 0 (exact) or positive")
        if self.epsilon > 0 and not 0 < self.delta < 1:
            raise JobError("--delta must be in (0, 1)")
        if self.mechanism not in MECHANISMS:
            raise JobError(f"--mechanism must be one of {', '.join(MECHANISMS)}")
        if not 0 < self.share <= 1:
            raise JobError("--share must be in (0, 1]")
        # NaN compares false with everything: a NaN budget would switch the ledger off
        if not (np.isfinite(self.epsilon_budget) and self.epsilon_budget >= 0):
            raise JobError("--epsilon-budget must be a finite number >= 0")
        if not (np.isfinite(self.delta_budget) and self.delta_budget >= 0):
            raise JobError("--delta-budget must be a finite number >= 0")
        if not (np.isfinite(self.settle_hours) and 0 <= self.settle_hours <= MAX_SETTLE_HOURS):
            limit = f"{MAX_SETTLE_HOURS:g} (a year)"
            raise JobError(f"--settle-hours must be a number from 0 to {limit}")


def parse_period(text: str) -> date:
    """The Monday of `YYYY-Www` (ISO week) or of `YYYY-MM-DD` (which must be a Monday)."""
    text = text.strip()
    week = ISO_WEEK.match(text)
    try:
        if week:
            return date.fromisocalendar(int(week[1]), int(week[2]), 1)
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise JobError(f"--period {text!r} is not an ISO week (2026-W47) or a date") from exc
    if day.weekday() != 0:
        raise JobError(f"--period {text} is a {day:%A}; report weeks start on a Monday")
    return day


def check_period(
    monday: date,
    now: datetime | None = None,
    tz: str = REPORT_TZ,
    settle_hours: float = SETTLE_HOURS,
) -> None:
    """Refuse a week before 2020-W01, or one that has not ended (in the report's zone) at least
    settle_hours ago."""
    if monday < EARLIEST_WEEK:
        raise JobError(f"--period {iso_week(monday)} is before 2020-W01; no report covers it")
    now = datetime.now(UTC) if now is None else now
    # a future Monday is refused before its end is computed (9999-W52 has no next Monday)
    if monday > now.date() or now < week_bounds(monday, tz)[1]:
        raise JobError(
            f"--period {iso_week(monday)} has not ended yet in {tz}; a stored week is final, "
            "so only past weeks are run"
        )
    if now < week_bounds(monday, tz)[1] + timedelta(hours=settle_hours):
        raise JobError(
            f"--period {iso_week(monday)} ended less than {settle_hours:g} h ago; a stored week "
            "is final, so it is run once scanners' late uploads are in (--settle-hours)"
        )


def iso_week(monday: date) -> str:
    """`YYYY-Www` of a Monday."""
    year, week, _ = monday.isocalendar()
    return f"{year:04d}-W{week:02d}"


def areas_file(env: dict[str, str] | None = None) -> Path:
    """The area polygons to use: $CM_AREAS_FILE, else the shared Paris file beside the repo."""
    e = os.environ if env is None else env
    return Path(e.get(AREAS_ENV) or DEFAULT_AREAS)


def load_geography(path: Path) -> tuple[gpd.GeoDataFrame, Hierarchy]:
    """Area polygons (column `code`) and the hierarchy code -> département -> `*` over them."""
    if not path.is_file():
        raise JobError(f"area polygons not found at {path} (set --areas or ${AREAS_ENV})")
    import geopandas as gpd  # only now: a bad argument is reported without loading the GIS stack

    try:
        areas = gpd.read_file(path)
    except Exception as exc:  # the GIS stack raises many types; the contract is one line
        raise JobError(f"cannot read area polygons {path}: {type(exc).__name__}") from exc
    if "code" not in areas.columns or "departement" not in areas.columns:
        raise JobError(f"{path}: features need `code` and `departement` properties")
    areas["code"] = areas["code"].astype(str)
    joined = areas["code"][areas["code"].str.contains("+", regex=False)]
    if len(joined):
        # `+` joins the codes of a merged cell: `a+b` must not also be the name of one area
        raise JobError(f"{path}: area code {joined.iloc[0]!r} contains '+'")
    rows = [[c, str(d), "*"] for c, d in zip(areas["code"], areas["departement"], strict=True)]
    return areas, parse_hierarchy(rows, source=str(path))


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything this project writes is UTC
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def week_bounds(monday: date, tz: str = REPORT_TZ) -> tuple[datetime, datetime]:
    """The UTC instants of local Monday 00:00 and the next Monday 00:00 (DST-aware)."""
    zone = ZoneInfo(tz)
    try:
        start = datetime(monday.year, monday.month, monday.day, tzinfo=zone)
        end_day = monday + timedelta(days=7)
        end = datetime(end_day.year, end_day.month, end_day.day, tzinfo=zone)
        return start.astimezone(UTC), end.astimezone(UTC)
    except OverflowError as exc:  # 0001-W01 or 9999-W52: outside what datetime can hold
        raise JobError(f"--period {monday} is outside the calendar the job can handle") from exc


def consented_visits(merchant_id: int, until: datetime) -> Select[tuple[int, int, datetime, float]]:
    """Visits at the merchant started before `until` that a statistics consent covered.

    The consent must cover this merchant (or all), be in force from the visit's start to its end,
    and never have been withdrawn: a withdrawal means "stop", so later reports leave the
    person out even for visits made before it.
    """
    # a join, not EXISTS: consents has no subscriber index, and only for a join does SQLite
    # build a transient one (a correlated EXISTS scanned every consent for every visit)
    return (
        select(Visit.id, Visit.subscriber_id, Visit.started_at, Visit.dwell_s)
        .join(Consent, statistics_cover())
        .where(Visit.merchant_id == merchant_id, Visit.started_at < until)
        .distinct()
        .order_by(Visit.started_at, Visit.id)
    )


def home_area(code: str | None, known: set[str]) -> str | None:
    """The mapped area of a home code: itself, or the commune of an IRIS code; None if unmapped."""
    if not code:
        return None
    code = code.strip()
    if code in known:
        return code
    # an IRIS code is its commune's INSEE code followed by four digits
    if len(code) == 9 and code[:5] in known:
        return code[:5]
    return None


def _weights(taste: Any, genres: tuple[str, ...]) -> list[float]:
    raw = taste.get("genres", {}) if isinstance(taste, dict) else {}
    out = []
    for genre in genres:
        try:
            value = float(raw.get(genre, 0.0)) if isinstance(raw, dict) else 0.0
        except (TypeError, ValueError, OverflowError):
            value = 0.0
        # a weight is a share of listening: a corrupt 1e308 would overflow a row's sum and
        # outweigh everyone else in it, so it counts as at most 1
        out.append(min(max(value, 0.0), 1.0) if np.isfinite(value) else 0.0)
    return out


def load_inputs(
    db: Session,
    merchant_id: int,
    until: datetime,
    tz: str,
    known_areas: set[str],
    genres: tuple[str, ...] = GENRES,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Consented visits (subscriber, time in local wall time, dwell) and placed tastes.

    Genre columns are a fixed vocabulary so that which columns exist never depends on who came;
    subscribers whose home area has no polygon are left out of both tables (they cannot be
    placed in any row or cell).
    """
    rows = db.execute(consented_visits(merchant_id, until)).all()
    # naive values (SQLite) are UTC like every timestamp this project writes
    started = pd.to_datetime([r.started_at for r in rows], utc=True)
    visits = pd.DataFrame(
        {
            "subscriber": [str(r.subscriber_id) for r in rows],
            "time": started.tz_convert(tz).tz_localize(None),
            "dwell": np.array([r.dwell_s for r in rows], dtype=float),
        }
    )
    consented = {r.subscriber_id for r in rows}
    # one query for everyone who came, instead of thousands of bound ids
    came = select(Visit.subscriber_id).where(
        Visit.merchant_id == merchant_id, Visit.started_at < until
    )
    people = [
        p
        for p in db.execute(
            select(Subscriber.id, Subscriber.home_area, Subscriber.taste).where(
                Subscriber.id.in_(came.distinct())
            )
        )
        if p.id in consented
    ]
    tastes = pd.DataFrame(
        [
            [str(p.id), area, *_weights(p.taste, genres)]
            for p in people
            if (area := home_area(p.home_area, known_areas)) is not None
        ],
        columns=["subscriber", "area", *genres],
    )
    return visits, tastes


def _ledger(
    db: Session, merchant: Merchant, monday: date, options: JobOptions
) -> tuple[PrivacyLedger, PrivacyRelease | None]:
    """The merchant's ledger from its stored releases, and this window's release if any.

    An exact report of a window may be recomputed to check it is unchanged, so its own exact
    release is left out of the ledger; any other earlier release of the window stays in and
    makes the ledger refuse.
    """
    stored = db.scalars(
        select(PrivacyRelease).where(PrivacyRelease.merchant_id == merchant.id)
    ).all()
    mine = next((r for r in stored if r.window_start == monday), None)
    recheck = mine is not None and mine.epsilon == 0 and options.epsilon == 0
    releases = [
        Release(
            merchant.slug,
            (pd.Timestamp(r.window_start), pd.Timestamp(r.window_end)),
            r.epsilon,
            r.delta,
        )
        for r in stored
        if not (recheck and r is mine)
    ]
    ledger = PrivacyLedger(options.epsilon_budget, options.delta_budget, releases=releases)
    return ledger, mine


def _suppression(table: pd.DataFrame, visitors: int, k: int, noisy: bool) -> dict[str, Any]:
    """What was withheld, stated without publishing a count under k."""
    out: dict[str, Any] = {
        "all_suppressed": bool(table.empty),
        "rows": len(table),
        "rule": (
            f"home areas with fewer than {k} distinct subscribers are merged with adjacent "
            "visited areas into cells of at least k, or withheld; each subscriber counts in at "
            "most one cell, and the taste rows are those same cells"
        ),
    }
    if noisy:
        # the exact number of visitors is exactly what the noise hides
        out["suppressed_subscribers"] = None
        out["rule"] += "; cells whose noisy count is under the threshold are withheld"
        return out
    missing = visitors - int(table["subscribers"].sum()) if len(table) else visitors
    out["suppressed_subscribers"] = missing if missing == 0 or missing >= k else None
    out["suppressed_below_k"] = 0 < missing < k
    return out


def _empty_catchment(noisy: bool) -> dict[str, Any]:
    # what catchment() releases when nobody placeable came; noisy, it never states the
    # suppressed visits, and 0 here would tell an empty week from one whose visitors were withheld
    suppressed = None if noisy else 0
    return {"share": 0.0, "suppressed_visits": suppressed, "polygon": None, "cells": []}


def _withhold_small_remainder(area: dict[str, Any], placed: int, k: int) -> None:
    """Blank an exact count of suppressed visits that fewer than k subscribers made."""
    # the cells are >= k each, but "3 visits were left out" would describe 1 to 4 people
    left_out = placed - sum(int(cell.get("subscribers") or 0) for cell in area["cells"])
    area["suppressed_below_k"] = 0 < left_out < k
    if area["suppressed_below_k"]:
        area["suppressed_visits"] = None


def _final(outcome: dict[str, Any], monday: date, slug: str, why: str) -> dict[str, Any]:
    """The refusal of a re-run of a week already stored for the merchant."""
    return {
        **outcome,
        "status": "refused",
        "final": True,
        "reason": f"week {iso_week(monday)} is published for {slug} and final: {why}; "
        "nothing stored",
    }


def run_merchant(
    db: Session,
    merchant: Merchant,
    monday: date,
    options: JobOptions,
    areas: gpd.GeoDataFrame,
    hierarchy: Hierarchy,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """Compute, charge and store one merchant's week; returns its line of the summary."""
    from analytics.reports import weekly_report  # scikit-learn behind it: loaded when used

    outcome: dict[str, Any] = {"merchant": merchant.slug, "report_id": None}
    # serialises runs of one merchant on PostgreSQL so two budgets are never checked at once
    db.execute(select(Merchant.id).where(Merchant.id == merchant.id).with_for_update()).all()
    ledger, existing = _ledger(db, merchant, monday, options)
    earlier = db.scalars(
        select(Report).where(
            Report.merchant_id == merchant.id, Report.period_start == monday, Report.kind == KIND
        )
    ).one_or_none()
    if earlier is not None:
        # only an exact week re-run exactly can come out the same; anything else is a second,
        # different version of a published week, which a reader could subtract from the first
        why = None
        if earlier.epsilon != 0 or options.epsilon != 0:
            why = "it was already released, and noise is never drawn twice for one week"
        elif earlier.k != options.k:
            why = f"it was published with k={earlier.k}; a re-run must use the same k"
        if why is not None:
            db.rollback()
            return _final(outcome, monday, merchant.slug, why)
    start_utc, end_utc = week_bounds(monday)
    visits, tastes = load_inputs(db, merchant.id, end_utc, REPORT_TZ, set(areas["code"]))
    week_start = pd.Timestamp(monday)
    in_week = visits[visits["time"] >= week_start]
    placed = in_week["subscriber"].isin(set(tastes["subscriber"]))
    try:
        report = weekly_report(
            visits,
            tastes,
            hierarchy,
            merchant.slug,
            week_start,
            options.k,
            ledger,
            epsilon=options.epsilon,
            delta=options.delta,
            mechanism=options.mechanism,
            rng=rng,
            # an empty week has no catchment (filled in below) but, noisy, the same threshold
            areas=areas,
            share=options.share,
        )
    except PrivacyError as exc:
        db.rollback()
        return {**outcome, "status": "refused", "reason": str(exc)}
    body = report.to_dict()
    if body["catchment"] is None:
        body["catchment"] = _empty_catchment(options.epsilon > 0)
    if options.epsilon == 0:
        people = in_week.loc[placed, "subscriber"].nunique()
        _withhold_small_remainder(body["catchment"], people, options.k)
    body.update(
        kind=KIND,
        period={
            "iso_week": iso_week(monday),
            "start": monday.isoformat(),
            "end": (monday + timedelta(days=7)).isoformat(),
            "time_zone": REPORT_TZ,
            "start_utc": start_utc.isoformat(),
            "end_utc": end_utc.isoformat(),
        },
        scope=SCOPE,
        suppression=_suppression(
            report.table, in_week["subscriber"].nunique(), options.k, options.epsilon > 0
        ),
    )
    body = _plain(body)  # NaN and numpy scalars must not reach the JSON column
    summary = {
        "rows": len(report.table),
        "all_suppressed": bool(report.table.empty),
    }
    if earlier is not None:
        db.rollback()  # nothing is written for a week already stored, whatever the answer
        if earlier.body != body:
            return _final(
                outcome, monday, merchant.slug, "a re-run would change it (the data changed, "
                "e.g. a withdrawal), and two versions would reveal the difference"
            )  # fmt: skip
        spent = ledger.spent(merchant.slug)[0]
        return {
            **outcome,
            "status": "unchanged",
            "report_id": earlier.id,
            **summary,
            "epsilon_spent": float(spent),
            "epsilon_left": max(0.0, options.epsilon_budget - float(spent)),
        }
    try:
        if existing is None:
            db.add(
                PrivacyRelease(
                    merchant_id=merchant.id,
                    window_start=monday,
                    window_end=monday + timedelta(days=7),
                    epsilon=float(report.epsilon),
                    delta=float(report.delta),
                )
            )
            # the insert takes the write lock (SQLite) before the ledger is read again below
            db.flush()
        spent, spent_delta = db.execute(
            select(
                func.coalesce(func.sum(PrivacyRelease.epsilon), 0.0),
                func.coalesce(func.sum(PrivacyRelease.delta), 0.0),
            ).where(PrivacyRelease.merchant_id == merchant.id)
        ).one()
        if spent > options.epsilon_budget + 1e-12 or spent_delta > options.delta_budget + 1e-18:
            # a concurrent run of another week spent the budget after our ledger was read
            db.rollback()
            return {
                **outcome,
                "status": "refused",
                "reason": f"{merchant.slug}: a concurrent release used the budget; nothing stored",
            }
        row = Report(
            merchant_id=merchant.id,
            period_start=monday,
            period_end=monday + timedelta(days=7),
            kind=KIND,
            k=options.k,
            epsilon=float(report.epsilon),
            delta=float(report.delta),
            body=body,
            created_at=datetime.now(UTC),
        )
        db.add(row)
        db.commit()
    except IntegrityError:
        # the unique window (release or report) was taken between our read and our write by
        # another run of this week: its release stands, not ours
        db.rollback()
        return {
            **outcome,
            "status": "refused",
            "reason": f"a concurrent run released week {iso_week(monday)} for {merchant.slug}; "
            "nothing stored",
        }
    except SQLAlchemyError:
        # anything else (a lock held too long, a lost connection) is a failure, not a refusal
        db.rollback()
        raise
    return {
        **outcome,
        "status": "stored",
        "report_id": row.id,
        **summary,
        "epsilon_spent": float(spent),
        "epsilon_left": max(0.0, options.epsilon_budget - float(spent)),
    }


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def run(
    db: Session,
    monday: date,
    options: JobOptions,
    areas: gpd.GeoDataFrame,
    hierarchy: Hierarchy,
    merchant_slug: str | None = None,
    rng: np.random.Generator | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Run the week for one merchant (by slug) or every active one; returns the summary."""
    options.check()
    if monday.weekday() != 0:
        raise JobError(f"{monday} is not a Monday")
    check_period(monday, now, settle_hours=options.settle_hours)
    query = select(Merchant).order_by(Merchant.id)
    if merchant_slug is not None:
        query = query.where(Merchant.slug == merchant_slug)
    else:
        query = query.where(Merchant.status == "active")
    merchants = db.scalars(query).all()
    if merchant_slug is not None and not merchants:
        raise JobError(f"no merchant with slug {merchant_slug!r}")
    db.rollback()  # each merchant below runs in a transaction of its own
    results = []
    for merchant in merchants:
        slug = merchant.slug
        try:
            results.append(run_merchant(db, merchant, monday, options, areas, hierarchy, rng))
        except SQLAlchemyError as exc:
            if merchant_slug is not None:
                raise
            # one merchant's failure (a lock held too long, a broken row) must not cost the
            # others their week: it is reported and the run goes on to the next merchant
            _rollback_quietly(db)
            results.append(
                {
                    "merchant": slug,
                    "report_id": None,
                    "status": "failed",
                    "reason": database_failure(exc),
                }
            )
    return {
        "command": "run",
        "period": iso_week(monday),
        "start": monday.isoformat(),
        "time_zone": REPORT_TZ,
        "k": options.k,
        "epsilon": options.epsilon,
        "kind": KIND,
        "merchants": results,
        "stored": sum(r["status"] in ("stored", "unchanged") for r in results),
        "refused": sum(r["status"] == "refused" for r in results),
        "failed": sum(r["status"] == "failed" for r in results),
    }


def database_failure(exc: SQLAlchemyError) -> str:
    """One line naming a database failure, with a hint when the schema is missing."""
    first = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()
    missing = any(word in str(exc) for word in ("no such table", "does not exist"))
    hint = " (is the database migrated? alembic upgrade head)" if missing else ""
    return f"the database failed: {first[0] if first else type(exc).__name__}{hint}"


def _rollback_quietly(db: Session) -> None:
    try:
        db.rollback()
    except SQLAlchemyError:
        # a connection that died mid-transaction cannot roll back; the session starts afresh
        db.close()


def _bundle(row: Report) -> dict[str, Any]:
    """A stored report as the portal reads it: the body plus the row's own facts."""
    return {
        **row.body,
        "id": row.period_start.isoformat(),
        "report_id": row.id,
        "kind": row.kind,
        "k": row.k,
        "epsilon": row.epsilon,
        "delta": row.delta,
        "noisy": row.epsilon > 0,
        "created_at": _utc(row.created_at).isoformat(),
    }


def latest_reports(
    db: Session, merchant_id: int, limit: int = 8, offset: int = 0
) -> list[dict[str, Any]]:
    """The merchant's stored report bundles, newest week first, each with its guarantees.

    Each dict is the stored bundle (`guarantees` with k, epsilon, delta, mechanism, threshold;
    `suppression`; `taste`; `segments`; `suggestions`; `catchment`; `period`) plus `id` (the
    week's Monday, YYYY-MM-DD, as the portal's file store named it), `report_id`, `k`,
    `epsilon`, `delta`, `noisy` and `created_at`.  `offset` skips that many newer weeks (pages).
    """
    rows = db.scalars(
        select(Report)
        .where(Report.merchant_id == merchant_id)
        .order_by(Report.period_start.desc(), Report.id.desc())
        .limit(max(0, limit))
        .offset(max(0, offset))
    ).all()
    return [_bundle(row) for row in rows]


def count_reports(db: Session, merchant_id: int) -> int:
    """How many reports the merchant has stored (for paging through them)."""
    return int(
        db.scalar(select(func.count()).select_from(Report).where(Report.merchant_id == merchant_id))
        or 0
    )


def report_of_week(db: Session, merchant_id: int, monday: date) -> dict[str, Any] | None:
    """The merchant's stored weekly bundle of the week starting `monday`, however old, or None."""
    row = db.scalars(
        select(Report).where(
            Report.merchant_id == merchant_id, Report.period_start == monday, Report.kind == KIND
        )
    ).one_or_none()
    return None if row is None else _bundle(row)
