"""Time `python -m analytics taste-report` on 1,000,000 synthetic subscribers across Paris+92-94.

Areas are the 143 INSEE codes of the shared geography (hierarchy commune -> département -> *),
drawn with a Zipf-like skew, and a few communes are left nearly empty so that generalisation and
the `*` remainder are exercised.  The report is timed in a child process whose peak RSS is read
from getrusage.  Prints one JSON object as its last line.

    .venv/bin/python bench/report.py [--subscribers 1000000] [--k 10] [--genres 12] [--split 0]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store_server.cli import OneLineParser

REPO = Path(__file__).resolve().parents[1]
GEO = REPO.parent / "shared" / "data" / "geo" / "paris-petite-couronne.geojson"


def main() -> int:
    """Generate, run, verify, print."""
    parser = OneLineParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--genres", type=int, default=12)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument(
        "--split", type=int, default=0, help="split each commune into N IRIS-like leaves"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    features = json.loads(GEO.read_text())["features"]
    codes = np.array([f["properties"]["code"] for f in features])
    deps = np.array([f["properties"]["departement"] for f in features])
    weights = 1.0 / np.arange(1, len(codes) + 1) ** 1.1
    rng.shuffle(weights)
    weights[:6] = 2e-6  # a handful of communes with fewer than k subscribers
    weights /= weights.sum()
    n = args.subscribers
    genres = [f"genre{i:02d}" for i in range(args.genres)]
    with tempfile.TemporaryDirectory() as tmp:
        s_path, h_path, r_path = Path(tmp) / "s.csv", Path(tmp) / "h.csv", Path(tmp) / "r.csv"
        areas = codes[rng.choice(len(codes), size=n, p=weights)]
        if args.split:
            # IRIS-like leaves under each commune, most of them too thin to publish alone
            part = np.minimum(rng.geometric(0.15, size=n) - 1, args.split - 1)
            areas = np.char.add(np.char.add(areas, "_"), part.astype(str))
            lines = [f"{c}_{i};{c};{d};*\n" for c, d in zip(codes, deps, strict=True)
                     for i in range(args.split)]  # fmt: skip
        else:
            lines = [f"{c};{d};*\n" for c, d in zip(codes, deps, strict=True)]
        h_path.write_text("".join(lines))
        people = pd.DataFrame(
            {"subscriber": np.char.add("s", np.arange(n).astype(str)), "area": areas}
        )
        taste = rng.dirichlet(np.full(len(genres), 0.5), size=n)
        for j, genre in enumerate(genres):
            people[genre] = taste[:, j]
        people.to_csv(s_path, index=False, float_format="%.4f")
        del people, taste
        command = [
            sys.executable, "-m", "analytics", "taste-report", "--subscribers", str(s_path),
            "--hierarchy", str(h_path), "--k", str(args.k), "--out", str(r_path),
        ]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stderr.strip(), file=sys.stderr)
            return 1
        # ru_maxrss is in KiB on Linux and covers the waited-for child only
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        report = pd.read_csv(r_path, dtype={"area": str})
    assert (report["subscribers"] >= args.k).all(), "a row below k"
    assert report["area"].is_unique
    covered = int(report["subscribers"].sum())
    assert covered <= n
    print(
        json.dumps(
            {
                "bench": "taste-report",
                "subscribers": n,
                "k": args.k,
                "rows": len(report),
                "suppressed": n - covered,
                "split": args.split,
                "generalised_rows": int((~report["area"].isin(set(areas))).sum()),
                "seconds": round(seconds, 3),
                "peak_rss_mib": round(peak_kib / 1024, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
