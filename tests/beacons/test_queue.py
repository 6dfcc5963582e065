"""Durable queue: order, bounds with drop-oldest, persistence, and kill -9 mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from beacons.queue import SightingQueue

REPO = Path(__file__).resolve().parents[2]


def _items(n: int, tag: str = "x") -> list[dict]:
    return [
        {"ts": 1.0 + i, "kind": "eid", "id": f"{tag}{i}", "rssi": -60, "tx_power": -18}
        for i in range(n)
    ]


def test_batches_come_out_oldest_first_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    q = SightingQueue(path)
    for b in range(3):
        q.put(f"b{b}", 100.0 + b, _items(2, f"b{b}-"))
    assert (q.batches, q.depth) == (3, 6)
    first = q.oldest()
    assert first is not None and first.batch_id == "b0" and first.n == 2
    assert first.sightings()[1]["id"] == "b0-1"
    assert q.delete(first.seq) and not q.delete(first.seq)
    q.close()
    q = SightingQueue(path)
    assert [b.batch_id for b in q.all()] == ["b1", "b2"]
    assert (q.batches, q.depth) == (2, 4)
    q.close()


def test_full_queue_drops_oldest_batches_and_counts_them_persistently(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    q = SightingQueue(path, max_sightings=10)
    for b in range(4):
        assert q.put(f"b{b}", float(b), _items(3)) == 0 or b == 3
    # the fourth batch of 3 does not fit beside 9: the oldest batch goes, whole
    assert [b.batch_id for b in q.all()] == ["b1", "b2", "b3"]
    assert (q.depth, q.dropped) == (9, 3)
    assert q.put("b4", 4.0, _items(10)) == 9
    assert [b.batch_id for b in q.all()] == ["b4"]
    q.close()
    q = SightingQueue(path, max_sightings=10)
    assert q.dropped == 12  # the counter survives a restart, for the heartbeat
    with pytest.raises(ValueError):
        q.put("huge", 5.0, _items(11))
    assert q.put("empty", 5.0, []) == 0 and q.batches == 1
    q.close()


def test_the_queue_file_uses_wal_and_full_sync(tmp_path: Path) -> None:
    q = SightingQueue(tmp_path / "q.sqlite")
    assert q._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert q._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    q.close()


WRITER = """
import sys
from beacons.queue import SightingQueue
q = SightingQueue(sys.argv[1])
i = 0
while True:
    bid = f"batch{i:06d}"
    q.put(bid, float(i), [{"ts": float(i), "kind": "eid", "id": f"{i:016x}", "rssi": -60,
                           "tx_power": -18} for _ in range(50)])
    print(bid, flush=True)  # only after put() returned: the batch is on disk
    i += 1
"""


def test_kill_9_mid_write_loses_no_queued_batch(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    acknowledged = []
    assert proc.stdout is not None
    for line in proc.stdout:
        acknowledged.append(line.strip())
        if len(acknowledged) == 200:
            break
    os.kill(proc.pid, signal.SIGKILL)  # mid-write: the writer never pauses between batches
    proc.wait()
    acknowledged.extend(line.strip() for line in proc.stdout)
    q = SightingQueue(path)
    stored = [b.batch_id for b in q.all()]
    assert stored[: len(acknowledged)] == acknowledged
    assert q.depth == 50 * len(stored)  # no torn batch
    q.close()


def test_delivered_sightings_leave_no_trace_in_the_queue_files(tmp_path: Path) -> None:
    q = SightingQueue(tmp_path / "q.sqlite")
    ids = [f"{i:04x}c0ffee{i:06x}" for i in range(300)]
    for b in range(3):
        q.put(f"b{b}", 1.0, [{"ts": 1.0, "kind": "eid", "id": i, "rssi": -60, "tx_power": -18}
                             for i in ids[b * 100 : (b + 1) * 100]])  # fmt: skip
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert ids[0].encode() in on_disk
    while (batch := q.oldest()) is not None:
        q.delete(batch.seq)
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert not any(i.encode() in on_disk for i in ids)
    q.close()
