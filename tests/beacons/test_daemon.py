"""The daemon end to end: capture -> edge filter -> durable queue -> real HTTP ingest server."""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from bluepy import btle

from beacons.config import ConfigError, load_config, parse_config
from beacons.daemon import Batcher, ScannerDaemon, daemon_from_config
from beacons.edge import EdgeFilter
from beacons.eid import compute_eid
from beacons.frames import EddystoneEID, EddystoneURL, ExposureNotification, IBeacon, encode
from beacons.queue import SightingQueue
from beacons.simulator import Leg, SimEmitter, World, demo_world
from beacons.sources import Advert
from beacons.sources.replay import Recorder, ReplaySource, parse_line
from beacons.sources.simulated import SimulatedSource
from store_server.scanner_health import SILENT_AFTER_S
from tests.beacons.test_sources_bluepy import _helper
from tests.beacons.test_uplink_server import SECRET, IngestServer
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
LISTED = uuid.UUID("f7826da6-4fa2-4e98-8024-bc5b71e0893e").bytes


def _capture(path: Path, rounds: int) -> Counter:
    """A capture mixing programme frames with everything else; returns what must arrive."""
    rec = Recorder(path)
    expected: Counter = Counter()
    ts = 1_700_000_000.0
    for r in range(rounds):
        eid = compute_eid(bytes([r % 7] * 16), 10, 1024 * r)
        adverts = [
            (encode(EddystoneEID(eid, -18)), ("eid", eid.hex())),
            (encode(IBeacon(LISTED, r, 7, -59)), ("ibeacon", f"{LISTED.hex()}{r:04x}0007")),
            (encode(IBeacon(bytes(16), 1, 2, -59)), None),
            (encode(EddystoneURL("https://example.com", -20)), None),
            (encode(ExposureNotification(bytes([r % 256]) * 16, bytes(4))), None),
            (b"\x02\x01\x06\x05\xff\x4c\x00\x10\x05", None),
        ]  # fmt: skip
        for data, want in adverts:
            ts += 0.01
            rssi = -50 - r % 40
            rec.write(Advert(ts, rssi, "", data))
            if want:
                expected[(*want, rssi)] += 1
    rec.close()
    return expected


def _toml(tmp: Path, url: str, source: str, **uplink: object) -> Path:
    ups = "\n".join(f"{k} = {v!r}" for k, v in uplink.items())
    cfg = tmp / "scanner.toml"
    cfg.write_text(
        f"""
[server]
url = "{url}"
timeout_s = 2
[scanner]
name = "s1"
secret = "{SECRET}"
[source]
{source}
[uplink]
queue_path = "queue.sqlite"
heartbeat_s = 0.2
backoff_cap_s = 0.2
{ups}
[filter]
ibeacon_uuids = ["{uuid.UUID(bytes=LISTED)}"]
"""
    )
    return cfg


def test_only_programme_sightings_arrive_exactly_once(tmp_path: Path) -> None:
    expected = _capture(tmp_path / "cap.jsonl", 300)
    srv = IngestServer({"s1": SECRET}).start()
    cfg = load_config(
        _toml(tmp_path, srv.url, 'kind = "replay"\nfile = "cap.jsonl"\nspeed = 0', batch_max=64)
    )
    daemon = daemon_from_config(cfg)
    daemon.start()
    try:
        assert srv.wait_for(lambda: len(srv.sightings()) >= 600 and len(srv.heartbeats) >= 2)
        assert srv.wait_for(daemon.drained)
    finally:
        daemon.stop()
        srv.stop()
    got = Counter((s["kind"], s["id"], s["rssi"]) for s in srv.sightings())
    assert got == expected
    assert all(len(b) <= 64 for b in srv.batches.values())
    stats = daemon.stats()
    assert stats["frames_heard"] == 1800
    assert (stats["frames_forwarded"], stats["frames_dropped"]) == (600, 1200)
    assert stats["batches_sent"] == len(srv.batches) and stats["queue_depth"] == 0
    beat = srv.heartbeats[-1]
    assert set(beat) == {
        "uptime_s", "queue_depth", "queue_dropped", "adapter", "frames_heard", "frames_forwarded",
        "frames_dropped", "batches_sent", "batches_rejected", "version", "through",
    }  # fmt: skip
    assert beat["adapter"] == "replay"


def test_batches_close_on_age_when_traffic_is_thin(tmp_path: Path) -> None:
    world = World([SimEmitter(bytes(16), 10, [Leg(0, 1e9, "salon", 5.0, 4.0)])], time.time())
    srv = IngestServer({"s1": SECRET}).start()
    sim = SimulatedSource(world, "salon", 5.0, 4.0, sigma_db=0.0, interval_s=(0.1, 0.1))
    daemon = ScannerDaemon(
        server_url=srv.url, scanner="s1", secret=SECRET, source=sim,
        queue_path=str(tmp_path / "q.sqlite"), batch_max=1000, batch_age_s=0.3, heartbeat_s=60,
    )  # fmt: skip
    daemon.start()
    try:
        assert srv.wait_for(lambda: len(srv.batches) >= 3)
    finally:
        daemon.stop()
        srv.stop()
    for batch in list(srv.batches.values())[:3]:
        span = batch[-1]["ts"] - batch[0]["ts"]
        # Closed by age, not size: a batch that never closed on age would span the whole run.
        # The bound leaves the daemon's threads a scheduling delay on a loaded 2-core machine
        # (one CI run saw 0.42 s against 0.35).
        assert 0 < len(batch) < 1000 and span <= 2 * 0.3


class _BatchesRefused(IngestServer):
    """Heartbeats go through while batches are refused (a server busy, a proxy dropping large
    posts): what each heartbeat says it delivered is checked against what the server has."""

    def __init__(self) -> None:
        super().__init__({"s1": SECRET})
        self.refusing = True
        self.seen_at_beat: list[list[float]] = []  # the sightings' ts at each heartbeat

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Any:
        with self.cond:
            if path == "/api/v1/sightings" and self.refusing:
                self.posts += 1
                self.cond.notify_all()
                return 503, {"error": "busy"}, {}
            if path == "/api/v1/heartbeat":
                self.seen_at_beat.append([s["ts"] for s in self.sightings()])
            return super().handle(path, headers, body)


def test_a_heartbeat_never_says_through_a_frame_the_server_does_not_have(tmp_path: Path) -> None:
    world = World([SimEmitter(bytes(16), 10, [Leg(0, 1e9, "salon", 5.0, 4.0)])], time.time())
    srv = _BatchesRefused().start()
    sim = SimulatedSource(world, "salon", 5.0, 4.0, sigma_db=0.0, interval_s=(0.1, 0.1))
    daemon = ScannerDaemon(
        server_url=srv.url, scanner="s1", secret=SECRET, source=sim, backoff_cap_s=0.2,
        queue_path=str(tmp_path / "q.sqlite"), batch_age_s=0.3, heartbeat_s=0.2,
    )  # fmt: skip
    daemon.start()
    try:
        # Batches queue up unsent while the heartbeats keep coming.
        assert srv.wait_for(lambda: len(srv.heartbeats) >= 4 and daemon.queue.batches >= 3)
        first = min(s["ts"] for s in daemon.queue.all()[0].sightings())
        stuck = [b["through"] for b in srv.heartbeats if "through" in b]
        assert stuck and max(stuck) < first
        srv.refusing = False
        # Delivered: the word moves on, past frames heard after the refusals ended.
        resumed = time.time()
        assert srv.wait_for(
            lambda: any(b.get("through", 0) > resumed for b in srv.heartbeats), timeout=20
        )
    finally:
        daemon.stop()
        srv.stop()
    heard = sorted(s["ts"] for s in srv.sightings())
    for beat, seen in zip(srv.heartbeats, srv.seen_at_beat, strict=True):
        if "through" in beat:
            before = [t for t in heard if t < beat["through"]]
            assert sorted(t for t in seen if t < beat["through"]) == before


def test_a_restarted_daemon_says_through_from_its_first_heartbeat(tmp_path: Path) -> None:
    # What the last run queued and could not deliver, 20 s ago.
    queue = SightingQueue(str(tmp_path / "q.sqlite"))
    queue.put("backlog-1", time.time() - 20, [{"ts": time.time() - 20.0, "id": "x"}])
    queue.close()
    srv = _BatchesRefused().start()
    daemon = ScannerDaemon(
        server_url=srv.url, scanner="s1", secret=SECRET, queue_path=str(tmp_path / "q.sqlite"),
        source=SimulatedSource(World([], time.time()), "salon", 0.0, 0.0), heartbeat_s=0.2,
    )  # fmt: skip
    daemon.start()
    try:
        assert srv.wait_for(lambda: len(srv.heartbeats) >= 2)
    finally:
        daemon.stop()
        srv.stop()
    # Every report holds the hold: one without `through` would lift it while the backlog waits.
    assert all(b.get("through", 1e12) < time.time() - 20 for b in srv.heartbeats)


def test_a_capture_stamped_in_relative_time_says_through_zero(tmp_path: Path) -> None:
    daemon = ScannerDaemon(
        server_url="http://127.0.0.1:9", scanner="s1", secret=SECRET,
        queue_path=str(tmp_path / "q.sqlite"),
        source=SimulatedSource(World([], time.time()), "salon", 0.0, 0.0),
    )  # fmt: skip
    try:
        daemon.queue.put("relative-1", 3.0, [{"ts": -2.5, "id": "x"}])
        # Not a time the store server would refuse, with the rest of the heartbeat.
        assert daemon.heartbeat_body()["through"] == 0.0
    finally:
        daemon.stop()


def test_a_scanner_that_heard_someone_lately_heartbeats_once_a_second(
    tmp_path: Path,
) -> None:
    daemon = ScannerDaemon(
        server_url="http://127.0.0.1:9", scanner="s1", secret=SECRET,
        source=SimulatedSource(World([], time.time()), "salon", 0.0, 0.0),
        queue_path=str(tmp_path / "q.sqlite"), batch_age_s=0.3, heartbeat_s=10.0,
        ibeacon_uuids=frozenset({LISTED}),
    )  # fmt: skip
    try:
        now = time.monotonic()
        assert daemon.heartbeat_due_s(now, now) == pytest.approx(10.0)
        frame = encode(IBeacon(LISTED, 1, 2, -59))
        daemon.handle([Advert(time.time(), -60, "AA:BB:CC:DD:EE:FF", frame)])
        now = time.monotonic()
        # Once a second, whatever the batch age.
        assert daemon.heartbeat_due_s(now, now) == pytest.approx(1.0)
        assert daemon.heartbeat_due_s(now + 2, now) == 0.0
        # A batch delivered meanwhile said `through` as well: the keepalive counts from it.
        daemon.uplink.delivered_at = now + 0.6
        assert daemon.heartbeat_due_s(now + 1.0, now) == pytest.approx(0.6)
        daemon.uplink.delivered_at = float("-inf")
        # Two minutes after the last frame forwarded, back to heartbeat_s.
        assert daemon.heartbeat_due_s(now + 119, now + 118.5) == pytest.approx(0.5)
        assert daemon.heartbeat_due_s(now + 121, now + 120.5) == pytest.approx(9.5)
    finally:
        daemon.stop()


def test_no_ble_address_reaches_the_queue_the_capture_or_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world = demo_world(1_700_000_000.0, emitters=6, seed=9)
    sim = SimulatedSource(world, "salon", 5.0, 4.0, seed=9, t0=1_700_000_000.0)
    heard = sim.adverts_until(1_700_000_300.0)
    noise = [Advert(a.ts, -70, "11:22:33:44:55:66", encode(EddystoneURL("https://x.fr", -20)))
             for a in heard[:50]]  # fmt: skip
    macs = {a.address for a in heard + noise}
    assert len(macs) == 7
    queue_path = tmp_path / "q.sqlite"
    daemon = ScannerDaemon(
        server_url="http://127.0.0.1:9", scanner="s1", secret=SECRET, source=sim,
        queue_path=str(queue_path), batch_max=50, record_file=str(tmp_path / "rec.jsonl"),
    )  # fmt: skip
    daemon.handle(heard + noise)
    daemon.stop()
    assert daemon.frames_forwarded == len(heard) > 500 and daemon.frames_dropped == 50
    blobs = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert len(blobs) > 10_000
    for mac in macs:
        for form in (mac, mac.replace(":", ""), mac.upper(), mac.replace(":", "").upper()):
            assert form.encode() not in blobs
            assert form not in caplog.text
        assert bytes.fromhex(mac.replace(":", "")) not in blobs
        assert bytes.fromhex(mac.replace(":", ""))[::-1] not in blobs


NAME = b"Carol's Pixel 7"
# What phones advertise beside a frame: a Complete Local Name, other service and manufacturer data.
AROUND = bytes([len(NAME) + 1, 0x09]) + NAME + bytes.fromhex("06162cfe00c4b9" + "05ff4c001005")


def test_record_mode_keeps_the_programme_frame_and_nothing_else_the_advert_carries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eid = EddystoneEID(bytes.fromhex("df8e76bbfec4efc5"), -18)
    beacon = IBeacon(LISTED, 7, 300, -59)
    eid_ad = "0d16aafe30ee" + "df8e76bbfec4efc5"  # the frames' own AD structures, from the specs
    beacon_ad = "1aff4c000215" + LISTED.hex() + "0007012c" + "c5"
    macs = ("c4:7c:8d:6a:11:22", "de:ad:be:ef:00:01")
    url = EddystoneURL("https://x.fr", -20)
    heard = [AROUND + encode(eid), encode(beacon) + AROUND, AROUND, encode(url) + AROUND]
    reports = [
        {"addr": macs[i % 2], "rssi": -50 - i, "data_hex": heard[i % 4].hex()} for i in range(12)
    ]
    exe, _ = _helper(tmp_path, reports)
    monkeypatch.setattr(btle, "helperExe", exe)  # only the adapter is faked
    srv = IngestServer({"s1": SECRET}).start()
    cfg = _toml(tmp_path, srv.url, 'kind = "bluepy"\nadapter = "hci0"', batch_age_s=0.05)
    cfg.write_text(cfg.read_text() + '[record]\nfile = "survey.jsonl"\n')
    daemon = daemon_from_config(load_config(cfg))
    daemon.start()
    try:
        assert srv.wait_for(lambda: len(srv.sightings()) == 6)
    finally:
        daemon.stop()
        srv.stop()
    capture = (tmp_path / "survey.jsonl").read_text(encoding="utf-8")
    lines = [json.loads(line) for line in capture.splitlines()]
    assert [line["data_hex"] for line in lines] == [eid_ad, beacon_ad] * 3
    assert all(set(line) == {"ts", "rssi", "data_hex"} for line in lines)
    for other in (NAME, NAME.hex().encode(), b"2cfe00c4b9", b"4c001005", b"020106", b"0303aafe"):
        assert other not in capture.encode()
    for mac in macs:
        assert mac not in capture and mac.replace(":", "") not in capture
    # what a capture holds is what the uplink sent, no more and no less
    edge = EdgeFilter(frozenset({LISTED}))
    again = [edge.sighting(parse_line(line)) for line in capture.splitlines()]
    recorded = Counter(tuple(sorted(s.to_json().items())) for s in again if s)
    assert recorded == Counter(tuple(sorted(s.items())) for s in srv.sightings())


RUN = "import sys; from beacons.daemon import main; sys.exit(main(sys.argv[1]))"


def _spawn(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUN, str(cfg)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_kill_9_mid_batch_loses_nothing_queued_and_a_restart_delivers_it(tmp_path: Path) -> None:
    _capture(tmp_path / "cap.jsonl", 3000)  # 6,000 programme sightings, read as fast as possible
    down = IngestServer({"s1": SECRET}).start()
    down.stop()  # a port where nobody listens: the server is out
    cfg = _toml(tmp_path, down.url, 'kind = "replay"\nfile = "cap.jsonl"\nspeed = 0', batch_max=40)
    proc = _spawn(cfg)
    assert proc.stderr is not None
    for line in proc.stderr:  # the first failed post: batches are queued and more are coming
        if "server unreachable" in line:
            break
    with sqlite3.connect(tmp_path / "queue.sqlite") as peek:
        seen = {r[0] for r in peek.execute("SELECT batch_id FROM batches")}
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed while running, not exited on its own
    assert seen
    with sqlite3.connect(tmp_path / "queue.sqlite") as after:
        rows = after.execute("SELECT batch_id, n, sightings FROM batches").fetchall()
    kept = {r[0] for r in rows}
    assert seen <= kept
    assert all(n == len(json.loads(text)) for _, n, text in rows)  # no torn batch
    srv = IngestServer({"s1": SECRET}, port=down.port).start()
    try:
        proc = _spawn(cfg)  # replays the capture again, and first drains what the crash left
        assert proc.wait(timeout=60) == 0
    finally:
        srv.stop()
    assert kept <= set(srv.batches)
    ids = [s["id"] for b in kept for s in srv.batches[b]]
    assert len(ids) == sum(len(srv.batches[b]) for b in kept) > 0


HEAD = "[server]\nurl = 'http://x'\n[scanner]\nname = 's'\n"
GOOD = HEAD + f"secret = '{SECRET}'\n"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("[server]\nurl = 'ftp://x'\n", "server.url"),
        ("[server\n", "not valid TOML"),
        ("[servr]\nurl = 'http://x'\n", "unknown section"),
        (HEAD + "secret = 'zz'\n", "hex"),
        (HEAD + "secret_env = 'CM_NOPE_X'\n", "CM_NOPE_X"),
        (GOOD + "[source]\nkind = 'radio'\n", "source.kind"),
        (GOOD + "[source]\nkind = 'replay'\nfile = 'nope.jsonl'\n", "not found"),
        (GOOD + "[source]\nkind = 'bluepy'\n[uplink]\nbatch_max = 0\n", "batch_max"),
        # Rarer than the store's silence window allows: its zone would go dark between two.
        (GOOD + "[source]\nkind = 'bluepy'\n[uplink]\nheartbeat_s = 60\n", "heartbeat_s"),
        (GOOD + "[source]\nkind = 'bluepy'\nadaptor = 'hci0'\n", "source.adaptor"),
        # Wrong types that were taken silently (or crashed later), and an impossible port.
        (GOOD + "[source]\nkind = 'bluepy'\n[uplink]\nqueue_path = 5\n", "queue_path"),
        (GOOD + "[source]\nkind = 'bluepy'\n[record]\nfile = 5\n", "record.file"),
        (GOOD + "[source]\nkind = 'simulator'\nemitters = 2.5\n", "emitters"),
        (GOOD + "[source]\nkind = 'simulator'\nvenue = 5\n", "source.venue"),
        (
            "[server]\nurl = 'http://127.0.0.1:99999'\n[scanner]\nname = 's'\n"
            f"secret = '{SECRET}'\n[source]\nkind = 'bluepy'\n",
            "port",
        ),
        # Taken before, after which every post failed (heartbeat failed, forever).
        (GOOD.replace("http://x", "http://a b c/") + "[source]\nkind = 'bluepy'\n", "server.url"),
        (GOOD.replace("http://x", "http://-x") + "[source]\nkind = 'bluepy'\n", "host name"),
        # A name goes into the signed request's headers and into log lines.
        (GOOD.replace("'s'", '"a\\nb"') + "[source]\nkind = 'bluepy'\n", "control char"),
        (GOOD.replace("'s'", '"a\\tb"') + "[source]\nkind = 'bluepy'\n", "scanner.name"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path: Path, body: str, needle: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    out = subprocess.run(
        [sys.executable, "-m", "beacons", "run", "--config", str(cfg)],
        capture_output=True, text=True, cwd=REPO, timeout=30,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in out.stderr


def test_a_heartbeat_rarer_than_the_store_s_silence_window_allows_is_refused() -> None:
    doc = tomllib.loads(GOOD + "[source]\nkind = 'bluepy'\n[uplink]\n")
    for period in (10.5, 60, 86400):
        doc["uplink"]["heartbeat_s"] = period
        with pytest.raises(ConfigError, match=r"heartbeat_s .* 35 s after its last heartbeat"):
            parse_config(doc, REPO)
    doc["uplink"]["heartbeat_s"] = 10
    assert parse_config(doc, REPO).heartbeat_s == 10
    # Three heartbeats inside the window: two may be lost before the store calls it silent.
    assert SILENT_AFTER_S >= 3 * 10


def test_the_example_config_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = (REPO / "beacons" / "scanner.example.toml").read_text()
    (tmp_path / "scanner.toml").write_text(example)
    (tmp_path / "scanner.secret").write_text(SECRET + "\n")
    cfg = load_config(tmp_path / "scanner.toml")
    assert cfg.source == {"kind": "bluepy", "adapter": 0}
    assert cfg.secret == SECRET and cfg.batch_max == 200 and cfg.ibeacon_uuids == frozenset()
    monkeypatch.setenv("CM_SCANNER_SECRET", SECRET.upper())
    (tmp_path / "scanner.toml").write_text(
        example.replace('secret_file = "scanner.secret"', 'secret_env = "CM_SCANNER_SECRET"')
    )
    assert load_config(tmp_path / "scanner.toml").secret == SECRET


def test_replay_source_reports_its_adapter_state(tmp_path: Path) -> None:
    _capture(tmp_path / "c.jsonl", 1)
    src = ReplaySource(tmp_path / "c.jsonl", speed=0)
    assert src.adapter == "replay" and len(src.read(0)) == 6 and src.exhausted
    src.close()


def test_sigterm_writes_the_open_batch_and_exits_0(tmp_path: Path) -> None:
    scenario = {
        "emitters": [
            {
                "identity_key": "11" * 16,
                "exponent": 10,
                "legs": [{"t0": 0, "t1": 1e9, "venue": "salon", "x": 5, "y": 4}],
            }
        ]
    }
    (tmp_path / "scenario.json").write_text(json.dumps(scenario))
    srv = IngestServer({"s1": SECRET}).start()
    source = 'kind = "simulator"\nscenario = "scenario.json"\nsigma_db = 0.0\nx = 5.0\ny = 4.0'
    cfg = _toml(tmp_path, srv.url, source, batch_max=1000, batch_age_s=3600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "beacons", "run", "--config", str(cfg)],
        stderr=subprocess.DEVNULL, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        # the open batch holds sightings (the heartbeat says so) but nothing was sent yet
        assert srv.wait_for(lambda: any(h["frames_forwarded"] > 0 for h in srv.heartbeats))
        heard = max(h["frames_forwarded"] for h in srv.heartbeats)
        assert not srv.batches
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        srv.stop()
    with sqlite3.connect(tmp_path / "queue.sqlite") as after:
        queued = after.execute("SELECT COUNT(*), COALESCE(SUM(n), 0) FROM batches").fetchone()
    # the open batch was written to the queue on SIGTERM (or even sent before the sender stopped)
    assert queued[0] + len(srv.batches) == 1
    assert queued[1] + len(srv.sightings()) >= heard > 0


def test_the_systemd_unit_runs_the_documented_command() -> None:
    unit = (REPO / "beacons" / "systemd" / "collective-mood-scanner.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith("-m beacons run --config /etc/collective-mood/scanner.toml")
    assert "RestartPreventExitStatus=2" in unit  # a bad config (exit 2) is not retried forever


def test_a_full_queue_drops_the_oldest_and_says_so_in_the_heartbeat(tmp_path: Path) -> None:
    world = World([SimEmitter(bytes(16), 10, [Leg(0, 1e9, "salon", 5.0, 4.0)])], 1_700_000_000.0)
    sim = SimulatedSource(world, "salon", 5.0, 4.0, t0=1_700_000_000.0, interval_s=(0.1, 0.1))
    heard = sim.adverts_until(1_700_000_020.0)[:100]  # none of them dropped by the edge
    srv = IngestServer({"s1": SECRET}).start()
    quiet = SimulatedSource(World([], time.time()), "salon", 0, 0)
    daemon = ScannerDaemon(
        server_url=srv.url, scanner="s1", secret=SECRET, source=quiet,
        queue_path=str(tmp_path / "q.sqlite"), batch_max=10, queue_max_sightings=30,
    )  # fmt: skip
    daemon.handle(heard)  # the sender is not running: as if the server were out
    assert len(heard) == 100
    assert (daemon.queue.depth, daemon.queue.dropped) == (30, 70)
    kept = [s["ts"] for b in daemon.queue.all() for s in b.sightings()]
    assert kept == [a.ts for a in heard[-30:]]  # the newest survive
    daemon.start()
    try:
        assert srv.wait_for(lambda: len(srv.batches) == 3 and srv.heartbeats)
    finally:
        daemon.stop()
        srv.stop()
    assert srv.heartbeats[0]["queue_dropped"] == 70


def test_an_unwritable_queue_exits_2_with_one_line(tmp_path: Path) -> None:
    cfg = _toml(tmp_path, "http://127.0.0.1:9", 'kind = "simulator"')
    cfg.write_text(cfg.read_text().replace('"queue.sqlite"', '"no/such/dir/queue.sqlite"'))
    out = subprocess.run(
        [sys.executable, "-m", "beacons", "run", "--config", str(cfg)],
        capture_output=True, text=True, cwd=REPO, timeout=30,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "cannot start scanner" in out.stderr


def test_batcher_closes_a_batch_on_size_or_on_age() -> None:
    b = Batcher(max_n=3, max_age_s=1.0)
    assert not b.due(0.0) and b.wait_s(0.0, 0.2) == 0.2
    assert not b.add({"i": 1}, 10.0) and not b.add({"i": 2}, 10.5)
    assert not b.due(10.9) and b.wait_s(10.9, 0.2) == pytest.approx(0.1)
    assert b.due(11.0) and b.wait_s(11.5, 0.2) == 0.0
    assert b.add({"i": 3}, 10.6)  # full
    assert [x["i"] for x in b.take()] == [1, 2, 3] and not b.items and not b.due(99.0)


def test_a_queue_that_cannot_grow_stops_the_daemon_with_one_line(tmp_path: Path) -> None:
    # A full disk once killed the reader thread only: the process lived on, hearing nothing,
    # and exited 0. Here the file size limit stands in for the full disk.
    _capture(tmp_path / "big.jsonl", 3000)
    cfg = _toml(
        tmp_path,
        f"http://127.0.0.1:{free_port()}",
        "kind = 'replay'\nfile = 'big.jsonl'\nspeed = 0",
    )

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    out = subprocess.run(
        [sys.executable, "-m", "beacons", "run", "--config", str(cfg)],
        capture_output=True, text=True, cwd=REPO, timeout=60, preexec_fn=small_files,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: cannot queue sightings")
    assert "Traceback" not in out.stderr
