"""Leave-one-track-out benchmark of `predict` + `evaluate` on the position-annotated recording.

Usage: .venv/bin/python bench/positioning.py [--inprocess] [--data DIR]
Prints one JSON object per track, then the overall JSON object as the last line."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "ble" / "position-annotated"
TRACK_GAP_S = 5.0


def tracks(survey: pd.DataFrame) -> np.ndarray:
    """Track number of each row: a track ends where ts jumps by more than 5 s."""
    ts = survey["ts"].to_numpy(float)
    return np.concatenate([[0], np.cumsum(np.diff(ts) > TRACK_GAP_S)])


def _cli(*args: str) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "store_server.positioning", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise SystemExit(f"positioning {args[0]} failed: {res.stderr.strip()}")
    return res.stdout


def main() -> int:
    """Run the benchmark and print the JSON lines."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--inprocess", action="store_true", help="call the functions, not the CLI")
    ap.add_argument("--params", default="{}", help="JSON overrides of the engine parameters")
    args = ap.parse_args()
    params = json.loads(args.params)
    data = args.data
    survey = pd.read_csv(data / "survey.csv", dtype={"scanner": str, "emitter": str, "zone": str})
    survey = survey.sort_values("ts", kind="stable").reset_index(drop=True)
    trk = tracks(survey)
    started = time.perf_counter()
    all_preds = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for k in np.unique(trk):
            train = survey.loc[trk != k]
            test = survey.loc[trk == k]
            blank = test.assign(x=np.nan, y=np.nan, zone=np.nan)
            paths = {n: t / f"{n}{k}.csv" for n in ("train", "test", "truth", "pred")}
            train.to_csv(paths["train"], index=False)
            blank.to_csv(paths["test"], index=False)
            test.to_csv(paths["truth"], index=False)
            if args.inprocess or params:
                result = _inprocess(data, train, blank, test, paths["pred"], params)
            else:
                _cli(
                    "predict",
                    "--scanners",
                    str(data / "scanners.csv"),
                    "--zones",
                    str(data / "zones.geojson"),
                    "--survey",
                    str(paths["train"]),
                    "--recording",
                    str(paths["test"]),
                    "--out",
                    str(paths["pred"]),
                )
                result = json.loads(
                    _cli(
                        "evaluate",
                        "--zones",
                        str(data / "zones.geojson"),
                        "--truth",
                        str(paths["truth"]),
                        "--predictions",
                        str(paths["pred"]),
                    ).strip()
                )
            all_preds.append(pd.read_csv(paths["pred"], dtype={"emitter": str, "zone": str}))
            print(json.dumps({"track": int(k), "rows": len(test), **result}), flush=True)
        pd.concat(all_preds).to_csv(t / "all.csv", index=False)
        survey.to_csv(t / "truth.csv", index=False)
        if args.inprocess or params:
            overall = _score(data, survey, pd.concat(all_preds))
        else:
            overall = json.loads(
                _cli(
                    "evaluate",
                    "--zones",
                    str(data / "zones.geojson"),
                    "--truth",
                    str(t / "truth.csv"),
                    "--predictions",
                    str(t / "all.csv"),
                ).strip()
            )
    overall["tracks"] = len(np.unique(trk))
    overall["seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps({"overall": overall}))
    return 0


def _inprocess(
    data: Path,
    train: pd.DataFrame,
    blank: pd.DataFrame,
    test: pd.DataFrame,
    out: Path,
    params: dict,
) -> dict:
    from store_server.positioning.live import VenueModel
    from store_server.positioning.predict import predict
    from store_server.positioning.venue import load_scanners, load_zones

    model = VenueModel.calibrate(
        load_scanners(data / "scanners.csv"), load_zones(data / "zones.geojson"), train, params
    )
    pred, _ = predict(model, blank)
    pred.to_csv(out, index=False)
    return _score(data, test, pred)


def _score(data: Path, truth: pd.DataFrame, pred: pd.DataFrame) -> dict:
    from store_server.positioning.evaluate import evaluate
    from store_server.positioning.venue import load_zones

    return evaluate(load_zones(data / "zones.geojson"), truth, pred)


if __name__ == "__main__":
    raise SystemExit(main())
