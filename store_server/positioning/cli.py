"""Argument parsing for predict, evaluate, record-survey and mark; bad input: one stderr line."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import TextIO

from store_server.positioning.capture import parse_captures, read_captures
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


def _outputs(outs: list[str | None], ins: list[str | None]) -> None:
    """Refuse, before any work, an output that would overwrite an input or cannot be written."""
    sources = {Path(p).resolve() for p in ins if p}
    written: set[Path] = set()
    for out in outs:
        if not out:
            continue
        target = Path(out).resolve()
        if target in sources:
            raise VenueFileError(f"{out}: is also an input; write the output elsewhere")
        if target in written:
            raise VenueFileError(f"{out}: is named for two outputs")
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
        sys.stderr.write(f"positioning: {exc}\n")
        return 2
    except (OSError, ValueError, KeyError) as exc:
        sys.stderr.write(
            f"positioning: {exc.__class__.__name__}: {exc}\n".replace("\n", " ") + "\n"
        )
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
    out.to_csv(args.out, index=False)
    if args.report:
        report = {
            "drift_db": drift_report(offsets),
            "pathloss": model.calibration.get("pathloss", {}),
            "survey_accuracy": zone_accuracy_report(scanners, zones, survey),
        }
        Path(args.report).write_text(json.dumps(report, indent=1), encoding="utf-8")
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
        emitter = None
    else:
        sightings = load_readings(args.sightings)
    marks = load_marks(args.marks)
    zones = load_zones(args.zones) if args.zones else None
    out = record(sightings, marks, zones, emitter, args.max_gap)
    skipped = f" (skipped {bad} unreadable capture line(s))" if bad else ""
    if out.empty:
        source = args.sightings or "the captures"
        raise VenueFileError(f"{source}: no sighting falls within the marked walk{skipped}")
    out.to_csv(args.out, index=False)
    if bad:
        sys.stderr.write(f"positioning: skipped {bad} unreadable capture line(s)\n")
    return 0


def _mark(args: argparse.Namespace, lines: TextIO) -> int:
    """Stamp each typed `x y` with the time it was entered, as the installer reaches the spot.

    The scanners' clocks and this one must agree (NTP), as the daemons' own timestamps do."""
    path = Path(args.out)
    written = 0
    head = _marks_head(path)
    last = 0.0
    with path.open("a", encoding="utf-8") as out:
        try:
            for n, line in enumerate(lines, start=1):
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
                out.write(f"{stamp:.3f},{x:g},{y:g}\n")
                last = round(stamp, 3)
                out.flush()
                written += 1
                # Told back at once, so the installer knows the spot counted before moving on.
                print(f"marked {x:g} {y:g} at {time.strftime('%H:%M:%S', time.localtime(stamp))}")
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass  # Ctrl-C is how an installer ends the walk: every mark is already on disk
    if written == 0:
        if path.exists() and path.stat().st_size == 0:
            path.unlink()
        raise VenueFileError(f"{path}: no mark recorded")
    return 0


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
