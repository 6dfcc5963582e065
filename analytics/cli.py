"""Command line: `anonymize` and `taste-report`, the contracts a DPO re-runs to check a report,
and `run`, the weekly job that computes and stores every merchant's report from the database."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

import pandas as pd

from analytics.hierarchy import HierarchyError, read_hierarchy
from analytics.kanon import AnonymizeError, anonymize
from analytics.taste import MIN_K, ReportError, taste_report

EXIT_USAGE = 2
EXIT_REFUSED = 3  # the privacy ledger refused at least one merchant's release


class JobFailed(Exception):
    """The job could not reach or use the database (reported as one line, exit 1)."""


class CliError(Exception):
    """Bad input reported as one line on stderr."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line, no usage dump: callers script this and read stderr
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _columns(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _read_csv(path: Path, sep: str) -> pd.DataFrame:
    try:
        # strings in, strings out: the untouched columns must leave exactly as they came
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise CliError(f"no such file: {path}") from exc
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CliError(f"cannot read {path}: {first}") from exc


def _read_subscribers(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    try:
        # ids and areas stay text (INSEE codes have leading zeros); weights load as floats
        return pd.read_csv(path, dtype={"subscriber": str, "area": str}, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CliError(f"cannot read {path}: {first}") from exc


def _anonymize(args: argparse.Namespace) -> None:
    if args.k < 2:
        raise CliError("--k must be at least 2")
    qi = _columns(args.qi)
    numeric = _columns(args.numeric)
    if not qi:
        raise CliError("--qi names no column")
    stray = [c for c in numeric if c not in qi]
    if stray:
        raise CliError(f"--numeric column {stray[0]!r} is not in --qi")
    table = _read_csv(args.input, args.sep)
    hierarchies = {}
    for column in qi:
        if column in numeric:
            continue
        path = args.hierarchies / f"{column}.csv"
        if not path.is_file():
            raise CliError(f"no hierarchy file {path} for quasi-identifier {column!r}")
        # ARX hierarchy files are ;-separated whatever the table uses
        hierarchies[column] = read_hierarchy(path, sep=";")
    result = anonymize(table, qi, hierarchies, numeric, args.k, args.max_suppression)
    try:
        result.table.to_csv(args.out, sep=args.sep, index=False)
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror}") from exc
    print(json.dumps(result.metrics))


def _taste_report(args: argparse.Namespace) -> None:
    if args.k < MIN_K:
        raise CliError(f"--k must be at least {MIN_K}")
    subscribers = _read_subscribers(args.subscribers)
    hierarchy = read_hierarchy(args.hierarchy, sep=";")
    report = taste_report(subscribers, hierarchy, args.k)
    try:
        report.to_csv(args.out, index=False)
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror}") from exc
    suppressed = int(len(subscribers["subscriber"].unique()) - report["subscribers"].sum())
    print(json.dumps({"rows": len(report), "k": args.k, "suppressed": suppressed}))


def _run(args: argparse.Namespace) -> int:
    # imported here so the DPO commands above never load SQL, Flask or the geography stack
    import time

    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from analytics import job
    from store_server.config import from_env, normalise_db_url
    from store_server.db import make_engine

    try:
        options = job.JobOptions(
            k=args.k,
            epsilon=args.epsilon,
            delta=args.delta,
            mechanism=args.mechanism,
            epsilon_budget=args.epsilon_budget,
            delta_budget=args.delta_budget,
            share=args.share,
        )
        options.check()
        monday = job.parse_period(args.period)
        areas, hierarchy = job.load_geography(args.areas or job.areas_file())
    except job.JobError as exc:
        raise CliError(str(exc)) from exc
    url = normalise_db_url(args.database_url or from_env()["DATABASE_URL"])
    began = time.perf_counter()
    engine = make_engine(url, pooled=False)
    try:
        with Session(engine) as db:
            summary = job.run(db, monday, options, areas, hierarchy, args.merchant)
    except job.JobError as exc:
        raise CliError(str(exc)) from exc
    except SQLAlchemyError as exc:
        first = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()
        missing = any(word in str(exc) for word in ("no such table", "does not exist"))
        hint = " (is the database migrated to revision 0003?)" if missing else ""
        raise JobFailed(f"database: {first[0] if first else type(exc).__name__}{hint}") from exc
    finally:
        engine.dispose()
    summary["seconds"] = round(time.perf_counter() - began, 3)
    print(json.dumps(summary, sort_keys=False))
    return EXIT_REFUSED if summary["refused"] else 0


def build_parser() -> argparse.ArgumentParser:
    """The `python -m analytics` argument parser."""
    parser = _Parser(prog="analytics", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    anon = sub.add_parser("anonymize", help="k-anonymise a table along hierarchies")
    anon.add_argument("--input", type=Path, required=True)
    anon.add_argument("--sep", default=",")
    anon.add_argument("--qi", required=True, help="quasi-identifiers, comma-separated")
    anon.add_argument("--hierarchies", type=Path, required=True, help="dir of <column>.csv")
    anon.add_argument("--numeric", default="", help="numeric quasi-identifiers")
    anon.add_argument("--k", type=int, required=True)
    anon.add_argument("--max-suppression", type=float, default=0.0, help="share of rows")
    anon.add_argument("--out", type=Path, required=True)
    anon.set_defaults(run=_anonymize)
    taste = sub.add_parser("taste-report", help="k-anonymous taste report by area")
    taste.add_argument("--subscribers", type=Path, required=True)
    taste.add_argument("--hierarchy", type=Path, required=True)
    taste.add_argument("--k", type=int, required=True)
    taste.add_argument("--out", type=Path, required=True)
    taste.set_defaults(run=_taste_report)
    job = sub.add_parser(
        "run",
        help="compute and store weekly reports from the database",
        description="Compute each merchant's weekly report (Europe/Paris weeks) from consented "
        "visits and store it; prints one JSON line. Exit 0: stored; 2: bad arguments; 3: the "
        "privacy ledger refused at least one merchant (nothing stored for it); 1: failure.",
    )
    job.add_argument("--period", required=True, help="ISO week 2026-W47 or its Monday")
    job.add_argument("--merchant", help="one merchant slug (default: every active merchant)")
    job.add_argument("--k", type=int, default=5)
    job.add_argument("--epsilon", type=float, default=0.0, help="0: exact, no noise")
    job.add_argument("--delta", type=float, default=1e-6)
    job.add_argument("--mechanism", default="laplace", help="laplace or gaussian")
    job.add_argument("--epsilon-budget", type=float, default=10.0, help="per merchant, lifetime")
    job.add_argument("--delta-budget", type=float, default=1e-5)
    job.add_argument("--share", type=float, default=0.7, help="catchment share of visits")
    job.add_argument("--areas", type=Path, help="GeoJSON polygons (default $CM_AREAS_FILE)")
    job.add_argument("--database-url", help="default: $DATABASE_URL, else the store's SQLite")
    job.set_defaults(run=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; bad input ends with exit 2 and a single stderr line."""
    args = build_parser().parse_args(argv)
    try:
        code = args.run(args)
    except (CliError, AnonymizeError, HierarchyError, ReportError) as exc:
        message = " ".join(str(exc).split())
        print(f"analytics {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, KeyError, OSError, MemoryError) as exc:
        # the contract is one line, never a traceback, even for input we did not foresee
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"analytics {args.command}: failed: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    except JobFailed as exc:
        print(f"analytics {args.command}: failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return code or 0
