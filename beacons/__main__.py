"""Command line: `python -m beacons {decode,eid,emit,run}`.

Every failure is one line on stderr and a non-zero exit code (2 for bad arguments, 1 otherwise),
because installers read this output on a console and scripts parse it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from beacons.eid import KEY_LEN, MAX_EXPONENT, compute_eid
from beacons.frames import NotDecodable, decode


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line instead of the usage text."""

    def error(self, message: str) -> NoReturn:
        """Print one line and exit 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _hex_bytes(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hexadecimal: {text!r}") from None


def _identity_key(text: str) -> bytes:
    key = _hex_bytes(text)
    if len(key) != KEY_LEN:
        raise argparse.ArgumentTypeError(f"identity key must be {2 * KEY_LEN} hex digits")
    return key


def _int_in(lo: int, hi: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be between {lo} and {hi}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The `python -m beacons` argument parser."""
    parser = _Parser(prog="python -m beacons", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("decode", help="decode the advertising data of one advertisement")
    p.add_argument("hex", metavar="HEX", help="AD structures as hex (spaces between bytes allowed)")

    p = sub.add_parser("eid", help="compute the Eddystone EID broadcast at counter value T")
    p.add_argument("--identity-key", required=True, type=_identity_key, metavar="HEX32")
    p.add_argument(
        "--exponent", required=True, type=_int_in(0, MAX_EXPONENT, "exponent"), metavar="K"
    )
    p.add_argument("--time", required=True, type=_int_in(0, 2**32 - 1, "time"), metavar="T")

    p = sub.add_parser("emit", help="print the advertisement of each rotation period")
    p.add_argument("--provisioning", required=True, metavar="FILE", help="provisioning JSON")
    p.add_argument(
        "--count", type=_int_in(1, 1_000_000, "count"), default=4, help="periods (default 4)"
    )
    p.add_argument(
        "--start",
        type=_int_in(0, 2**32 - 1, "start"),
        metavar="T",
        help="counter value of the first period (default: now - time_base)",
    )
    p.add_argument(
        "--tx-power",
        type=_int_in(-128, 127, "tx power"),
        default=None,
        metavar="DBM",
        help="Eddystone ranging data at 0 m",
    )

    p = sub.add_parser("run", help="run the scanner daemon")
    p.add_argument("--config", required=True, metavar="FILE", help="scanner TOML config")
    return parser


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def _cmd_decode(args: argparse.Namespace) -> int:
    try:
        adv = bytes.fromhex(args.hex)
    except ValueError:
        return _fail(f"not hexadecimal: {args.hex!r}")
    frame = decode(adv)
    if isinstance(frame, NotDecodable):
        return _fail(f"not decodable: {frame.reason}")
    print(json.dumps(frame.to_json()))
    return 0


def _cmd_eid(args: argparse.Namespace) -> int:
    print(compute_eid(args.identity_key, args.exponent, args.time).hex())
    return 0


def _cmd_emit(args: argparse.Namespace) -> int:
    from beacons.emitter import DEFAULT_TX_POWER, periods
    from beacons.provisioning import parse

    try:
        doc = parse(Path(args.provisioning).read_bytes())
    except OSError as exc:
        return _fail(f"cannot read {args.provisioning}: {exc.strerror or exc}")
    except ValueError as exc:
        return _fail(f"{args.provisioning}: {exc}")
    if args.start is not None:
        start = args.start
    else:
        try:
            start = doc.counter(time.time())
        except ValueError as exc:
            return _fail(str(exc))
    tx_power = DEFAULT_TX_POWER if args.tx_power is None else args.tx_power
    for period in periods(doc, start, args.count, tx_power):
        print(json.dumps(period.to_json()), flush=True)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        from beacons.daemon import main as daemon_main
    except ImportError as exc:
        return _fail(f"scanner daemon unavailable: {exc}")
    return int(daemon_main(args.config))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse arguments and run one subcommand; returns the exit code."""
    args = build_parser().parse_args(argv)
    handlers = {"decode": _cmd_decode, "eid": _cmd_eid, "emit": _cmd_emit, "run": _cmd_run}
    try:
        return handlers[args.command](args)
    except BrokenPipeError:
        # the reader (`| head`) has what it wanted; keep interpreter exit from writing a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
