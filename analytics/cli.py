"""Command line: `anonymize` and `taste-report`, the contracts a DPO re-runs to check a report,
and `run`, the weekly job that computes and stores every merchant's report from the database."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pandas as pd

from analytics.hierarchy import HierarchyError, read_hierarchy
from analytics.kanon import AnonymizeError, anonymize
from analytics.taste import MIN_K, ReportError, taste_report
from store_server.atomic_files import write_all
from store_server.cli import OneLineParser

EXIT_USAGE = 2
EXIT_REFUSED = 3  # the privacy ledger refused at least one merchant's release


class JobFailed(Exception):
    """The job could not reach or use the database (reported as one line, exit 1)."""


class CliError(Exception):
    """Bad input reported as one line on stderr."""


def _columns(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _check_sep(sep: str) -> None:
    # the output keeps the input's separator, and a CSV writer takes exactly one character;
    # a longer one would also make pandas fall back to its regex parser with a warning
    if len(sep) != 1 or sep in '"\r\n':
        raise CliError(f"--sep must be one character, not a quote or a line break: {sep!r}")


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():  # also through symbolic links and ../
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _check_out(out: Path, inputs: list[Path]) -> None:
    """Refuse, before any work, an --out that is an input or cannot be created."""
    try:
        parent = out.resolve().parent
        same = next((path for path in inputs if _same_file(out, path)), None)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of symbolic links
        raise CliError(f"cannot write {out}: the path cannot be resolved") from exc
    if same is not None:
        raise CliError(f"--out {out} is also an input ({same}); write the result elsewhere")
    if not parent.is_dir():
        raise CliError(f"cannot write {out}: directory {out.parent} does not exist")
    if out.is_dir():
        raise CliError(f"cannot write {out}: it is a directory")


def _write_out(out: Path, write: Callable[[IO[str]], None]) -> None:
    """Write out whole or not at all (see store_server.atomic_files); a failure is one line."""
    try:
        write_all({out: write})
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from exc


def _read_csv(path: Path, sep: str) -> pd.DataFrame:
    try:
        # strings in, strings out: the untouched columns must leave exactly as they came
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
        _check_header(path, sep)
    except FileNotFoundError as exc:
        raise CliError(f"no such file: {path}") from exc
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CliError(f"cannot read {path}: {first}") from exc
    return table


def _read_subscribers(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    try:
        # ids and areas stay text (INSEE codes have leading zeros); weights load as floats
        people = pd.read_csv(path, dtype={"subscriber": str, "area": str}, keep_default_na=False)
        _check_header(path, ",")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CliError(f"cannot read {path}: {first}") from exc
    return people


def _check_header(path: Path, sep: str) -> None:
    """Refuse a header naming a column twice: pandas would rename the copy (`sex` -> `sex.1`),
    so the output's header would differ from the input's and the copy go unprocessed."""
    header = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, header=None, nrows=1)
    names = pd.Index(header.iloc[0]) if len(header) else pd.Index([])
    twice = names[names.duplicated()]
    if len(twice):
        raise CliError(f"{path}: column {twice[0]!r} appears twice in the header")


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
    _check_sep(args.sep)
    paths = {c: args.hierarchies / f"{c}.csv" for c in qi if c not in numeric}
    _check_out(args.out, [args.input, *paths.values()])
    table = _read_csv(args.input, args.sep)
    hierarchies = {}
    for column, path in paths.items():
        if not path.is_file():
            raise CliError(f"no hierarchy file {path} for quasi-identifier {column!r}")
        # ARX hierarchy files are ;-separated whatever the table uses
        hierarchies[column] = read_hierarchy(path, sep=";")
    result = anonymize(table, qi, hierarchies, numeric, args.k, args.max_suppression)
    try:
        metrics = json.dumps(result.metrics, allow_nan=False)
    except ValueError as exc:  # NaN is not JSON; refuse rather than print it
        raise CliError("the quality figures are not finite numbers; check numeric columns") from exc
    _write_out(args.out, lambda h: result.table.to_csv(h, sep=args.sep, index=False))
    print(metrics)


def _taste_report(args: argparse.Namespace) -> None:
    if args.k < MIN_K:
        raise CliError(f"--k must be at least {MIN_K}")
    _check_out(args.out, [args.subscribers, args.hierarchy])
    subscribers = _read_subscribers(args.subscribers)
    hierarchy = read_hierarchy(args.hierarchy, sep=";")
    report = taste_report(subscribers, hierarchy, args.k)
    suppressed = int(len(subscribers["subscriber"].unique()) - report["subscribers"].sum())
    _write_out(args.out, lambda h: report.to_csv(h, index=False))
    print(json.dumps({"rows": len(report), "k": args.k, "suppressed": suppressed}))


def _database_url(given: str | None) -> str:
    """The --database-url (or $DATABASE_URL) when it names SQLite or PostgreSQL, else refuse."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from store_server.config import ConfigError, from_env, normalise_db_url

    try:
        url = normalise_db_url(given or from_env()["DATABASE_URL"])
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    # the value itself is never echoed: it may hold a password
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: it reads the port with int()
        raise CliError("--database-url is not a URL like sqlite:///PATH or postgresql://…") from exc
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise CliError(f"--database-url: {backend!r} is not supported; use sqlite or postgresql")
    try:
        parsed.get_dialect()  # an unknown driver name fails here, not mid-run
    except NoSuchModuleError as exc:
        raise CliError(f"--database-url: unknown database driver {parsed.drivername!r}") from exc
    return url


def _run(args: argparse.Namespace) -> int:
    # imported here so the DPO commands above never load SQL, Flask or the geography stack
    import time

    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
    from sqlalchemy.orm import Session

    from analytics import job
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
            settle_hours=job.SETTLE_HOURS if args.settle_hours is None else args.settle_hours,
        )
        options.check()
        monday = job.parse_period(args.period)
        job.check_period(monday, settle_hours=options.settle_hours)
        url = _database_url(args.database_url)
        areas, hierarchy = job.load_geography(args.areas or job.areas_file())
    except job.JobError as exc:
        raise CliError(str(exc)) from exc
    began = time.perf_counter()
    try:
        engine = make_engine(url, pooled=False)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
        # e.g. a PostgreSQL URL naming a driver that is not installed
        raise CliError(f"--database-url: cannot use it ({type(exc).__name__})") from exc
    try:
        with Session(engine) as db:
            summary = job.run(db, monday, options, areas, hierarchy, args.merchant)
    except job.JobError as exc:
        raise CliError(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise JobFailed(job.database_failure(exc)) from exc
    finally:
        engine.dispose()
    summary["seconds"] = round(time.perf_counter() - began, 3)
    print(json.dumps(summary, sort_keys=False))
    final = [m["merchant"] for m in summary["merchants"] if m.get("final")]
    if final:
        print(
            f"analytics run: refused: week {summary['period']} is published and final for "
            f"{', '.join(final)}; a re-run may not change it, nothing was stored",
            file=sys.stderr,
        )
    failed = [m for m in summary["merchants"] if m["status"] == "failed"]
    if failed:
        # the others' weeks are stored (the JSON says which); the failure still fails the run
        names = ", ".join(m["merchant"] for m in failed)
        print(f"analytics run: failed for {names}: {failed[0]['reason']}", file=sys.stderr)
        return 1
    return EXIT_REFUSED if summary["refused"] else 0


def build_parser() -> argparse.ArgumentParser:
    """The `python -m analytics` argument parser."""
    parser = OneLineParser(prog="analytics", description=__doc__)
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
        "visits and store it; prints one JSON line. Only weeks that ended at least --settle-hours "
        "ago (2020-W01 on) are run, and a stored week is final: a re-run that would change it "
        "is refused. Exit 0: stored or unchanged; 2: bad arguments; 3: at least one merchant "
        "refused (ledger, or week published and final; nothing stored for it); 1: failure "
        "(for one merchant of several, the others still run and the JSON line says which).",
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
    job.add_argument(
        "--settle-hours",
        type=float,
        help="run a week only this long after it ended, once scanners' late uploads are in "
        "(default: a day)",
    )
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
    except (ValueError, KeyError, OSError, MemoryError, csv.Error) as exc:
        # the contract is one line, never a traceback, even for input we did not foresee
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"analytics {args.command}: failed: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    except JobFailed as exc:
        print(f"analytics {args.command}: failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return code or 0
