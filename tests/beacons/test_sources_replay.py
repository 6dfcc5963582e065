"""Replay captures: the file format, record -> replay round trip, pacing and bad lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beacons.simulator import demo_world
from beacons.sources import Advert
from beacons.sources.replay import Recorder, ReplaySource, format_line, parse_line
from beacons.sources.simulated import SimulatedSource


def test_a_line_has_exactly_ts_rssi_and_data_hex_and_never_the_address() -> None:
    line = format_line(Advert(12.5, -70, "aa:bb:cc:dd:ee:ff", b"\x02\x01\x06"))
    assert json.loads(line) == {"ts": 12.5, "rssi": -70, "data_hex": "020106"}
    assert parse_line(line) == Advert(12.5, -70, "", b"\x02\x01\x06")
    for bad in ("{}", "[]", "nope", '{"ts": 1, "rssi": -1, "data_hex": "zz"}',
                '{"ts": NaN, "rssi": -1, "data_hex": ""}'):  # fmt: skip
        with pytest.raises(ValueError):
            parse_line(bad)


def test_record_then_replay_gives_back_the_same_adverts(tmp_path: Path) -> None:
    world = demo_world(1_000_000.0, emitters=3, seed=5)
    sim = SimulatedSource(world, "salon", 5.0, 4.0, seed=5, t0=1_000_000.0)
    heard = sim.adverts_until(1_000_030.0)
    assert len(heard) > 30
    capture = tmp_path / "cap.jsonl"
    rec = Recorder(capture)
    for a in heard:
        rec.write(a)
    rec.close()
    assert "address" not in capture.read_text() and heard[0].address not in capture.read_text()
    replay = ReplaySource(capture, speed=0, rebase=False)
    out: list[Advert] = []
    while not replay.exhausted:
        out += replay.read(0.1)
    replay.close()
    assert out == [Advert(a.ts, a.rssi, "", a.data) for a in heard]


def test_replay_paces_by_the_recorded_gaps_and_restamps_with_replay_time(tmp_path: Path) -> None:
    capture = tmp_path / "cap.jsonl"
    capture.write_text(
        "\n".join(
            [
                '{"ts": 100.0, "rssi": -60, "data_hex": "00"}',
                "garbage",
                '{"ts": 102.0, "rssi": -61, "data_hex": "01"}',
                "",
                '{"ts": 110.0, "rssi": -62, "data_hex": "02"}',
            ]
        )
    )
    now = [5000.0]
    replay = ReplaySource(capture, speed=2.0, clock=lambda: now[0])
    assert [a.ts for a in replay.read(0)] == [5000.0]
    assert replay.read(0) == []  # the next record is 2 s later in the capture, 1 s at speed 2
    now[0] += 1.0
    assert [(a.ts, a.data) for a in replay.read(0)] == [(5001.0, b"\x01")]
    assert replay.bad_lines == 1
    now[0] += 4.0
    assert [a.rssi for a in replay.read(0)] == [-62] and replay.exhausted
    assert replay.read(0) == []
    replay.close()


MAC = "c4:7c:8d:6a:11:22"


@pytest.mark.parametrize(
    ("record", "why"),
    [
        ({"ts": 1.7e9, "rssi": MAC, "data_hex": "0201"}, "numbers"),
        ({"ts": 1.7e9, "rssi": True, "data_hex": "0201"}, "numbers"),
        ({"ts": 1.7e9, "rssi": 1e308, "data_hex": "0201"}, "rssi outside"),
        ({"ts": 1.7e9, "rssi": -131, "data_hex": "0201"}, "rssi outside"),
        ({"ts": 1.7e12, "rssi": -60, "data_hex": "0201"}, "ts must be seconds"),
        ({"ts": MAC, "rssi": -60, "data_hex": MAC}, "not a capture record"),
        ({"ts": 10**400, "rssi": -60, "data_hex": "0201"}, "numbers"),  # no float holds it
        ({"ts": 1.7e9, "rssi": -(10**400), "data_hex": "0201"}, "numbers"),
    ],
)
def test_a_bad_record_is_refused_without_repeating_its_values(record: dict, why: str) -> None:
    # The message is logged: a stray field may hold a BLE address, which never leaves the
    # scanner; an RSSI the server refuses would cost the whole batch it travels in.
    with pytest.raises(ValueError) as err:
        parse_line(json.dumps(record))
    assert why in str(err.value) and MAC not in str(err.value) and "1e+308" not in str(err.value)


def test_undecodable_bytes_spoil_their_line_only(tmp_path: Path) -> None:
    path = tmp_path / "capture.jsonl"
    good = [format_line(Advert(1.7e9 + i, -60, "", bytes([2, 1, i]))) for i in range(3)]
    path.write_bytes(
        (good[0] + "\n").encode() + b'{"ts": 1.7e9, "rssi": -60, "data_hex": "\xff"}\n'
        + "\n".join(good[1:]).encode() + b"\n"
    )  # fmt: skip
    src = ReplaySource(path, speed=0, rebase=False)
    got = src.read(0.1)
    src.close()
    assert [a.data for a in got] == [bytes([2, 1, i]) for i in range(3)] and src.bad_lines == 1
