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

from store_server.cli import OneLineParser
from store_server.config import ConfigError


def _retention(args: argparse.Namespace) -> int:
    from store_server import retention
    from store_server.app import create_app

    app = create_app()
    out = retention.run(app, days=args.days)
    print(json.dumps({"retention_days": args.days or app.config["RETENTION_DAYS"], **out}))
    return 0


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
    except Exception as e:  # one readable line for operators, not a traceback
        print(f"store_server {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
