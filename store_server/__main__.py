"""Store server command line: `python -m store_server <command>`.

Commands: retention (purge what is past the retention period), doctor (check configuration,
migrations, Redis, clocks and scanners, and say what to fix). Each exits 0 on success and
prints one JSON object; failures are one line on stderr and exit status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from store_server.cli import OneLineParser
from store_server.config import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Engine


def _retention(args: argparse.Namespace) -> int:
    from store_server import retention
    from store_server.app import create_app

    app = create_app()
    problem = _schema_problem(app.extensions["cm_engine"])
    if problem:
        raise CommandFailed(problem)
    out = retention.run(app, days=args.days)
    print(json.dumps({"retention_days": args.days or app.config["RETENTION_DAYS"], **out}))
    return 0


class CommandFailed(Exception):
    """A command cannot run; its message is the one line to print (exit 1)."""


def _schema_problem(engine: Engine) -> str | None:
    """What keeps this code's queries from the database's schema, with what to run; or None.

    Checked before a command starts: otherwise the first query's error is what an operator
    sees (SQLAlchemy's statement, parameters and link) without the fix."""
    from sqlalchemy import inspect, text

    from store_server.ops.checks import MIGRATE, migration_heads

    with engine.connect() as c:  # an unreadable database fails here, in the driver's words
        have: set[str] = set()
        if inspect(c).has_table("alembic_version"):
            have = {row[0] for row in c.execute(text("SELECT version_num FROM alembic_version"))}
    heads = migration_heads()
    if have == heads:
        return None
    if not have:
        return f"the database is not migrated: {MIGRATE}"
    return (
        f"the database's schema is at {','.join(sorted(have))}, this code's at "
        f"{','.join(sorted(heads))}: {MIGRATE}"
    )


def _positive_days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("retention must be at least 1 day")
    return value


def parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per operation."""
    # Subparsers are made of the parser's own class, so theirs are one line too.
    p = OneLineParser(prog="python -m store_server", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    r = sub.add_parser(
        "retention", help="purge visits, disclosures and ended consents past retention"
    )
    r.add_argument(
        "--days",
        type=_positive_days,
        default=None,
        help="retention period in days (default: RETENTION_DAYS, 90)",
    )
    r.set_defaults(func=_retention)
    # Listed for --help; its own options are parsed by store_server.doctor (see main).
    sub.add_parser("doctor", help="check the deployment and print what to fix", add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["doctor"]:
        from store_server import doctor

        return doctor.main(argv[1:])
    args = parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as e:
        print(f"store_server {args.command}: {e}", file=sys.stderr)
        return 2
    except CommandFailed as e:
        print(f"store_server {args.command}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # one readable line for operators, not a traceback
        from store_server.ops.checks import failure_line

        # Not str(e): a database error's holds the SQL statement, parameters and a link.
        print(f"store_server {args.command}: {failure_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
