"""`python -m beacons` as installers and app developers run it: a real subprocess per call."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beacons.eid import compute_eid
from beacons.frames import EddystoneEID, decode
from tests.beacons.test_frames import (
    ALTBEACON_HEX,
    EID_HEX,
    EN_HEX,
    IBEACON_HEX,
    TLM0_HEX,
    TLM1_HEX,
    UID_HEX,
    URL_HEX,
)

REPO = Path(__file__).resolve().parents[2]
IK_HEX = "000102030405060708090a0b0c0d0e0f"


def run(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI (or a one-line script around it) from the repository root."""
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "beacons", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], rc: int) -> None:
    assert proc.returncode == rc, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("\n"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_decode_every_frame_type_in_one_process_each() -> None:
    expected_types = {
        IBEACON_HEX: "ibeacon",
        ALTBEACON_HEX: "altbeacon",
        UID_HEX: "eddystone_uid",
        URL_HEX: "eddystone_url",
        TLM0_HEX: "eddystone_tlm",
        TLM1_HEX: "eddystone_tlm",
        EID_HEX: "eddystone_eid",
        EN_HEX: "exposure_notification",
    }
    for hex_adv, kind in expected_types.items():
        proc = run("decode", hex_adv)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
        assert proc.stdout.count("\n") == 1
        got = json.loads(proc.stdout)
        assert got["type"] == kind
        assert got == decode(bytes.fromhex(hex_adv)).to_json()


def test_decode_prints_the_exact_ibeacon_contract() -> None:
    proc = run("decode", IBEACON_HEX.upper())
    assert json.loads(proc.stdout) == {
        "type": "ibeacon",
        "uuid": "e2c56db5-dffb-48d2-b060-d0f5a71096e0",
        "major": 1,
        "minor": 2,
        "tx_power": -59,
    }


def test_decode_accepts_spaces_between_bytes() -> None:
    spaced = " ".join(EID_HEX[i : i + 2] for i in range(0, len(EID_HEX), 2))
    assert json.loads(run("decode", spaced).stdout)["eid"] == "0011223344556677"


@pytest.mark.parametrize("arg", ["zz", "0", "020106", "0201", ""])
def test_decode_failures_are_one_line_and_exit_1(arg: str) -> None:
    assert_one_line_error(run("decode", arg), 1)


def test_eid_prints_the_regression_values() -> None:
    for t, expected in [(0, "df8e76bbfec4efc5"), (1024, "f7a6081d867e3474")]:
        proc = run("eid", "--identity-key", IK_HEX, "--exponent", "10", "--time", str(t))
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, expected + "\n", "")


@pytest.mark.parametrize(
    "args",
    [
        ["--identity-key", "00", "--exponent", "10", "--time", "0"],
        ["--identity-key", "xy" * 16, "--exponent", "10", "--time", "0"],
        ["--identity-key", IK_HEX, "--exponent", "16", "--time", "0"],
        ["--identity-key", IK_HEX, "--exponent", "ten", "--time", "0"],
        ["--identity-key", IK_HEX, "--exponent", "10", "--time", str(2**32)],
        ["--identity-key", IK_HEX, "--exponent", "10"],
    ],
)
def test_eid_bad_arguments_are_one_line_and_exit_2(args: list[str]) -> None:
    assert_one_line_error(run("eid", *args), 2)


def test_no_or_unknown_subcommand_is_one_line() -> None:
    assert_one_line_error(run(), 2)
    assert_one_line_error(run("frobnicate"), 2)


def _write_doc(tmp_path: Path, **overrides: object) -> Path:
    doc = {
        "version": 1,
        "identity_key": IK_HEX,
        "exponent": 10,
        "time_base": 1_700_000_000,
        "resolver_id": "cm-test",
        "emitter_id": "em-1",
        "issued_at": 1_700_000_000,
    }
    doc.update(overrides)
    path = tmp_path / "emitter.json"
    path.write_text(json.dumps(doc))
    return path


def test_emit_prints_one_json_line_per_period(tmp_path: Path) -> None:
    path = _write_doc(tmp_path)
    proc = run("emit", "--provisioning", str(path), "--count", "3", "--start", "1023")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["t"] for x in lines] == [0, 1024, 2048]
    assert [x["eid"] for x in lines[:2]] == ["df8e76bbfec4efc5", "f7a6081d867e3474"]
    for x in lines:
        assert x["unix_time"] == 1_700_000_000 + x["t"]
        frame = decode(bytes.fromhex(x["adv"]))
        assert isinstance(frame, EddystoneEID)
        assert frame.eid.hex() == x["eid"]


def test_emit_defaults_to_now(tmp_path: Path) -> None:
    path = _write_doc(tmp_path, exponent=15)  # 9-hour periods: "now" cannot straddle two
    before = int(time.time()) - 1_700_000_000
    proc = run("emit", "--provisioning", str(path), "--tx-power", "-7")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(lines) == 4
    first = lines[0]["t"]
    assert first <= before + 60 and before - first < 2**15 + 60
    assert lines[0]["eid"] == compute_eid(bytes.fromhex(IK_HEX), 15, first).hex()
    assert decode(bytes.fromhex(lines[0]["adv"])).tx_power == -7


def test_emit_errors_are_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run("emit", "--provisioning", str(tmp_path / "missing.json")), 1)
    bad = _write_doc(tmp_path, exponent=99)
    proc = run("emit", "--provisioning", str(bad))
    assert_one_line_error(proc, 1)
    assert "exponent" in proc.stderr
    (tmp_path / "junk.json").write_text("{not json")
    assert_one_line_error(run("emit", "--provisioning", str(tmp_path / "junk.json")), 1)
    future = _write_doc(tmp_path, time_base=2**40)
    assert_one_line_error(run("emit", "--provisioning", str(future)), 1)
    assert_one_line_error(run("emit", "--provisioning", str(future), "--count", "0"), 2)


def test_run_without_an_importable_daemon_is_one_line() -> None:
    # None in sys.modules makes `import beacons.daemon` fail as if the module were absent
    code = (
        "import sys; sys.modules['beacons.daemon'] = None; "
        "from beacons.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = run("run", "--config", "scanner.toml", code=code)
    assert_one_line_error(proc, 1)
    assert "daemon" in proc.stderr


def test_run_hands_the_config_path_to_the_daemon(tmp_path: Path) -> None:
    proc = run("run", "--config", str(tmp_path / "absent.toml"))
    assert proc.returncode != 0
    assert "absent.toml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_emit_stops_quietly_when_the_reader_goes_away(tmp_path: Path) -> None:
    path = _write_doc(tmp_path, exponent=0)
    cmd = [sys.executable, "-m", "beacons", "emit", "--provisioning", str(path)]
    cmd += ["--count", "1000000", "--start", "0"]
    with subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = json.loads(proc.stdout.readline())
        proc.stdout.close()  # like `| head -1`: periods are produced lazily, so it is still running
        err = proc.stderr.read()
        rc = proc.wait(timeout=60)
    assert first["t"] == 0
    assert (rc, err) == (0, "")
