"""The bluepy source with bluepy really imported and running; only the adapter is faked.

The seam is `bluepy.btle.helperExe`: the path of the `bluepy-helper` executable that bluepy runs
and that alone talks to the kernel's HCI socket. The tests point it at a small script that speaks
the helper's line protocol (mgmt replies, `rsp=$scan` reports with addr/type/rssi/flag/d fields,
as bluepy-helper.c prints them), so bluepy's own Scanner, response parser, ScanEntry and delegate
code paths all run for real.
"""

from __future__ import annotations

import json
import logging
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
from bluepy import btle

from beacons.daemon import ScannerDaemon
from beacons.edge import EdgeFilter
from beacons.eid import compute_eid
from beacons.frames import EddystoneEID, encode
from beacons.sources.bluepy_source import BluepySource, iface_index, scrub
from store_server.ingest import parse_batch
from tests.beacons.test_uplink_server import SECRET, IngestServer

# Reports are paced like a radio's (20 ms apart): bluepy polls the pipe's file descriptor, so lines
# that arrive together sit in its text buffer until the next one comes, as with the real helper.
HELPER = r"""#!{python}
import json, sys, time
reports = json.loads({reports!r})
log = open({log!r}, "a")

def reply(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

for cmd in sys.stdin:
    cmd = cmd.strip()
    log.write(cmd + "\n")
    log.flush()
    if cmd == "quit":
        break
    reply("rsp=$mgmt\x1ecode=$success")
    if cmd in ("pasv", "scan"):
        for r in reports:
            time.sleep(0.02)
            # as bluepy-helper.c sends a passive scan's RSSI byte: send_uint(tag_RSSI, 256-rssi)
            fields = ["rsp=$scan", "addr=b" + r["addr"].replace(":", "").upper(),
                      "type=h%d" % r.get("type", 2), "rssi=h%X" % (256 - (r["rssi"] & 0xFF)),
                      "flag=h0"]
            if r["data_hex"]:
                fields.append("d=b" + r["data_hex"].upper())
            reply("\x1e".join(fields))
"""

EXITS = "#!/bin/sh\nexit 1\n"  # what bluepy meets when the adapter or its permissions are missing


def _helper(tmp_path: Path, reports: list[dict], name: str = "fake-helper") -> tuple[str, Path]:
    log = tmp_path / f"{name}.log"
    script = tmp_path / name
    script.write_text(
        HELPER.format(python=sys.executable, reports=json.dumps(reports), log=str(log))
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), log


KEY = bytes(range(16))
EID_ADV = encode(EddystoneEID(compute_eid(KEY, 10, 1024), -18))
OTHER_ADV = bytes.fromhex("0201060303aafe0c16aafe10eb0367676c2f6d79")  # an Eddystone-URL
MAC = "c4:7c:8d:6a:11:22"


def test_passive_scan_yields_raw_adverts_through_bluepys_own_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = [
        {"addr": MAC, "rssi": -61, "data_hex": EID_ADV.hex()},
        {"addr": "de:ad:be:ef:00:01", "rssi": -80, "data_hex": OTHER_ADV.hex()},
        {"addr": MAC, "rssi": -63, "data_hex": EID_ADV.hex()},  # same device again: still heard
    ]
    exe, log = _helper(tmp_path, reports)
    monkeypatch.setattr(btle, "helperExe", exe)
    src = BluepySource("hci0")
    try:
        heard = []
        for _ in range(20):
            heard += src.read(0.5)
            if len(heard) >= 3:
                break
        assert src.adapter == "up"
        assert [(a.rssi, a.data, a.address) for a in heard] == [
            (-61, EID_ADV, MAC),
            (-80, OTHER_ADV, "de:ad:be:ef:00:01"),
            (-63, EID_ADV, MAC),
        ]
        assert src._scanner.scanned == {}  # bluepy's per-address table does not grow forever
    finally:
        src.close()
    commands = log.read_text().split()
    assert commands[:2] == ["le", "on"] and "pasv" in commands and "scan" not in commands
    assert "pasvend" in commands  # the scan is stopped, not left running in the controller
    kept = [EdgeFilter().sighting(a) for a in heard]
    assert kept[1] is None
    assert kept[0] is not None and MAC not in repr(kept[0]) and kept[0].rssi == -61


def test_a_missing_adapter_is_reported_down_then_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "no-adapter"
    broken.write_text(EXITS)
    broken.chmod(0o755)
    monkeypatch.setattr(btle, "helperExe", str(broken))
    now = [1000.0]
    src = BluepySource(0, monotonic=lambda: now[0])
    try:
        assert src.read(0.05) == []
        assert (src.adapter, src.failures) == ("down", 1)
        exe, _ = _helper(tmp_path, [{"addr": MAC, "rssi": -70, "data_hex": EID_ADV.hex()}])
        monkeypatch.setattr(btle, "helperExe", exe)
        assert src.read(0.05) == []  # still inside the restart pause: no retry storm
        now[0] += 10.0
        heard = []
        for _ in range(20):
            heard += src.read(0.5)
            if heard:
                break
        assert src.adapter == "up" and heard[0].data == EID_ADV
    finally:
        src.close()


def test_adapter_names() -> None:
    assert iface_index("hci1") == 1 and iface_index(0) == 0 and iface_index("2") == 2
    with pytest.raises(ValueError):
        iface_index("wlan0")


def test_an_address_type_change_keeps_scanning_and_logs_no_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reports = [
        {"addr": MAC, "rssi": -61, "data_hex": EID_ADV.hex(), "type": 2},
        {"addr": MAC, "rssi": -62, "data_hex": EID_ADV.hex(), "type": 1},  # bluepy raises here
        {"addr": MAC, "rssi": -63, "data_hex": EID_ADV.hex(), "type": 1},
    ]
    exe, _ = _helper(tmp_path, reports)
    monkeypatch.setattr(btle, "helperExe", exe)
    src = BluepySource(0)
    try:
        heard = []
        for _ in range(20):
            heard += src.read(0.5)
            if heard and heard[-1].rssi == -63:
                break
        assert (src.adapter, src.failures) == ("up", 0)
        # the report bluepy choked on is lost, the scan goes on with the next one
        assert [a.rssi for a in heard] == [-61, -63]
    finally:
        src.close()
    assert MAC not in caplog.text.lower() and MAC.replace(":", "") not in caplog.text.lower()


def test_scrub_removes_addresses_from_error_text() -> None:
    text = "Address type changed during scan, for address C4:7C:8D:6A:11:22"
    assert scrub(text) == "Address type changed during scan, for address <address>"


def test_an_address_cut_by_the_error_texts_limit_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    src = BluepySource(0)
    try:
        # "RuntimeError: " and 174 characters put the address across the 200-character limit.
        src._fail(RuntimeError("x" * 173 + " " + MAC))
    finally:
        src.close()
    assert "bluepy: adapter hci0 down" in caplog.text
    assert MAC[:8].lower() not in caplog.text.lower()


def test_a_zero_timeout_read_returns_at_once_on_a_quiet_radio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exe, _ = _helper(tmp_path, [])
    monkeypatch.setattr(btle, "helperExe", exe)
    src = BluepySource(0)
    try:
        reader = threading.Thread(target=lambda: [src.read(0) for _ in range(3)], daemon=True)
        reader.start()
        reader.join(10)
        assert not reader.is_alive() and src.adapter == "up"
    finally:
        src.close()


def _through_the_daemon(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reports: list[dict],
    batch_age_s: float,
    up: bool = False,
) -> tuple[IngestServer, ScannerDaemon]:
    """Run the daemon on bluepy's fake helper printing `reports` until the ingest server holds
    five sightings (and, if `up`, a heartbeat with the adapter up); returns both, stopped."""
    exe, _ = _helper(tmp_path, reports)
    monkeypatch.setattr(btle, "helperExe", exe)
    srv = IngestServer({"s1": SECRET}).start()
    daemon = ScannerDaemon(
        server_url=srv.url, scanner="s1", secret=SECRET, source=BluepySource("hci0"),
        queue_path=str(tmp_path / "q.sqlite"), batch_age_s=batch_age_s, heartbeat_s=0.2,
    )  # fmt: skip
    daemon.start()
    try:
        assert srv.wait_for(lambda: len(srv.sightings()) == 5)
        if up:
            assert srv.wait_for(lambda: any(h["adapter"] == "up" for h in srv.heartbeats))
    finally:
        daemon.stop()
        srv.stop()
    return srv, daemon


def test_from_the_adapter_to_the_server_through_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = [
        {"addr": MAC, "rssi": -60 - i, "data_hex": (EID_ADV if i % 2 else OTHER_ADV).hex()}
        for i in range(10)
    ]
    srv, daemon = _through_the_daemon(tmp_path, monkeypatch, reports, batch_age_s=0.1, up=True)
    got = sorted((s["kind"], s["id"], s["rssi"]) for s in srv.sightings())
    eid = compute_eid(KEY, 10, 1024).hex()
    assert got == sorted(("eid", eid, -60 - i) for i in range(1, 10, 2))
    assert daemon.stats()["frames_dropped"] == 5
    assert all(MAC.replace(":", "") not in b.decode().replace(":", "") for b in srv.bodies)


def test_non_negative_and_missing_rssi_never_cost_a_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A phone held against the scanner reads 0..+20 dBm, which bluepy turned into -256..-236;
    # a controller without a reading says 127, which bluepy turned into -129. The first made the
    # store server refuse the whole batch (400), and the daemon drop every sighting in it.
    reports = [
        {"addr": MAC, "rssi": -61, "data_hex": EID_ADV.hex()},
        {"addr": MAC, "rssi": 4, "data_hex": EID_ADV.hex()},
        {"addr": MAC, "rssi": 0, "data_hex": EID_ADV.hex()},
        {"addr": MAC, "rssi": 127, "data_hex": EID_ADV.hex()},  # RSSI not available
        {"addr": MAC, "rssi": -128, "data_hex": EID_ADV.hex()},
        {"addr": MAC, "rssi": -62, "data_hex": EID_ADV.hex()},
    ]
    srv, _daemon = _through_the_daemon(tmp_path, monkeypatch, reports, batch_age_s=1.0)
    assert sorted(s["rssi"] for s in srv.sightings()) == [-128, -62, -61, 0, 4]
    for body in srv.bodies:
        doc = json.loads(body)
        if "sightings" in doc:
            parse_batch(doc, 1000, time.time(), 60.0)  # what the store server checks
