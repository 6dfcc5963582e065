"""Durable on-disk queue of sighting batches (SQLite, WAL, fsync on every commit).

A batch is written once, with its batch id, and deleted only when the server has it (or has said it
can never accept it), so delivery is at-least-once across crashes, reboots and outages; the server
deduplicates by batch id. The queue is bounded in sightings: when full, the oldest batches go first
and the sightings lost are counted in `dropped`, which survives restarts. It is bounded in time
too: the sender drops batches older than the server accepts (protocol.SIGHTING_MAX_AGE_S).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    n INTEGER NOT NULL,
    sightings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class QueuedBatch:
    """One batch as stored: its sightings are kept as the JSON array text sent on the wire."""

    seq: int
    batch_id: str
    created: float
    n: int
    sightings_json: str

    def sightings(self) -> list[dict[str, Any]]:
        """The batch's sightings, parsed."""
        return json.loads(self.sightings_json)


class SightingQueue:
    """Oldest-first queue of batches in one SQLite file, safe to share between threads."""

    def __init__(self, path: str | Path, max_sightings: int = 1_000_000) -> None:
        """Open (or create) the queue file; `max_sightings` bounds what it holds."""
        if max_sightings < 1:
            raise ValueError("max_sightings must be positive")
        self.path = str(path)
        self.max_sightings = max_sightings
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # WAL keeps the sender's reads from blocking the batcher's writes; FULL fsyncs the WAL on
        # every commit, so a power cut cannot lose a batch the daemon believes is queued.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # Rotating identifiers are pseudonymous personal data: once delivered they must not linger
        # in free pages; deleted rows are zeroed, and the WAL is emptied whenever the queue is.
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT COALESCE(SUM(n), 0), COUNT(*) FROM batches").fetchone()
        self._depth, self._batches = int(row[0]), int(row[1])
        self._dropped = self._counter("dropped")

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    @property
    def depth(self) -> int:
        """Sightings currently queued."""
        return self._depth

    @property
    def batches(self) -> int:
        """Batches currently queued."""
        return self._batches

    @property
    def dropped(self) -> int:
        """Sightings ever dropped because the queue was full or they were too old for the server
        to accept (persisted)."""
        return self._dropped

    def put(self, batch_id: str, created: float, sightings: list[dict[str, Any]]) -> int:
        """Durably queue one batch, dropping oldest batches to make room; returns sightings lost."""
        n = len(sightings)
        if n == 0:
            return 0
        if n > self.max_sightings:
            raise ValueError("batch larger than the whole queue")
        text = json.dumps(sightings, separators=(",", ":"))
        with self._lock:
            lost = 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                while self._depth - lost + n > self.max_sightings:
                    seq, m = self._db.execute(
                        "SELECT seq, n FROM batches ORDER BY seq LIMIT 1"
                    ).fetchone()
                    self._db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
                    lost += m
                    self._batches -= 1
                self._db.execute(
                    "INSERT INTO batches (batch_id, created, n, sightings) VALUES (?, ?, ?, ?)",
                    (batch_id, created, n, text),
                )
                if lost:
                    self._count_dropped(lost)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._depth += n - lost
            self._batches += 1
            self._dropped += lost
            return lost

    def _count_dropped(self, lost: int) -> None:
        # Inside the caller's transaction, so the count and the deletion commit together.
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (lost,),
        )

    def drop_older(self, before: float) -> int:
        """Drop the batches created before `before` (counted in `dropped`, as those a full queue
        drops); returns the sightings dropped. Oldest first, stopping at the first younger one:
        batches are queued in the order they are made."""
        oldest = "SELECT seq, n, created FROM batches ORDER BY seq LIMIT 1"
        with self._lock:
            row = self._db.execute(oldest).fetchone()
            if row is None or row[2] >= before:
                return 0  # the sender asks before every batch: no write transaction for that
            lost = gone = 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                while True:
                    row = self._db.execute(oldest).fetchone()
                    if row is None or row[2] >= before:
                        break
                    self._db.execute("DELETE FROM batches WHERE seq = ?", (row[0],))
                    lost, gone = lost + row[1], gone + 1
                if lost:
                    self._count_dropped(lost)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._depth -= lost
            self._batches -= gone
            self._dropped += lost
            if gone and self._batches == 0:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return lost

    def oldest(self) -> QueuedBatch | None:
        """The oldest queued batch, left in place until `delete`."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq, batch_id, created, n, sightings FROM batches ORDER BY seq LIMIT 1"
            ).fetchone()
        return QueuedBatch(*row) if row else None

    def delete(self, seq: int) -> bool:
        """Remove a batch once the server has it; False if it was already gone (dropped)."""
        with self._lock:
            row = self._db.execute("SELECT n FROM batches WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                return False
            self._db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
            self._depth -= int(row[0])
            self._batches -= 1
            if self._batches == 0:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return True

    def all(self) -> list[QueuedBatch]:
        """Every queued batch, oldest first (for inspection and tests)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, batch_id, created, n, sightings FROM batches ORDER BY seq"
            ).fetchall()
        return [QueuedBatch(*r) for r in rows]

    def close(self) -> None:
        """Close the file (the WAL is checkpointed by SQLite)."""
        with self._lock:
            self._db.close()
