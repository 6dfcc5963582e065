"""Argument parsing for predict, evaluate, record-survey and mark; bad input: one stderr line."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TextIO

import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from store_server.atomic_files import Writer, write_all
from store_server.positioning.capture import parse_captures, read_captures, reference_rows
from store_server.positioning.evaluate import evaluate
from store_server.positioning.live import VenueModel
from store_server.positioning.predict import drift_report, predict
from store_server.positioning.report import zone_accuracy_report
from store_server.positioning.survey import MAX_GAP_S, parse_mark, record
from store_server.positioning.venue import (
    VenueFileError,
    load_marks,
    load_predictions,
    load_readings,
    load_scanners,
    load_truth,
    load_zones,
)

# predict writes a row per emitter per second between its first and last reading: a longer
# span is a recording mixing clocks (relative and epoch seconds), not a venue's day.
MAX_SPAN_S = 7 * 86400.0
MARKS_HEADER = "ts,x,y"
# How far outside the zones an installer's mark may lie (a corridor, a terrace) before it is
# taken for a typo.
MARK_OUTSIDE_M = 25.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"positioning: {message}\n")
        raise SystemExit(2)


def _gap(text: str) -> float:
    """--max-gap: seconds, positive and finite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _resolved(name: str) -> Path:
    """The file a name leads to; a symbolic link loop is bad input, not a crash."""
    try:
        return Path(name).resolve()
    except (OSError, RuntimeError) as exc:  # pathlib raises RuntimeError on a loop (3.11)
        raise VenueFileError(f"{name}: cannot be resolved (a symbolic link loop?)") from exc


def _outputs(outs: list[str | None], ins: list[str | None]) -> None:
    """Refuse, before any work, an output that would overwrite an input or cannot be written."""
    sources = {_resolved(p) for p in ins if p}
    written: set[Path] = set()
    for out in outs:
        if not out:
            continue
        target = _resolved(out)
        if target in sources:
            raise VenueFileError(f"{out}: is also an input; write the output elsewhere")
        if target in written:
            raise VenueFileError(f"{out}: is named for two outputs")
        if target.is_dir():
            raise VenueFileError(f"{out}: is a directory")
        written.add(target)
        if not target.parent.is_dir():
            raise VenueFileError(f"{out}: directory {target.parent} does not exist")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m store_server.positioning")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    pr = sub.add_parser("predict", help="calibrate on a survey, estimate a recording per second")
    pr.add_argument("--scanners", required=True)
    pr.add_argument("--zones", required=True)
    pr.add_argument("--survey", required=True)
    pr.add_argument("--recording", required=True)
    pr.add_argument("--out", required=True)
    pr.add_argument("--report", help="optional JSON: drift per scanner and calibration figures")
    ev = sub.add_parser("evaluate", help="score predictions against ground truth")
    ev.add_argument("--zones", required=True)
    ev.add_argument("--truth", required=True)
    ev.add_argument("--predictions", required=True)
    rs = sub.add_parser("record-survey", help="turn a capture plus marked positions into a survey")
    src = rs.add_mutually_exclusive_group(required=True)
    src.add_argument("--sightings", help="sightings table ts,scanner,emitter,rssi")
    src.add_argument(
        "--capture",
        action="append",
        metavar="SCANNER=FILE",
        help="a scanner daemon's capture ([record] file), once per scanner; needs --emitter",
    )
    rs.add_argument("--marks", required=True, help="installer's marks ts,x,y (metres)")
    rs.add_argument("--out", required=True)
    rs.add_argument("--zones", help="zones GeoJSON, to fill the zone column")
    rs.add_argument(
        "--emitter",
        help="keep only the reference emitter: its id, an EID, or an iBeacon UUID:major:minor",
    )
    rs.add_argument("--max-gap", type=_gap, default=MAX_GAP_S, help="seconds between marks")
    mk = sub.add_parser("mark", help="stamp the positions an installer types while walking")
    mk.add_argument("--out", required=True, help="marks CSV ts,x,y, appended to")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    # Not where SIGINT is ignored (started with nohup or `&`) or handled by a caller, nor off
    # the main thread, where no handler can be set.
    watching = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if watching:
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        return _dispatch(argv)
    except KeyboardInterrupt:
        # Outputs are only ever placed whole, so a Ctrl-C leaves them as they were: nothing to
        # show but that it stopped. 130 is the shell's code for a command ended by SIGINT.
        sys.stderr.write("positioning: interrupted\n")
        return 130
    finally:
        if watching:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        _Interrupt.seen = False


class _Interrupt:
    """Whether a Ctrl-C arrived: pandas turns the KeyboardInterrupt it raises in the middle of
    reading a CSV into a ParserError, which must not be reported as a bad file."""

    seen = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _Interrupt.seen = True
    raise KeyboardInterrupt


def _dispatch(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "predict":
            return _predict(args)
        if args.cmd == "evaluate":
            return _evaluate(args)
        if args.cmd == "record-survey":
            return _record_survey(args)
        if args.cmd == "mark":
            return _mark(args, sys.stdin)
    except VenueFileError as exc:
        if _Interrupt.seen:
            raise KeyboardInterrupt from exc
        sys.stderr.write(f"positioning: {exc}\n")
        return 2
    except (OSError, ValueError, KeyError, ArithmeticError, RecursionError) as exc:
        if _Interrupt.seen:
            raise KeyboardInterrupt from exc
        # What no loader foresaw still ends in one line (OverflowError: a number too large).
        message = " ".join(f"{exc.__class__.__name__}: {exc}".split())
        sys.stderr.write(f"positioning: {message}\n")
        return 1
    return 2


def _predict(args: argparse.Namespace) -> int:
    inputs = [args.scanners, args.zones, args.survey, args.recording]
    _outputs([args.out, args.report], inputs)
    scanners = load_scanners(args.scanners)
    zones = load_zones(args.zones)
    survey = load_readings(args.survey, positions=True)
    recording = load_readings(args.recording)
    if survey.empty:
        raise VenueFileError(f"{args.survey}: no usable survey rows")
    # Calibrating on nothing would silently give textbook path loss; estimating on nothing, an
    # empty file: both are a scanners file that is not this venue's.
    if not survey["scanner"].isin(list(scanners)).any():
        raise VenueFileError(f"{args.survey}: no reading comes from a scanner of {args.scanners}")
    if not recording.empty and not recording["scanner"].isin(list(scanners)).any():
        raise VenueFileError(
            f"{args.recording}: no reading comes from a scanner of {args.scanners}"
        )
    span = recording.groupby("emitter")["ts"].agg(lambda t: t.max() - t.min())
    if (span > MAX_SPAN_S).any():
        raise VenueFileError(
            f"{args.recording}: emitter {span.idxmax()} is heard over {span.max() / 86400:.0f} "
            "days (at most 7: are its times on one clock, in seconds?)"
        )
    model = VenueModel.calibrate(scanners, zones, survey)
    out, offsets = predict(model, recording)
    outputs: dict[Path, Writer] = {Path(args.out): lambda h: out.to_csv(h, index=False)}
    if args.report:
        report = {
            "drift_db": drift_report(offsets),
            "pathloss": model.calibration.get("pathloss", {}),
            "survey_accuracy": zone_accuracy_report(
                scanners, zones, survey, {"survey_shift_s": model.survey_shift_s}
            ),
        }
        # serialised before anything is written: a NaN is refused with no file touched
        text = json.dumps(report, indent=1, allow_nan=False)
        outputs[Path(args.report)] = lambda h: h.write(text)
    write_all(outputs)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    zones = load_zones(args.zones)
    truth = load_truth(args.truth)
    preds = load_predictions(args.predictions)
    print(json.dumps(evaluate(zones, truth, preds)))
    return 0


def _record_survey(args: argparse.Namespace) -> int:
    captures = [c.partition("=")[2] for c in args.capture or []]
    _outputs([args.out], [args.sightings, args.marks, args.zones, *captures])
    emitter = args.emitter
    bad = 0
    if args.capture:
        # A capture holds every programme frame the scanner forwarded: other people's
        # identifiers must not reach a survey, so the reference emitter is not optional here.
        if not emitter:
            raise VenueFileError("--capture needs --emitter (the installer's reference beacon)")
        sightings, bad = read_captures(parse_captures(args.capture), emitter)
        skipped = f" (skipped {bad} unreadable capture line(s))" if bad else ""
        if sightings.empty:
            raise VenueFileError(
                f"the captures: the reference emitter {emitter} is never heard{skipped}"
            )
    else:
        sightings = reference_rows(load_readings(args.sightings), emitter, args.sightings)
        skipped = ""
    marks = load_marks(args.marks)
    zones = load_zones(args.zones) if args.zones else None
    if zones:
        _marks_near(marks, zones, args.marks)
    out = record(sightings, marks, zones, None, args.max_gap)
    if out.empty:
        source = args.sightings or "the captures"
        raise VenueFileError(f"{source}: no sighting falls within the marked walk{skipped}")
    write_all({Path(args.out): lambda h: out.to_csv(h, index=False)})
    if bad:
        sys.stderr.write(f"positioning: skipped {bad} unreadable capture line(s)\n")
    return 0


def _marks_near(marks: pd.DataFrame, zones: dict[str, BaseGeometry], source: str) -> None:
    """Refuse a mark far from every zone: a typo ("500" for "5.00") that would put a stretch of
    the walk, and the readings on it, where nobody went."""
    area = unary_union(list(zones.values()))
    dist = shapely.distance(area, shapely.points(marks["x"].to_numpy(), marks["y"].to_numpy()))
    far = dist > MARK_OUTSIDE_M
    if far.any():
        i = int(np.flatnonzero(far)[0])
        x, y = marks["x"].iloc[i], marks["y"].iloc[i]
        raise VenueFileError(
            f"{source}: mark {_num(x)} {_num(y)} is {dist[i]:.0f} m from every zone (a typo?)"
        )


def _num(value: float) -> str:
    """A coordinate as typed: every digit an installer would type, no float noise."""
    return f"{value:.15g}"


def _tell(text: str) -> None:
    """Confirm a mark on stdout; with nobody reading (closed, or a pipe whose reader left)
    marking goes on unconfirmed, since the marks are what matters."""
    out = sys.stdout
    if out is None:
        return
    try:
        out.write(text + "\n")
        out.flush()
    except (OSError, ValueError):
        # What is still buffered would fail again at exit: send it, and the rest, nowhere.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())


def _mark(args: argparse.Namespace, lines: TextIO | None) -> int:
    """Stamp each typed `x y` with the time it was entered, as the installer reaches the spot.

    The scanners' clocks and this one must agree (NTP), as the daemons' own timestamps do."""
    if lines is None:
        raise VenueFileError("mark: no input to read positions from (stdin is closed)")
    path = Path(args.out)
    written = 0
    head = _marks_head(path)
    last = 0.0
    out, created = _open_marks(path)
    try:
        with out:
            for n, line in enumerate(_typed(lines), start=1):
                if line is None:
                    # A stray byte (a mistyped key, a pasted symbol) is a typo like any other.
                    sys.stderr.write(
                        f"positioning: line {n} ignored: not {_encoding(lines)} text\n"
                    )
                    continue
                if not line.strip():
                    continue
                # Strictly increasing even when lines arrive within a millisecond (pasted):
                # two marks at one instant cannot be interpolated between.
                stamp = max(time.time(), last + 0.001)
                try:
                    x, y = parse_mark(line)
                except ValueError as exc:
                    # A typo must not end a walk half done: the line is refused, marking goes on.
                    sys.stderr.write(f"positioning: line {n} ignored: {exc}\n")
                    continue
                if head is not None:
                    # Written with the first mark, so a walk that never started leaves no file.
                    out.write(head)
                    head = None
                out.write(f"{stamp:.3f},{_num(x)},{_num(y)}\n")
                last = round(stamp, 3)
                out.flush()
                written += 1
                # Told back at once, so the installer knows the spot counted before moving on.
                at = time.strftime("%H:%M:%S", time.localtime(stamp))
                _tell(f"marked {_num(x)} {_num(y)} at {at}")
    except KeyboardInterrupt:
        # Ctrl-C is how an installer ends the walk, not an interruption: every mark is on disk.
        _Interrupt.seen = False
    finally:
        # Whatever ended the run, a file it created for a walk that never started goes; one
        # that was there before (even empty) is the installer's, and stays.
        if written == 0 and created:
            with contextlib.suppress(OSError):
                if path.stat().st_size == 0:
                    path.unlink()
    if written == 0:
        raise VenueFileError(f"{path}: no mark recorded")
    return 0


def _open_marks(path: Path) -> tuple[TextIO, bool]:
    """The marks file opened for appending, and whether this run created it."""
    try:
        return path.open("x", encoding="utf-8"), True
    except FileExistsError:
        return path.open("a", encoding="utf-8"), False


def _encoding(lines: TextIO) -> str:
    """The encoding typed lines are read in (stdin's, which PYTHONIOENCODING may set)."""
    return getattr(lines, "encoding", None) or "utf-8"


def _typed(lines: TextIO) -> Iterator[str | None]:
    """Each input line as text, or None for one that does not decode: stdin is read as bytes,
    as a text stream cannot go on past an undecodable byte, and one byte must cost one line."""
    raw = getattr(lines, "buffer", None)
    if raw is None:
        yield from lines  # already text: nothing left to decode
        return
    encoding = _encoding(lines)
    for data in raw:
        try:
            yield data.decode(encoding)
        except UnicodeDecodeError:
            yield None


def _marks_head(path: Path) -> str | None:
    """What must precede the first new mark: the header for a new file, a line break for one
    whose last line was cut; refuses a file that is not a marks file."""
    if not path.exists() or path.stat().st_size == 0:
        return MARKS_HEADER + "\n"
    with path.open("rb") as f:
        first = f.readline().decode("utf-8", "replace").strip().lstrip("\ufeff")
        f.seek(-1, 2)
        last = f.read(1)
    if first != MARKS_HEADER:
        raise VenueFileError(f"{path}: not a marks file (its header is not {MARKS_HEADER})")
    return None if last == b"\n" else "\n"
