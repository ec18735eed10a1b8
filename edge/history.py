"""Bounded on-disk history of results the broker acknowledged, for the `replay` request.

Why a second SQLite file next to the outbox instead of keeping acknowledged rows there: the
outbox's bounds and its "pending" count mean "not yet delivered"; mixing delivered rows in
would change what the outbox limits protect. The history stores the exact bytes that were
published (the finalised payload, latency included), so a replay is byte-identical to the
first copy and carries the same `id`.

Bounds: `max_rows` and `max_age_s` (of the acknowledgement time), enforced on every insert
batch (rows) and by `prune()` (age). Writes use synchronous=NORMAL: losing the last few
history rows in a power cut costs only replay coverage, never a result (the outbox already
holds results until acknowledged).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edge.errors import OutboxError, UsageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    payload BLOB NOT NULL,
    acked_at REAL NOT NULL  -- unix time, s
);
"""


@dataclass(frozen=True)
class HistoryLimits:
    max_rows: int = 500_000  # ~6 days at 1 spectrum/s
    max_age_s: float = 7 * 24 * 3600.0

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_age_s <= 0:
            raise UsageError(f"history limits must be positive: {self}")


@dataclass(frozen=True)
class HistoryRow:
    seq: int
    id: str
    payload: bytes


@dataclass(frozen=True)
class HistoryRange:
    rows: int
    first_seq: int | None
    last_seq: int | None


def history_path_for(outbox_path: Path) -> Path:
    """The history file lives beside the outbox: `<outbox stem>.history.sqlite`."""
    p = Path(outbox_path)
    return p.with_name(p.stem + ".history.sqlite")


class History:
    def __init__(self, path: Path, *, limits: HistoryLimits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or HistoryLimits()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as err:
            raise OutboxError(f"cannot open history {self.path}: {err}", path=str(self.path)) from None

    def add(self, rows: Iterable[tuple[int, str, bytes]], *, now_s: float | None = None) -> int:
        """Record acknowledged results (seq, id, published bytes); returns rows dropped by the bounds."""
        now = time.time() if now_s is None else now_s
        batch = [(s, i, bytes(p), now) for s, i, p in rows]
        if not batch:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN")
                # OR IGNORE: a result acknowledged twice (re-sent after a reconnect) keeps its
                # first published bytes.
                self._db.executemany("INSERT OR IGNORE INTO history VALUES (?, ?, ?, ?)", batch)
                n = self._db.execute("SELECT COUNT(*) FROM history").fetchone()[0]
                dropped = 0
                if n > self.limits.max_rows:
                    dropped = n - self.limits.max_rows
                    self._db.execute(
                        "DELETE FROM history WHERE seq IN (SELECT seq FROM history ORDER BY seq LIMIT ?)", (dropped,)
                    )
                self._db.execute("COMMIT")
                return dropped
            except sqlite3.Error as err:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise OutboxError(f"history write failed: {err}", path=str(self.path)) from None

    def prune(self, *, now_s: float | None = None) -> int:
        now = time.time() if now_s is None else now_s
        with self._lock:
            try:
                cur = self._db.execute("DELETE FROM history WHERE acked_at < ?", (now - self.limits.max_age_s,))
                return cur.rowcount
            except sqlite3.Error as err:
                raise OutboxError(f"history prune failed: {err}", path=str(self.path)) from None

    def rows(self, since_seq: int, until_seq: int | None = None, *, limit: int = 1000) -> list[HistoryRow]:
        """Rows with since_seq <= seq <= until_seq, in seq order, at most `limit`."""
        hi = until_seq if until_seq is not None else 2**62
        with self._lock:
            cur = self._db.execute(
                "SELECT seq, id, payload FROM history WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?",
                (since_seq, hi, limit),
            )
            return [HistoryRow(s, i, bytes(p)) for s, i, p in cur.fetchall()]

    def held(self) -> HistoryRange:
        with self._lock:
            try:
                n, lo, hi = self._db.execute("SELECT COUNT(*), MIN(seq), MAX(seq) FROM history").fetchone()
            except sqlite3.ProgrammingError:  # closed at shutdown while a scrape or status still asks
                return HistoryRange(rows=0, first_seq=None, last_seq=None)
        return HistoryRange(rows=n, first_seq=lo, last_seq=hi)

    def close(self) -> None:
        with self._lock:
            self._db.close()
