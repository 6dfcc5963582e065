"""The predict/evaluate command line on the real recording, causality and bad input."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely

from beacons import frames
from beacons.daemon import ScannerDaemon
from beacons.sources import Advert
from beacons.sources.replay import ReplaySource, format_line
from store_server.positioning import simulate
from store_server.positioning.cli import main
from store_server.positioning.live import VenueModel
from store_server.positioning.predict import predict
from store_server.positioning.report import survey_tracks, zone_accuracy_report
from store_server.positioning.venue import load_marks, load_scanners, load_zones

REPO = Path(__file__).resolve().parents[3]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "store_server.positioning", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def ble(shared_data: Path) -> Path:
    return shared_data / "ble" / "position-annotated"


@pytest.fixture(scope="module")
def split(ble: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    survey = pd.read_csv(ble / "survey.csv", dtype={"scanner": str, "emitter": str, "zone": str})
    trk = survey_tracks(survey)
    tmp = tmp_path_factory.mktemp("split")
    paths = {n: tmp / f"{n}.csv" for n in ("train", "test", "truth", "pred")}
    survey.loc[trk != 2].to_csv(paths["train"], index=False)
    test = survey.loc[trk == 2]
    test.to_csv(paths["truth"], index=False)
    test.assign(x=np.nan, y=np.nan, zone=np.nan).to_csv(paths["test"], index=False)
    return paths


def test_predict_then_evaluate_on_a_held_out_track(ble: Path, split: dict[str, Path]) -> None:
    res = _run(
        "predict", "--scanners", str(ble / "scanners.csv"), "--zones", str(ble / "zones.geojson"),
        "--survey", str(split["train"]), "--recording", str(split["test"]),
        "--out", str(split["pred"]),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    pred = pd.read_csv(split["pred"], dtype={"emitter": str, "zone": str})
    assert list(pred.columns) == ["ts", "emitter", "x", "y", "zone"]
    rec = pd.read_csv(split["test"])
    expected = np.arange(math.ceil(rec["ts"].min()), math.ceil(rec["ts"].max()) + 1)
    assert np.array_equal(pred["ts"].to_numpy(), expected)
    assert set(pred["emitter"]) == {"e78f135624ce"}
    assert set(pred["zone"].dropna()) <= {f"{a}{n}" for a in "ABC" for n in "123"}
    res = _run(
        "evaluate", "--zones", str(ble / "zones.geojson"), "--truth", str(split["truth"]),
        "--predictions", str(split["pred"]),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    scores = json.loads(res.stdout)
    assert {"zone_accuracy", "median_error_m", "p90_error_m", "flaps_per_min"} <= set(scores)
    assert scores["zone_accuracy"] > 0.6 and scores["median_error_m"] < 2.0


def test_estimates_are_causal(ble: Path, split: dict[str, Path]) -> None:
    model = VenueModel.calibrate(
        load_scanners(ble / "scanners.csv"),
        load_zones(ble / "zones.geojson"),
        pd.read_csv(split["train"], dtype={"scanner": str, "emitter": str}),
    )
    rec = pd.read_csv(split["test"], dtype={"scanner": str, "emitter": str})
    full, _ = predict(model, rec)
    cut = float(full["ts"].iloc[len(full) // 2])
    part, _ = predict(model, rec.loc[rec["ts"] <= cut])
    head = full.loc[full["ts"] <= cut].reset_index(drop=True)
    pd.testing.assert_frame_equal(part, head)


def test_arbitrary_ids_fractional_rssi_and_held_estimates(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("scanner,x,y\n007,1.0,0.5\nnorth door,4.0,0.5\n")
    rooms = {
        "0": [[0, 0], [2, 0], [2, 1], [0, 1], [0, 0]],
        "Salle Ω": [[3, 0], [5, 0], [5, 1], [3, 1]],
    }
    feats = [
        {
            "type": "Feature",
            "properties": {"zone": k},
            "geometry": {"type": "Polygon", "coordinates": [v]},
        }
        for k, v in rooms.items()
    ]
    geo = {"type": "FeatureCollection", "features": feats}
    (tmp_path / "z.geojson").write_text(json.dumps(geo), encoding="utf-8")
    rows = []
    for t in range(20):
        x = 1.0 if t < 10 else 4.0
        near, far = ("007", "north door") if x < 2 else ("north door", "007")
        rows += [(100.25 + t, near, -50.5, "0042", x), (100.5 + t, far, -71.25, "0042", x)]
    rows.append((140.5, "007", -50.0, "0042", 4.0))  # after 19 silent seconds
    df = pd.DataFrame(rows, columns=["ts", "scanner", "rssi", "emitter", "x"]).assign(y=0.5)
    df.assign(zone="").to_csv(tmp_path / "survey.csv", index=False)
    df.assign(x="", y="", zone="").to_csv(tmp_path / "rec.csv", index=False)
    res = _run(
        "predict", "--scanners", str(tmp_path / "s.csv"), "--zones", str(tmp_path / "z.geojson"),
        "--survey", str(tmp_path / "survey.csv"), "--recording", str(tmp_path / "rec.csv"),
        "--out", str(tmp_path / "p.csv"),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    pred = pd.read_csv(tmp_path / "p.csv", dtype={"emitter": str, "zone": str})
    assert set(pred["emitter"]) == {"0042"}
    assert pred["ts"].tolist() == list(range(101, 142))
    by_ts = pred.set_index("ts")
    assert by_ts.loc[105, "zone"] == "0" and by_ts.loc[118, "zone"] == "Salle Ω"
    assert by_ts.loc[130, "x"] == by_ts.loc[125, "x"]  # nothing heard: the estimate is held


# pandas reads each of these as a missing value unless told otherwise; to a venue they are names.
NA_SPELLINGS = ["NA", "null", "None", "nan", "N/A", "#N/A", "n/a", "NULL", "NaN", "-nan", "<NA>"]


def test_ids_and_zone_names_that_look_missing_are_kept(
    ble: Path, split: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scanners = pd.read_csv(ble / "scanners.csv", dtype=str)
    names = dict(zip(scanners["scanner"], [*NA_SPELLINGS, "001"], strict=True))
    scanners.assign(scanner=scanners["scanner"].map(names)).to_csv(tmp_path / "s.csv", index=False)
    geo = json.loads((ble / "zones.geojson").read_text(encoding="utf-8"))
    zone_names = dict(
        zip(sorted(f["properties"]["zone"] for f in geo["features"]), NA_SPELLINGS[:9], strict=True)
    )
    for feat in geo["features"]:
        feat["properties"]["zone"] = zone_names[feat["properties"]["zone"]]
    (tmp_path / "z.geojson").write_text(json.dumps(geo), encoding="utf-8")
    for part in ("train", "test", "truth"):
        df = pd.read_csv(split[part], dtype=str, keep_default_na=False)
        df["scanner"] = df["scanner"].map(names)
        df["emitter"] = "NA"
        df["zone"] = df["zone"].map(zone_names).fillna("")
        df.to_csv(tmp_path / f"{part}.csv", index=False)
    runs = {}
    for name, (s, z, d) in {
        "plain": (ble / "scanners.csv", ble / "zones.geojson", split["train"].parent),
        "renamed": (tmp_path / "s.csv", tmp_path / "z.geojson", tmp_path),
    }.items():
        out = tmp_path / f"{name}.pred.csv"
        code, err = _main(
            capsys, "predict", "--scanners", str(s), "--zones", str(z), "--survey",
            str(d / "train.csv"), "--recording", str(d / "test.csv"), "--out", str(out),
        )  # fmt: skip
        assert code == 0, err
        code, err = _main(
            capsys, "evaluate", "--zones", str(z), "--truth", str(d / "truth.csv"),
            "--predictions", str(out),
        )  # fmt: skip
        assert code == 0, err
        runs[name] = pd.read_csv(out, dtype=str, keep_default_na=False)
    plain, renamed = runs["plain"], runs["renamed"]
    assert set(renamed["emitter"]) == {"NA"}
    assert renamed[["ts", "x", "y"]].equals(plain[["ts", "x", "y"]])
    expected = plain["zone"].map(lambda z: zone_names.get(z, ""))
    assert renamed["zone"].tolist() == expected.tolist()
    assert set(renamed["zone"]) & {"NA", "None", "null"}


def test_features_sharing_a_zone_name_make_one_zone(tmp_path: Path) -> None:
    square = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]
    feats = [
        {
            "type": "Feature",
            "properties": {"zone": name},
            "geometry": {"type": "Polygon", "coordinates": [[[x + dx, y] for x, y in square]]},
        }
        for name, dx in (("shop", 0), ("back", 2), ("shop", 4))
    ]
    path = tmp_path / "z.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    zones = load_zones(path)
    assert sorted(zones) == ["back", "shop"]
    assert zones["shop"].area == pytest.approx(2.0)
    assert zones["shop"].contains(shapely.Point(0.5, 0.5))
    assert zones["shop"].contains(shapely.Point(4.5, 0.5))


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The CLI in-process (as `python -m` runs it): exit code and stderr."""
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("case", "content"),
    [
        ("missing", None),
        ("columns", "ts,scanner,rssi\n1,a,-50\n"),
        ("types", "ts,scanner,emitter,rssi,x,y,zone\n1,a,e,loud,1,1,\n"),
        ("garbage", "\x00\x01\x02"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(
    ble: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, content: str | None
) -> None:
    survey = tmp_path / "survey.csv"
    if content is not None:
        survey.write_text(content)
    code, err = _main(
        capsys, "predict", "--scanners", str(ble / "scanners.csv"), "--zones",
        str(ble / "zones.geojson"), "--survey", str(survey), "--recording", str(survey),
        "--out", str(tmp_path / "p.csv"),
    )  # fmt: skip
    assert code != 0
    assert len(err.strip().splitlines()) == 1, err


def test_bad_zones_and_usage_errors(
    ble: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "z.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [{"geometry": null}]}')
    for args in (
        ["evaluate", "--zones", str(bad), "--truth", str(ble / "survey.csv"),
         "--predictions", str(ble / "survey.csv")],
        ["evaluate", "--zones", str(ble / "zones.geojson")],
        ["record-survey", "--sightings", str(ble / "survey.csv"), "--marks", str(bad),
         "--out", str(tmp_path / "x.csv")],
    ):  # fmt: skip
        code, err = _main(capsys, *args)
        assert code != 0
        assert len(err.strip().splitlines()) == 1, err


def test_a_real_process_fails_in_one_line_without_traceback(tmp_path: Path) -> None:
    junk = tmp_path / "junk.csv"
    junk.write_bytes(b"\x00\x01\x02\xff")
    for args in (
        ["evaluate", "--zones", str(junk), "--truth", str(junk), "--predictions", str(junk)],
        ["frobnicate"],
    ):
        res = _run(*args)
        assert res.returncode != 0
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "Traceback" not in res.stderr


def test_record_survey_interpolates_marks_and_round_trips(ble: Path, tmp_path: Path) -> None:
    survey = pd.read_csv(ble / "survey.csv", dtype={"scanner": str, "emitter": str, "zone": str})
    part = survey.iloc[:600]
    part[["ts", "scanner", "emitter", "rssi"]].to_csv(tmp_path / "cap.csv", index=False)
    marks = part.drop_duplicates("ts").iloc[::40][["ts", "x", "y"]]
    marks.to_csv(tmp_path / "marks.csv", index=False)
    res = _run(
        "record-survey", "--sightings", str(tmp_path / "cap.csv"), "--marks",
        str(tmp_path / "marks.csv"), "--zones", str(ble / "zones.geojson"),
        "--out", str(tmp_path / "s.csv"),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = pd.read_csv(tmp_path / "s.csv", dtype={"scanner": str, "emitter": str, "zone": str})
    assert list(got.columns) == ["ts", "scanner", "emitter", "rssi", "x", "y", "zone"]
    assert got["ts"].min() >= marks["ts"].min() and got["ts"].max() <= marks["ts"].max()
    merged = got.merge(part, on=["ts", "scanner"], suffixes=("", "_true"))
    err = np.hypot(merged["x"] - merged["x_true"], merged["y"] - merged["y_true"])
    assert len(merged) == len(got) and float(err.max()) < 0.3
    assert (merged["zone"] == merged["zone_true"]).mean() > 0.97
    res = _run("record-survey", "--sightings", str(tmp_path / "cap.csv"), "--marks",
               str(ble / "scanners.csv"), "--out", str(tmp_path / "x.csv"))  # fmt: skip
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1


REFERENCE_UUID = "f7826da6-4fa2-4e98-8024-bc5b71e0893e"


def _captures(
    part: pd.DataFrame, tmp_path: Path, around: bytes = b"", prefix: str = ""
) -> dict[str, Path]:
    """One capture per scanner: the survey beacon's iBeacon frames, each followed by an EID
    frame of a passer-by that no survey may keep; `around`: what else each advert carried (a
    daemon once recorded whole adverts)."""
    reference = frames.encode(frames.IBeacon(uuid.UUID(REFERENCE_UUID).bytes, 7, 300, -59))
    other = frames.encode(frames.EddystoneEID(bytes.fromhex("0123456789abcdef"), -20))
    files = {}
    for scanner, rows in part.groupby("scanner"):
        path = tmp_path / f"{prefix}{scanner}.jsonl"
        lines = []
        for ts, rssi in zip(rows["ts"], rows["rssi"], strict=True):
            lines.append(format_line(Advert(float(ts), float(rssi), "", around + reference)))
            lines.append(format_line(Advert(float(ts) + 0.01, float(rssi) - 3, "", other + around)))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        files[str(scanner)] = path
    return files


def _walk(ble: Path, tmp_path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The survey's first 600 readings as a sightings table (cap.csv) and the installer's marks
    every 40th second (m.csv); returns the readings and record-survey's shared arguments."""
    survey = pd.read_csv(ble / "survey.csv", dtype={"scanner": str, "emitter": str, "zone": str})
    part = survey.iloc[:600]
    part[["ts", "scanner", "emitter", "rssi"]].to_csv(tmp_path / "cap.csv", index=False)
    part.drop_duplicates("ts").iloc[::40][["ts", "x", "y"]].to_csv(tmp_path / "m.csv", index=False)
    return part, ["--marks", str(tmp_path / "m.csv"), "--zones", str(ble / "zones.geojson")]


def test_record_survey_from_scanner_daemon_captures(
    ble: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    part, common = _walk(ble, tmp_path)
    files = _captures(part, tmp_path)
    with files[part["scanner"].iloc[0]].open("a", encoding="utf-8") as fh:
        fh.write('{"ts": 1581248900.5, "rssi": -7')  # the daemon stopped mid-line
    captures = [f"--capture={s}={p}" for s, p in files.items()]
    code, err = _main(
        capsys, "record-survey", "--sightings", str(tmp_path / "cap.csv"), *common,
        "--out", str(tmp_path / "from_table.csv"),
    )  # fmt: skip
    assert code == 0, err
    for emitter in (f"{REFERENCE_UUID}:7:300", REFERENCE_UUID.replace("-", "") + "0007012c"):
        code, err = _main(
            capsys, "record-survey", *captures, "--emitter", emitter, *common,
            "--out", str(tmp_path / "from_daemons.csv"),
        )  # fmt: skip
        assert code == 0, err
        assert err.strip() == "positioning: skipped 1 unreadable capture line(s)"
        got = pd.read_csv(tmp_path / "from_daemons.csv", dtype=str)
        want = pd.read_csv(tmp_path / "from_table.csv", dtype=str)
        assert set(got["emitter"]) == {REFERENCE_UUID.replace("-", "") + "0007012c"}
        cols = ["ts", "scanner", "rssi", "x", "y", "zone"]
        key = ["ts", "scanner"]
        got = got[cols].astype({"ts": float, "rssi": float}).sort_values(key, ignore_index=True)
        want = want[cols].astype({"ts": float, "rssi": float}).sort_values(key, ignore_index=True)
        pd.testing.assert_frame_equal(got, want)
    assert "0123456789abcdef" not in (tmp_path / "from_daemons.csv").read_text(encoding="utf-8")


NAME = b"Carol's Pixel 7"
# What phones advertise beside a frame: a Complete Local Name, other service and manufacturer data.
AROUND = bytes([len(NAME) + 1, 0x09]) + NAME + bytes.fromhex("06162cfe00c4b9" + "05ff4c001005")


def _record(heard: Path, out: Path) -> None:
    """Run a scanner daemon in record mode on what its radio heard; the capture goes to `out`."""
    source = ReplaySource(heard, speed=0, rebase=False)
    daemon = ScannerDaemon(
        server_url="http://127.0.0.1:9", scanner="s1", secret="00" * 16, source=source,
        queue_path=str(out.with_suffix(".sqlite")), record_file=str(out),
        ibeacon_uuids=frozenset({uuid.UUID(REFERENCE_UUID).bytes}),
    )  # fmt: skip
    while not source.exhausted:  # the daemon's reader loop, without its threads
        daemon.handle(source.read(0))
    daemon.stop()


def test_record_survey_reads_captures_the_daemon_writes_now_and_wrote_before(
    ble: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    part, common = _walk(ble, tmp_path)
    want_csv = tmp_path / "from_table.csv"
    code, err = _main(capsys, "record-survey", "--sightings", str(tmp_path / "cap.csv"), *common,
                      "--out", str(want_csv))  # fmt: skip
    assert code == 0, err
    before = _captures(part, tmp_path, AROUND, "heard-")  # an old daemon's captures: whole adverts
    now = {scanner: tmp_path / f"{scanner}.jsonl" for scanner in before}
    for scanner, heard in before.items():
        _record(heard, now[scanner])
    for scanner in before:
        old, new = before[scanner].read_text(), now[scanner].read_text()
        assert NAME.hex() in old and old.count("\n") == new.count("\n")
        assert NAME.hex() not in new and NAME.decode() not in new
        for line in new.splitlines():
            data = bytes.fromhex(json.loads(line)["data_hex"])
            assert [t for t, _ in frames.iter_ad(data)] in ([0x16], [0xFF])  # the frame alone
    key, cols = ["ts", "scanner"], ["ts", "scanner", "rssi", "x", "y", "zone"]
    want = pd.read_csv(want_csv, dtype=str)[cols].astype({"ts": float, "rssi": float})
    for files in (before, now):
        out = tmp_path / "from_daemons.csv"
        code, err = _main(
            capsys, "record-survey", *(f"--capture={s}={p}" for s, p in files.items()),
            "--emitter", f"{REFERENCE_UUID}:7:300", *common, "--out", str(out),
        )  # fmt: skip
        assert code == 0 and err == "", err
        got = pd.read_csv(out, dtype=str)
        assert set(got["emitter"]) == {REFERENCE_UUID.replace("-", "") + "0007012c"}
        got = got[cols].astype({"ts": float, "rssi": float})
        pd.testing.assert_frame_equal(
            got.sort_values(key, ignore_index=True), want.sort_values(key, ignore_index=True)
        )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--capture needs --emitter"),
        (["--emitter", "not-a-beacon"], "expected an EID"),
        (["--emitter", "0123456789abcdef", "--capture", "s1=x"], "given twice"),
        (["--emitter", "0123456789abcdef", "--capture", "nofile"], "expected SCANNER=FILE"),
    ],
)
def test_record_survey_capture_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    cap = tmp_path / "s1.jsonl"
    cap.write_text("not json\n", encoding="utf-8")
    (tmp_path / "m.csv").write_text("ts,x,y\n1,0,0\n2,1,1\n")
    code, err = _main(
        capsys, "record-survey", "--capture", f"s1={cap}", *extra,
        "--marks", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o.csv"),
    )  # fmt: skip
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and message in err, err
    code, err = _main(
        capsys, "record-survey", "--capture", f"s1={cap}", "--emitter", "0123456789abcdef",
        "--marks", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o.csv"),
    )  # fmt: skip
    assert code != 0 and "not a scanner capture" in err, err
    assert not (tmp_path / "o.csv").exists()


def test_mark_stamps_typed_positions_and_refuses_typos(tmp_path: Path) -> None:
    out = tmp_path / "marks.csv"
    before = time.time()
    res = subprocess.run(
        [sys.executable, "-m", "store_server.positioning", "mark", "--out", str(out)],
        cwd=REPO, input="0.5 1.25\n\n2,3\noops\n4;5.5\nnan 1\n", capture_output=True,
        text=True, check=False, timeout=60,
    )  # fmt: skip
    after = time.time()
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [
        "positioning: line 4 ignored: expected 'x y' in metres",
        "positioning: line 6 ignored: x and y must be finite",
    ]
    marks = load_marks(out)
    assert marks[["x", "y"]].values.tolist() == [[0.5, 1.25], [2.0, 3.0], [4.0, 5.5]]
    assert marks["ts"].is_monotonic_increasing
    assert before - 0.01 <= marks["ts"].min() and marks["ts"].max() <= after + 0.01
    res = subprocess.run(
        [sys.executable, "-m", "store_server.positioning", "mark", "--out", str(out)],
        cwd=REPO, input="7 8\n", capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0 and len(load_marks(out)) == 4  # appended, one header
    res = subprocess.run(
        [sys.executable, "-m", "store_server.positioning", "mark", "--out", str(out)],
        cwd=REPO, input="x\n", capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert res.returncode != 0 and "no mark recorded" in res.stderr.splitlines()[-1]


def test_mark_ends_cleanly_on_ctrl_c_with_every_mark_kept(tmp_path: Path) -> None:
    out = tmp_path / "marks.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "store_server.positioning", "mark", "--out", str(out)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("3.5 4\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("marked 3.5 4 at ")  # written and flushed
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and err == ""
    assert load_marks(out)[["x", "y"]].values.tolist() == [[3.5, 4.0]]


def _tiny_venue(tmp_path: Path) -> dict[str, Path]:
    """A two-room venue, its survey and a short recording, as files to break one at a time."""
    venue = simulate.flat()
    survey = venue.readings(simulate.survey_path(), emitter="installer", seed=1)
    visit = venue.readings(simulate.visit_path(), emitter="guest", seed=2).iloc[:400]
    paths = {n: tmp_path / f"{n}.csv" for n in ("scanners", "survey", "recording")}
    paths["zones"] = tmp_path / "zones.geojson"
    rows = [(s, x, y) for s, (x, y) in venue.scanners.items()]
    pd.DataFrame(rows, columns=["scanner", "x", "y"]).to_csv(paths["scanners"], index=False)
    survey.to_csv(paths["survey"], index=False)
    visit.drop(columns=["x", "y"]).to_csv(paths["recording"], index=False)
    feats = [
        {"type": "Feature", "properties": {"name": n}, "geometry": g.__geo_interface__}
        for n, g in venue.zones.items()
    ]
    paths["zones"].write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return paths


def _edit_csv(path: Path, row: int, column: str, value: object) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[row, column] = value
    df.to_csv(path, index=False)


def _edit_zones(path: Path, change: dict) -> None:  # type: ignore[type-arg]
    doc = json.loads(path.read_text())
    doc["features"][0] = {**doc["features"][0], **change}
    path.write_text(json.dumps(doc))


def _triangle(far: float) -> dict:  # type: ignore[type-arg]
    return {"type": "Polygon", "coordinates": [[[0, 0], [far, 0], [0, 1], [0, 0]]]}


def _nested(depth: int) -> dict:  # type: ignore[type-arg]
    coords: list = [0, 0]  # type: ignore[type-arg]
    for _ in range(depth):
        coords = [coords]
    return {"type": "Polygon", "coordinates": coords}


UNUSABLE = [
    ("recording", lambda p: _edit_csv(p, 3, "ts", "1700000000123"), "milliseconds?"),
    ("recording", lambda p: _edit_csv(p, 3, "ts", "inf"), "ts must be seconds"),
    ("recording", lambda p: _edit_csv(p, 5, "rssi", "1e12"), "rssi must be dBm"),
    ("survey", lambda p: _edit_csv(p, 5, "rssi", "1e200"), "rssi must be dBm"),
    ("recording", lambda p: _edit_csv(p, 399, "ts", str(1_700_000_000 + 365 * 86400)), "days"),
    ("scanners", lambda p: p.write_text("scanner,x,y\n"), "no scanners"),
    ("scanners", lambda p: _edit_csv(p, 0, "scanner", ""), "scanner id missing"),
    ("survey", lambda p: _edit_csv(p, slice(None), "scanner", "elsewhere"), "no reading comes"),
    ("recording", lambda p: _edit_csv(p, slice(None), "scanner", "elsewhere"), "no reading comes"),
    ("zones", lambda p: _edit_zones(p, {"geometry": {"type": "Polygonx"}}), "not a valid polygon"),
    (
        "zones",
        lambda p: _edit_zones(
            p, {"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}}
        ),
        "has no area",
    ),
    (
        "zones",
        lambda p: _edit_zones(
            p, {"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, "NaN"], [0, 1]]]}}
        ),
        "not finite",
    ),
    ("zones", lambda p: _edit_zones(p, {"properties": {"name": " "}}), "empty zone name"),
    # An integer corner no float holds was an OverflowError traceback; nesting deeper than the
    # JSON decoder recurses, a RecursionError one; a corner of 1e300 m a zone nothing fits in.
    ("zones", lambda p: _edit_zones(p, {"geometry": _triangle(10**400)}), "beyond ±1e+07 m"),
    ("zones", lambda p: _edit_zones(p, {"geometry": _triangle(1e300)}), "beyond ±1e+07 m"),
    ("zones", lambda p: p.write_text("[" * 100_000), "cannot read zones (RecursionError)"),
    ("zones", lambda p: _edit_zones(p, {"geometry": _nested(900)}), "not a valid polygon"),
    # Finite but 1e300 m away: numpy warnings, then a grid of no computable length.
    ("scanners", lambda p: _edit_csv(p, 2, "x", "1e300"), "line 4: x and y must be metres"),
]


@pytest.mark.parametrize(
    ("target", "spoil", "fragment"),
    UNUSABLE,
    ids=[f"{t}-{f.split()[0]}-{i}" for i, (t, _, f) in enumerate(UNUSABLE)],
)
def test_predict_refuses_what_it_used_to_hang_or_crash_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, spoil, fragment: str
) -> None:  # type: ignore[no-untyped-def]
    # Once: a millisecond stamp stepped a second at a time for decades, an RSSI of 1e12 divided
    # by zero, a misspelt geometry type or a NaN corner was a traceback, an empty zone name or
    # a flat zone was a zone nothing could be in, and a venue whose files did not fit together
    # gave textbook estimates or an empty file.
    paths = _tiny_venue(tmp_path)
    spoil(paths[target])
    out = tmp_path / "p.csv"
    code, err = _main(
        capsys, "predict", "--scanners", str(paths["scanners"]), "--zones", str(paths["zones"]),
        "--survey", str(paths["survey"]), "--recording", str(paths["recording"]),
        "--out", str(out),
    )  # fmt: skip
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert fragment in err and not out.exists()


def test_predict_never_writes_over_an_input_nor_half_its_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _tiny_venue(tmp_path)
    before = paths["recording"].read_bytes()
    args = ["predict", "--scanners", str(paths["scanners"]), "--zones", str(paths["zones"]),
            "--survey", str(paths["survey"]), "--recording", str(paths["recording"])]  # fmt: skip
    code, err = _main(capsys, *args, "--out", str(paths["recording"]))
    assert code != 0 and "is also an input" in err
    assert paths["recording"].read_bytes() == before
    out = tmp_path / "p.csv"
    code, err = _main(capsys, *args, "--out", str(out), "--report", str(tmp_path / "no/r.json"))
    assert code != 0 and "does not exist" in err and not out.exists()


def test_zones_drawn_loosely_are_read_as_drawn(tmp_path: Path) -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]}
    one = {"type": "Feature", "properties": {"name": "bar"}, "geometry": bowtie}
    path = tmp_path / "z.geojson"
    # A lone Feature, with the byte-order mark some editors write.
    path.write_text("\ufeff" + json.dumps(one), encoding="utf-8")
    zones = load_zones(path)
    # Both lobes of the self-crossing outline (buffer(0) kept one).
    assert zones["bar"].contains(shapely.Point(0.2, 1.0))
    assert zones["bar"].contains(shapely.Point(1.8, 1.0))
    assert zones["bar"].area == pytest.approx(2.0)


def _square_room(tmp_path: Path) -> Path:
    """A zones file of one 4 x 4 m room named "room"."""
    zones = tmp_path / "z.geojson"
    square = {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]]}
    feat = {"type": "Feature", "properties": {"name": "room"}, "geometry": square}
    zones.write_text(json.dumps({"type": "FeatureCollection", "features": [feat]}))
    return zones


def test_evaluate_needs_only_positions_of_the_truth_and_whole_estimates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zones = _square_room(tmp_path)
    truth = tmp_path / "truth.csv"
    truth.write_text("ts,emitter,x,y\n10,e,1,1\n11,e,1.5,1\n")
    preds = tmp_path / "p.csv"
    preds.write_text("ts,emitter,x,y,zone\n10,e,1,1.5,room\n11,e,1.5,1.5,room\n")
    code = main(["evaluate", "--zones", str(zones), "--truth", str(truth), "--predictions",
                 str(preds)])  # fmt: skip
    scores = json.loads(capsys.readouterr().out)
    assert code == 0 and scores["scored"] == 2 and scores["median_error_m"] == 0.5
    preds.write_text("ts,emitter,x,y,zone\n10,e,,,room\n")
    code, err = _main(capsys, "evaluate", "--zones", str(zones), "--truth", str(truth),
                      "--predictions", str(preds))  # fmt: skip
    assert code != 0 and "every estimate needs" in err


def test_evaluate_refuses_an_estimate_beyond_any_venue_rather_than_flatter_the_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Its distance to the truth overflowed to infinity and was left out of the error figures:
    # one estimate exact, one at 1.5e308 m, scored a median and p90 of 0 m.
    zones = _square_room(tmp_path)
    truth = tmp_path / "truth.csv"
    truth.write_text("ts,emitter,x,y\n10,e,1,1\n11,e,1,1\n")
    preds = tmp_path / "p.csv"
    preds.write_text("ts,emitter,x,y,zone\n10,e,1,1,room\n11,e,1.5e308,1.5e308,room\n")
    code, err = _main(capsys, "evaluate", "--zones", str(zones), "--truth", str(truth),
                      "--predictions", str(preds))  # fmt: skip
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert "line 3: x and y must be metres" in err and not capsys.readouterr().out


def test_the_survey_report_matches_each_emitter_to_its_own_truth() -> None:
    # A second reference beacon lay on the kitchen counter while the installer walked: every
    # one of its seconds is a kitchen second, whoever else was heard at that time.
    venue = simulate.flat()
    path = simulate.survey_path()
    walker = venue.readings(path, emitter="walker", seed=1)
    counter = venue.readings(path.assign(x=1.0, y=1.0), emitter="counter", seed=2)
    # Heard just after each whole second: matched by time alone, every estimate stamped with
    # that second (the walker's too) would take the counter's place as its truth.
    counter["ts"] = np.floor(counter["ts"]) + 0.001
    survey = pd.concat([walker, counter]).sort_values("ts", kind="stable")
    report = zone_accuracy_report(venue.scanners, venue.zones, survey)
    in_kitchen = np.mean([venue.zones["kitchen"].contains(shapely.Point(x, y))
                          for x, y in zip(walker["x"], walker["y"], strict=True)])  # fmt: skip
    seconds = {z: v["seconds"] for z, v in report["zones"].items()}
    assert sum(seconds.values()) == report["overall"]["scored"]
    share = seconds["kitchen"] / report["overall"]["scored"]
    assert share == pytest.approx(0.5 + 0.5 * in_kitchen, abs=0.05)


def test_mark_keeps_its_file_a_marks_file(tmp_path: Path) -> None:
    def mark(out: Path, typed: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "store_server.positioning", "mark", "--out", str(out)],
            cwd=REPO, input=typed, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip

    nothing = tmp_path / "nothing.csv"
    assert mark(nothing, "").returncode != 0 and not nothing.exists()  # no walk, no file
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    res = mark(other, "1 2\n")
    assert res.returncode != 0 and "not a marks file" in res.stderr
    assert other.read_text() == "a,b\n1,2\n"
    cut = tmp_path / "cut.csv"
    cut.write_text("ts,x,y\n1700000000.000,1,1")  # the last line lost its line break
    assert mark(cut, "2 2\n").returncode == 0
    assert load_marks(cut)[["x", "y"]].values.tolist() == [[1.0, 1.0], [2.0, 2.0]]


@pytest.mark.parametrize("gap", ["-5", "nan", "0"])
def test_record_survey_refuses_a_gap_that_is_not_positive(
    ble: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], gap: str
) -> None:
    marks = tmp_path / "marks.csv"
    marks.write_text("ts,x,y\n1,0,0\n2,1,1\n")
    code, err = _main(
        capsys, "record-survey", "--sightings", str(ble / "survey.csv"), "--marks", str(marks),
        "--out", str(tmp_path / "s.csv"), "--max-gap", gap,
    )  # fmt: skip
    assert code != 0 and "positive number of seconds" in err and len(err.splitlines()) == 1


def test_a_sightings_table_gives_the_survey_its_reference_emitter_only(
    ble: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A table of what the scanners heard holds passers-by too: given the installer's positions
    # they would poison the map, and a survey must not keep other people's identifiers.
    survey = pd.read_csv(ble / "survey.csv", dtype={"scanner": str, "emitter": str, "zone": str})
    part = survey.iloc[:600]
    passer = part.assign(emitter="0123456789abcdef", ts=part["ts"] + 0.01)
    table = pd.concat([part, passer])[["ts", "scanner", "emitter", "rssi"]]
    table.to_csv(tmp_path / "cap.csv", index=False)
    part.drop_duplicates("ts").iloc[::40][["ts", "x", "y"]].to_csv(tmp_path / "m.csv", index=False)
    args = ["record-survey", "--sightings", str(tmp_path / "cap.csv"),
            "--marks", str(tmp_path / "m.csv")]  # fmt: skip
    out = tmp_path / "s.csv"
    code, err = _main(capsys, *args, "--out", str(out))
    assert code != 0 and "holds 2 emitters" in err and "--emitter" in err and not out.exists()
    reference = part["emitter"].iloc[0]
    code, err = _main(capsys, *args, "--emitter", reference.upper(), "--out", str(out))
    assert code == 0, err
    got = pd.read_csv(out, dtype={"emitter": str})
    assert set(got["emitter"]) == {reference} and len(got) > 500
    assert "0123456789abcdef" not in out.read_text(encoding="utf-8")
    code, err = _main(capsys, *args, "--emitter", "fedcba9876543210", "--out", str(out))
    assert code != 0 and "fedcba9876543210 is never heard" in err


def test_captures_as_written_are_read_and_one_file_is_one_scanner(
    ble: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    survey = pd.read_csv(ble / "survey.csv", dtype={"scanner": str, "emitter": str, "zone": str})
    part = survey.iloc[:600]
    part.drop_duplicates("ts").iloc[::40][["ts", "x", "y"]].to_csv(tmp_path / "m.csv", index=False)
    files = _captures(part, tmp_path)
    first, path = next(iter(files.items()))
    captures = [f"--capture={s}={p}" for s, p in files.items()]
    common = ["--marks", str(tmp_path / "m.csv"), "--out", str(tmp_path / "s.csv")]
    code, err = _main(capsys, "record-survey", *captures, "--emitter", REFERENCE_UUID + ":7:300",
                      *common)  # fmt: skip
    assert code == 0, err
    clean = pd.read_csv(tmp_path / "s.csv", dtype={"scanner": str})
    # A byte-order mark (an editor's), a stray byte and a number no float holds spoil
    # nothing but their own line.
    body = path.read_bytes()
    path.write_bytes(
        b"\xef\xbb\xbf"
        + body
        + b'{"ts": 1, "rssi": -50, "data_hex": "\xff"}\n'
        + b'{"ts": 1'
        + b"0" * 400
        + b', "rssi": -50, "data_hex": "02"}\n'
    )
    code, err = _main(
        capsys, "record-survey", *captures, "--emitter", f"{REFERENCE_UUID}:007:0x12c", *common
    )
    assert code == 0, err
    assert err.strip() == "positioning: skipped 2 unreadable capture line(s)"
    got = pd.read_csv(tmp_path / "s.csv", dtype={"scanner": str})
    pd.testing.assert_frame_equal(got, clean)  # the first record, after the mark, is kept
    code, err = _main(
        capsys, "record-survey", *captures, f"--capture=again={path.parent / '.' / path.name}",
        "--emitter", f"{REFERENCE_UUID}:7:300", *common,
    )  # fmt: skip
    assert code != 0 and f"given for scanners {first!r} and 'again'" in err, err
    code, err = _main(
        capsys, "record-survey", *captures, "--emitter", f"{REFERENCE_UUID}:7:301", *common
    )
    assert code != 0 and "reference emitter" in err and "never heard" in err, err


def test_record_survey_refuses_marks_no_walk_can_have(
    ble: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    survey = pd.read_csv(ble / "survey.csv", dtype={"scanner": str, "emitter": str, "zone": str})
    part = survey.iloc[:600]
    part[["ts", "scanner", "emitter", "rssi"]].to_csv(tmp_path / "cap.csv", index=False)
    marks = part.drop_duplicates("ts").iloc[::40][["ts", "x", "y"]].reset_index(drop=True)
    out = tmp_path / "s.csv"
    for x, fragment, zones in (
        (1e308, "metres within", []),  # interpolated, it overflowed to inf in the survey
        (500.0, "m from every zone (a typo?)", ["--zones", str(ble / "zones.geojson")]),
    ):
        marks.assign(x=np.where(marks.index == 3, x, marks["x"])).to_csv(
            tmp_path / "m.csv", index=False
        )
        code, err = _main(
            capsys, "record-survey", "--sightings", str(tmp_path / "cap.csv"),
            "--marks", str(tmp_path / "m.csv"), *zones, "--out", str(out),
        )  # fmt: skip
        assert code != 0 and fragment in err and len(err.splitlines()) == 1, err
        assert not out.exists()


def test_predict_writes_both_outputs_or_neither(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A failure once the files are being written (the report's directory gone, a full disk)
    # is store_server.atomic_files' to handle: see tests/store_server/test_atomic_files.py.
    paths = _tiny_venue(tmp_path)
    args = ["predict", "--scanners", str(paths["scanners"]), "--zones", str(paths["zones"]),
            "--survey", str(paths["survey"]), "--recording", str(paths["recording"])]  # fmt: skip
    out = tmp_path / "p.csv"
    (tmp_path / "r").mkdir()
    code, err = _main(capsys, *args, "--out", str(out), "--report", str(tmp_path / "r"))
    assert code != 0 and "is a directory" in err and not out.exists()
    code, err = _main(capsys, *args, "--out", str(out), "--report", str(tmp_path / "r.json"))
    assert code == 0, err
    assert len(pd.read_csv(out)) > 0 and "drift_db" in json.loads((tmp_path / "r.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_predict_through_a_symbolic_link_replaces_the_file_it_points_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "latest.csv -> runs/p.csv": the run's file is updated and the link kept (it was once
    # replaced by a regular file, leaving runs/p.csv stale).
    paths = _tiny_venue(tmp_path)
    (tmp_path / "runs").mkdir()
    real = tmp_path / "runs" / "p.csv"
    real.write_text("old\n", encoding="utf-8")
    link = tmp_path / "latest.csv"
    link.symlink_to(real)
    code, err = _main(
        capsys, "predict", "--scanners", str(paths["scanners"]), "--zones", str(paths["zones"]),
        "--survey", str(paths["survey"]), "--recording", str(paths["recording"]),
        "--out", str(link),
    )  # fmt: skip
    assert code == 0, err
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert list(pd.read_csv(real).columns) == ["ts", "emitter", "x", "y", "zone"]
    for folder in (tmp_path, tmp_path / "runs"):
        assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_predict_writes_a_pipe_as_is(tmp_path: Path) -> None:
    # What --out /dev/stdout is, through a link of the test's own: were the pipe ever renamed
    # over again, only this link would be lost, not the machine's /dev/stdout (tests may run as
    # root, who may write in /dev).
    paths = _tiny_venue(tmp_path)
    stdout = tmp_path / "stdout"
    stdout.symlink_to("/proc/self/fd/1")
    res = _run(
        "predict", "--scanners", str(paths["scanners"]), "--zones", str(paths["zones"]),
        "--survey", str(paths["survey"]), "--recording", str(paths["recording"]),
        "--out", str(stdout),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ts,emitter,x,y,zone\n") and len(res.stdout.splitlines()) > 1
    assert stdout.is_symlink()


def _mark_proc(out: Path, **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "store_server.positioning", "mark", "--out", str(out)],
        cwd=REPO, text=True, check=False, timeout=60, **kwargs,
    )  # fmt: skip


def test_mark_keeps_every_digit_typed_and_refuses_what_is_not_a_position(
    tmp_path: Path,
) -> None:
    out = tmp_path / "marks.csv"
    typed = "1234.5678 2\n500012.25, 4.5\n1" + " " * 50_000 + "2x y\n"
    started = time.monotonic()
    res = _mark_proc(out, input=typed, capture_output=True)
    assert time.monotonic() - started < 30  # the long line took minutes to refuse, once
    assert res.returncode == 0, res.stderr
    assert res.stderr == "positioning: line 3 ignored: longer than 200 characters\n"
    assert load_marks(out)[["x", "y"]].values.tolist() == [[1234.5678, 2.0], [500012.25, 4.5]]
    assert res.stdout.startswith("marked 1234.5678 2 at ")


def test_mark_goes_on_with_nobody_reading_and_refuses_no_input(tmp_path: Path) -> None:
    # Confirmations to a closed stdout, or to a pipe whose reader left: the walk goes on.
    closed = tmp_path / "closed.csv"
    res = _mark_proc(closed, input="1 2\n3 4\n", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                     preexec_fn=lambda: os.close(1))  # fmt: skip
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert len(load_marks(closed)) == 2
    broken = tmp_path / "broken.csv"
    reader_r, reader_w = os.pipe()
    os.close(reader_r)  # nobody will ever read what mark prints
    try:
        res = _mark_proc(broken, input="1 2\n3 4\n5 6\n", stdout=reader_w,
                         stderr=subprocess.PIPE)  # fmt: skip
    finally:
        os.close(reader_w)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert len(load_marks(broken)) == 3
    none = tmp_path / "none.csv"
    res = _mark_proc(none, stdin=subprocess.DEVNULL, capture_output=True,
                     preexec_fn=lambda: os.close(0))  # fmt: skip
    assert res.returncode != 0 and "stdin is closed" in res.stderr and not none.exists()
    assert len(res.stderr.splitlines()) == 1


def test_predict_refuses_an_output_in_a_symbolic_link_loop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _tiny_venue(tmp_path)
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    args = ["predict", "--scanners", str(paths["scanners"]), "--zones", str(paths["zones"]),
            "--survey", str(paths["survey"]), "--recording", str(paths["recording"])]  # fmt: skip
    code, err = _main(capsys, *args, "--out", str(tmp_path / "a"))
    assert code == 2 and "symbolic link loop" in err and len(err.splitlines()) == 1, err


def test_bad_venue_files_fail_in_one_line_in_a_real_process(tmp_path: Path) -> None:
    # The RuntimeWarnings a far scanner caused went to the process's stderr, not to capsys.
    paths = _tiny_venue(tmp_path)
    _edit_csv(paths["scanners"], 0, "y", "1e300")
    deep = tmp_path / "deep.geojson"
    deep.write_text("[" * 100_000)
    huge = tmp_path / "huge.geojson"
    huge.write_text(json.dumps({"type": "Feature", "properties": {"name": "a"},
                                "geometry": _triangle(10**400)}))  # fmt: skip
    out = tmp_path / "p.csv"
    for scanners, zones in (
        (paths["scanners"], paths["zones"]),
        (paths["scanners"].with_name("ok.csv"), deep),
        (paths["scanners"].with_name("ok.csv"), huge),
    ):
        if not scanners.exists():
            scanners.write_text("scanner,x,y\na,0,0\n")
        res = _run("predict", "--scanners", str(scanners), "--zones", str(zones),
                   "--survey", str(paths["survey"]), "--recording", str(paths["recording"]),
                   "--out", str(out))  # fmt: skip
        assert res.returncode == 2, res.stderr
        assert len(res.stderr.splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
        assert not out.exists()


def test_mark_refuses_a_position_its_marks_file_could_not_hold(tmp_path: Path) -> None:
    # Written once, it made record-survey refuse the whole walk's marks.
    out = tmp_path / "marks.csv"
    res = _mark_proc(out, input="1 2\n1e300 1e300\n-2e7,3\n3 4\n", capture_output=True)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [
        "positioning: line 2 ignored: x and y must be metres within ±1e+07",
        "positioning: line 3 ignored: x and y must be metres within ±1e+07",
    ]
    assert load_marks(out)[["x", "y"]].values.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_mark_refuses_a_line_that_is_not_text_and_goes_on(tmp_path: Path) -> None:
    # A stray byte was a UnicodeDecodeError that ended the walk and left an empty marks file.
    def mark(out: Path, typed: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "store_server.positioning", "mark", "--out", str(out)],
            cwd=REPO, input=typed, capture_output=True, check=False, timeout=60,
            env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        )  # fmt: skip

    out = tmp_path / "marks.csv"
    res = mark(out, b"\xff\xfe 5 6\n1 2\n3,4\n")
    assert res.returncode == 0, res.stderr
    assert res.stderr.decode() == "positioning: line 1 ignored: not utf-8 text\n"
    assert load_marks(out)[["x", "y"]].values.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    nothing = tmp_path / "nothing.csv"
    res = mark(nothing, b"\xff\n")
    assert res.returncode == 2 and not nothing.exists()
    assert res.stderr.decode().splitlines() == [
        "positioning: line 1 ignored: not utf-8 text",
        f"positioning: {nothing}: no mark recorded",
    ]


def test_mark_with_no_position_keeps_a_file_that_was_there(tmp_path: Path) -> None:
    # Only a file mark created itself may go: an empty one the installer made stays.
    empty = tmp_path / "empty.csv"
    empty.touch()
    res = _mark_proc(empty, stdin=subprocess.DEVNULL, capture_output=True)
    assert res.returncode == 2 and res.stderr == f"positioning: {empty}: no mark recorded\n"
    assert empty.exists() and empty.read_bytes() == b""


def _interrupt_predict(tmp_path: Path, fifo: str) -> tuple[subprocess.Popen[str], list[Path]]:
    """predict on the tiny venue, its `fifo` input a pipe the test holds open: the returned
    process is at work, past every import, and waits for the rest of that file."""
    paths = _tiny_venue(tmp_path)
    pipe = tmp_path / f"{fifo}.pipe"
    os.mkfifo(pipe)
    outs = [tmp_path / "p.csv", tmp_path / "r.json"]
    for out in outs:
        out.write_text("before\n")
    args = {**paths, fifo: pipe}
    proc = subprocess.Popen(
        [sys.executable, "-m", "store_server.positioning", "predict",
         "--scanners", str(args["scanners"]), "--zones", str(args["zones"]),
         "--survey", str(args["survey"]), "--recording", str(args["recording"]),
         "--out", str(outs[0]), "--report", str(outs[1])],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while True:  # a non-blocking open succeeds once predict has opened the pipe to read
        try:
            fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"predict never read {pipe.name}: {proc.communicate()[1]}")
            time.sleep(0.05)
    try:
        os.write(fd, paths[fifo].read_bytes()[:200])
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        os.close(fd)
        proc.kill()
    return proc, outs


@pytest.mark.parametrize("fifo", ["zones", "recording"])
def test_predict_interrupted_ends_in_one_line_with_its_outputs_untouched(
    tmp_path: Path, fifo: str
) -> None:
    # Ctrl-C was a KeyboardInterrupt traceback of 30-70 lines; while pandas read a CSV, pandas
    # made it a ParserError, reported as a bad file.
    proc, outs = _interrupt_predict(tmp_path, fifo)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err == "positioning: interrupted\n", err
    assert [out.read_text() for out in outs] == ["before\n", "before\n"]
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".*"))
