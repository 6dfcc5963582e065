"""Argument parsing for predict, evaluate, record-survey and mark; bad input: one stderr line."""

from __future__ import annotations

import argparse
import json
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
    load_zones,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"positioning: {message}\n")
        raise SystemExit(2)


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
    rs.add_argument("--max-gap", type=float, default=MAX_GAP_S, help="seconds between marks")
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
    scanners = load_scanners(args.scanners)
    zones = load_zones(args.zones)
    survey = load_readings(args.survey, positions=True)
    recording = load_readings(args.recording)
    if survey.empty:
        raise VenueFileError(f"{args.survey}: no usable survey rows")
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
    truth = load_readings(args.truth, positions=True)
    preds = load_predictions(args.predictions)
    print(json.dumps(evaluate(zones, truth, preds)))
    return 0


def _record_survey(args: argparse.Namespace) -> int:
    emitter = args.emitter
    if args.capture:
        # A capture holds every programme frame the scanner forwarded: other people's
        # identifiers must not reach a survey, so the reference emitter is not optional here.
        if not emitter:
            raise VenueFileError("--capture needs --emitter (the installer's reference beacon)")
        sightings, bad = read_captures(parse_captures(args.capture), emitter)
        emitter = None
        if bad:
            sys.stderr.write(f"positioning: skipped {bad} unreadable capture line(s)\n")
    else:
        sightings = load_readings(args.sightings)
    marks = load_marks(args.marks)
    zones = load_zones(args.zones) if args.zones else None
    out = record(sightings, marks, zones, emitter, args.max_gap)
    if out.empty:
        source = args.sightings or "the captures"
        raise VenueFileError(f"{source}: no sighting falls within the marked walk")
    out.to_csv(args.out, index=False)
    return 0


def _mark(args: argparse.Namespace, lines: TextIO) -> int:
    """Stamp each typed `x y` with the time it was entered, as the installer reaches the spot.

    The scanners' clocks and this one must agree (NTP), as the daemons' own timestamps do."""
    path = Path(args.out)
    written = 0
    with path.open("a", encoding="utf-8") as out:
        if out.tell() == 0:
            out.write("ts,x,y\n")
        try:
            for n, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                stamp = time.time()
                try:
                    x, y = parse_mark(line)
                except ValueError as exc:
                    # A typo must not end a walk half done: the line is refused, marking goes on.
                    sys.stderr.write(f"positioning: line {n} ignored: {exc}\n")
                    continue
                out.write(f"{stamp:.3f},{x:g},{y:g}\n")
                out.flush()
                written += 1
                # Told back at once, so the installer knows the spot counted before moving on.
                print(f"marked {x:g} {y:g} at {time.strftime('%H:%M:%S', time.localtime(stamp))}")
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass  # Ctrl-C is how an installer ends the walk: every mark is already on disk
    if written == 0:
        raise VenueFileError(f"{path}: no mark recorded")
    return 0
