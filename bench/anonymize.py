"""Run `python -m analytics anonymize` on Adult at k=5 and k=10 and check the output independently.

The check shares no code with analytics/: it re-reads the hierarchy files, verifies every value is
an ancestor of the original (or a range holding it), every class has >= k rows, untouched columns
are byte-identical, and recomputes NCP/DM/CAVG itself.  Prints one JSON object as its last line.

    .venv/bin/python bench/anonymize.py [--data DIR] [--k 5,10] [--max-suppression 0.01]
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store_server.cli import OneLineParser

REPO = Path(__file__).resolve().parents[1]
QI = ["sex", "age", "race", "marital-status", "education", "native-country", "workclass",
      "occupation"]  # fmt: skip
NUMERIC = ["age"]


def _lines(path: Path) -> dict[str, list[str]]:
    with path.open(newline="") as handle:
        rows = [r for r in csv.reader(handle, delimiter=";") if r]
    return {r[0]: [*r, "*"] if r[-1] != "*" else r for r in rows}


def check(original: pd.DataFrame, out: pd.DataFrame, hdir: Path, k: int) -> dict[str, float]:
    """Independent verification and metrics; raises AssertionError on any violation."""
    n = len(original)
    assert list(out.columns) == list(original.columns), "header changed"
    assert len(out) == n, "row count changed"
    for column in original.columns:
        if column not in QI:
            assert (out[column] == original[column]).all(), f"column {column} changed"
    suppressed = (out[QI] == "*").all(axis=1).to_numpy()
    ncp = pd.Series(0.0, index=out.index)
    for column in QI:
        o, g = original[column], out[column]
        if column in NUMERIC:
            value = o.astype(float)
            span = value.max() - value.min()
            ranged = g.str.startswith("[")
            bounds = g[ranged].str.strip("[]").str.split(",", expand=True).astype(float)
            lo = pd.Series(value, copy=True)
            hi = pd.Series(value, copy=True)
            lo[ranged], hi[ranged] = bounds[0], bounds[1]
            exact = ~ranged & ~suppressed
            assert (g[exact].astype(float) == value[exact]).all(), f"{column}: value changed"
            assert ((lo <= value) & (value <= hi))[~suppressed].all(), f"{column}: range misses"
            ncp += ((hi - lo) / span).where(~suppressed, 1.0)
        else:
            lines = _lines(hdir / f"{column}.csv")
            leaves = {}
            for line in lines.values():
                for label in line:
                    leaves[label] = leaves.get(label, 0) + 1
            pairs = pd.DataFrame({"o": o, "g": g})[~suppressed].drop_duplicates()
            for leaf, label in pairs.itertuples(index=False):
                assert label in lines[leaf], f"{column}: {label!r} is not above {leaf!r}"
            share = {label: (count - 1) / (len(lines) - 1) for label, count in leaves.items()}
            ncp += g.map(share)
    per_row = (ncp / len(QI)).where(~suppressed, 1.0)
    sizes = out.loc[~suppressed, QI].value_counts()
    assert sizes.min() >= k, f"a class has {sizes.min()} < k={k} rows"
    n_supp = int(suppressed.sum())
    return {
        "ncp": round(float(per_row.mean()), 6),
        "dm": int((sizes.astype("int64") ** 2).sum() + n_supp * n),
        "cavg": round((n - n_supp) / len(sizes) / k, 4),
        "suppressed": n_supp,
        "suppressed_share": round(n_supp / n, 5),
        "classes": len(sizes),
        "min_class": int(sizes.min()),
    }


def main() -> int:
    """Bench both k values and print the figures."""
    parser = OneLineParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "adult")
    parser.add_argument("--k", default="5,10")
    parser.add_argument("--max-suppression", default="0.01")
    args = parser.parse_args()
    original = pd.read_csv(args.data / "adult.csv", sep=";", dtype=str, keep_default_na=False)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in [int(x) for x in args.k.split(",")]:
            out_path = Path(tmp) / f"adult-k{k}.csv"
            command = [
                sys.executable, "-m", "analytics", "anonymize",
                "--input", str(args.data / "adult.csv"), "--sep", ";", "--qi", ",".join(QI),
                "--hierarchies", str(args.data / "hierarchies"), "--numeric", ",".join(NUMERIC),
                "--k", str(k), "--max-suppression", args.max_suppression, "--out", str(out_path),
            ]  # fmt: skip
            started = time.perf_counter()
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - started
            if done.returncode != 0:
                print(done.stderr.strip(), file=sys.stderr)
                return 1
            reported = json.loads(done.stdout.strip().splitlines()[-1])
            out = pd.read_csv(out_path, sep=";", dtype=str, keep_default_na=False)
            measured = check(original, out, args.data / "hierarchies", k)
            for key in ("ncp", "dm", "suppressed", "classes"):
                assert abs(measured[key] - reported[key]) < 1e-5, f"reported {key} differs"
            results[f"k{k}"] = {**measured, "seconds": reported["seconds"],
                                "cpu_seconds": reported["cpu_seconds"],
                                "process_seconds": round(wall, 3)}  # fmt: skip
            print(f"k={k}: {results[f'k{k}']}", file=sys.stderr)
    print(json.dumps({"bench": "anonymize-adult", "checked": True, **results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
