"""On-disk outbox: every result is committed here before any publish attempt.

Rationale (ordering and durability):

* A row is inserted, with its `seq` taken from a persisted counter in the same transaction,
  before the publisher ever sees it; it is deleted only after the broker's PUBACK for it.
  A crash at any point therefore leaves the result either unsent-and-stored or acknowledged.
* `seq` comes from `meta.next_seq`, not from MAX(seq), because acknowledged rows are deleted:
  the counter must keep increasing even when the table is empty.
* WAL + synchronous=FULL. NORMAL would survive a process crash but a power cut could roll
  back the last commits, so the counter could hand out a `seq` a consumer has already seen.
  At our rates (<= ~20 spectra/s) one fsync per result costs a few ms on SD/eMMC, which the
  pipeline dwarfs. Acks are deleted in batches so a drain does not pay one fsync per row.
* The message `id` is `<device_id>-<store>-<seq>`: `store` is a random id created with the
  database file, so a wiped/replaced outbox restarting at seq 1 can never collide with ids
  consumers have already de-duplicated.
* Bounds: after each insert the oldest rows are dropped while the table exceeds `max_rows`
  or `max_bytes`, and rows older than `max_age_s` are dropped. Every drop is added to the
  persisted `meta.dropped_total`, so the loss is visible in the stats forever, not silent.
* A full disk is reported as OutboxFullError and the insert is rolled back; we do not drop
  older results to make room, because which data to lose is the operator's decision.

One process owns an outbox file at a time; the connection is shared by the caller's thread
and the publisher thread under a lock.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edge.errors import OutboxError, OutboxFullError, UsageError
from edge.result import Result

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    payload TEXT NOT NULL,
    nbytes INTEGER NOT NULL,
    committed_at REAL NOT NULL  -- unix time, s
);
"""
_OUTBOX_FORMAT = "1"


@dataclass(frozen=True)
class OutboxLimits:
    max_rows: int = 100_000
    max_bytes: int = 256 * 1024 * 1024
    max_age_s: float = 7 * 24 * 3600.0

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_bytes < 1 or self.max_age_s <= 0:
            raise UsageError(f"outbox limits must be positive: {self}")


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    id: str
    payload: str
    committed_at: float  # unix time, s
    commit_ms: float | None  # duration of the commit; None for rows committed by another run


@dataclass(frozen=True)
class Committed:
    result: Result  # stamped with seq and id
    commit_ms: float
    dropped: int  # older rows dropped by this commit to stay within the limits


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    pending_bytes: int
    dropped_total: int
    next_seq: int


class Outbox:
    def __init__(
        self,
        path: Path | str,
        *,
        device_id: str,
        limits: OutboxLimits | None = None,
        max_db_pages: int | None = None,
    ) -> None:
        """Open (creating if needed) the outbox at `path`.

        `max_db_pages` caps the database file via SQLite's max_page_count: a hard quota that
        behaves exactly like a full disk (the tests use it to simulate one).
        """
        self.path = Path(path)
        self.device_id = device_id
        self.limits = limits or OutboxLimits()
        self._lock = threading.Lock()
        self._commit_ms: dict[int, float] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._db.execute("BEGIN IMMEDIATE")
            self._meta_default("format", _OUTBOX_FORMAT)
            self._meta_default("store_id", uuid.uuid4().hex[:12])
            self._meta_default("next_seq", "1")
            self._meta_default("dropped_total", "0")
            self._db.execute("COMMIT")
            fmt = self._meta("format")
            if fmt != _OUTBOX_FORMAT:
                raise OutboxError(
                    f"outbox {self.path} has format {fmt}, expected {_OUTBOX_FORMAT}",
                    path=str(self.path),
                )
            self._store_id = self._meta("store_id")
            rows, nbytes = self._db.execute("SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM outbox").fetchone()
            self._rows, self._bytes = int(rows), int(nbytes)
            if max_db_pages is not None:
                self._db.execute(f"PRAGMA max_page_count={int(max_db_pages)}")
        except sqlite3.Error as err:
            raise OutboxError(f"cannot open outbox {self.path}: {err}", path=str(self.path)) from None

    # -- writing ----------------------------------------------------------------------------

    def commit(self, result: Result, *, now_s: float | None = None) -> Committed:
        """Stamp `result` with the next seq and id and store it durably; prune to the limits.

        Raises OutboxFullError (nothing stored) when the disk or page cap is full.
        """
        now = time.time() if now_s is None else now_s
        with self._lock:
            t0 = time.perf_counter()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                seq = int(self._meta("next_seq"))
                stamped = result.stamped(seq=seq, id=f"{self.device_id}-{self._store_id}-{seq}")
                payload = stamped.to_json()
                nbytes = len(payload.encode())
                self._db.execute(
                    "INSERT INTO outbox (seq, id, payload, nbytes, committed_at) VALUES (?, ?, ?, ?, ?)",
                    (seq, stamped.id, payload, nbytes, now),
                )
                self._db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (str(seq + 1),))
                dropped, dropped_bytes = self._prune_locked(now, extra_rows=1, extra_bytes=nbytes)
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as err:
                self._rollback()
                if _is_full(err):
                    raise OutboxFullError(
                        f"outbox {self.path} is full ({err}); result not stored, it will not be published",
                        path=str(self.path),
                    ) from None
                raise OutboxError(f"outbox {self.path} write failed: {err}", path=str(self.path)) from None
            commit_ms = (time.perf_counter() - t0) * 1000.0
            self._rows += 1 - dropped
            self._bytes += nbytes - dropped_bytes
            # Kept in memory: writing it into the row would cost a second fsync per result.
            self._commit_ms[seq] = commit_ms
        return Committed(result=stamped, commit_ms=commit_ms, dropped=dropped)

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete acknowledged rows (unknown seqs are ignored: they may have been pruned)."""
        batch = sorted(set(seqs))
        if not batch:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                marks = ",".join("?" * len(batch))
                rows, nbytes = self._db.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM outbox WHERE seq IN ({marks})",
                    batch,
                ).fetchone()
                self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", batch)
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as err:
                self._rollback()
                cls = OutboxFullError if _is_full(err) else OutboxError
                raise cls(
                    f"outbox {self.path}: cannot delete acknowledged rows: {err}",
                    path=str(self.path),
                ) from None
            self._rows -= int(rows)
            self._bytes -= int(nbytes)
            for seq in batch:
                self._commit_ms.pop(seq, None)
            return int(rows)

    def prune_expired(self, *, now_s: float | None = None) -> int:
        """Drop rows older than max_age_s (also done on every commit); returns rows dropped."""
        now = time.time() if now_s is None else now_s
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                dropped, dropped_bytes = self._prune_locked(now, extra_rows=0, extra_bytes=0)
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as err:
                self._rollback()
                raise OutboxError(f"outbox {self.path}: prune failed: {err}", path=str(self.path)) from None
            self._rows -= dropped
            self._bytes -= dropped_bytes
            return dropped

    # -- reading ----------------------------------------------------------------------------

    def peek(self, *, after_seq: int = 0, limit: int = 100) -> list[OutboxRow]:
        """The oldest unacknowledged rows with seq > after_seq, in seq order."""
        with self._lock:
            cur = self._db.execute(
                "SELECT seq, id, payload, committed_at FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
            return [
                OutboxRow(seq, id_, payload, at, self._commit_ms.get(seq)) for seq, id_, payload, at in cur.fetchall()
            ]

    def pending(self) -> int:
        with self._lock:
            return self._rows

    def stats(self) -> OutboxStats:
        with self._lock:
            return OutboxStats(
                pending=self._rows,
                pending_bytes=self._bytes,
                dropped_total=int(self._meta("dropped_total")),
                next_seq=int(self._meta("next_seq")),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (caller holds self._lock, inside a transaction where noted) --------------

    def _prune_locked(self, now: float, *, extra_rows: int, extra_bytes: int) -> tuple[int, int]:
        """Drop oldest rows beyond the limits, inside the caller's transaction."""
        rows = self._rows + extra_rows
        nbytes = self._bytes + extra_bytes
        dropped = dropped_bytes = 0
        cutoff = now - self.limits.max_age_s
        while rows > 0:
            oldest = self._db.execute("SELECT seq, nbytes, committed_at FROM outbox ORDER BY seq LIMIT 1").fetchone()
            if oldest is None:
                break
            seq, size, committed_at = oldest
            if rows <= self.limits.max_rows and nbytes <= self.limits.max_bytes and (committed_at >= cutoff):
                break
            self._db.execute("DELETE FROM outbox WHERE seq=?", (seq,))
            self._commit_ms.pop(seq, None)
            rows -= 1
            nbytes -= size
            dropped += 1
            dropped_bytes += size
        if dropped:
            self._db.execute(
                "UPDATE meta SET value=CAST(value AS INTEGER)+? WHERE key='dropped_total'",
                (dropped,),
            )
        return dropped, dropped_bytes

    def _meta(self, key: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if row is None:
            raise OutboxError(f"outbox {self.path} lacks meta key {key!r}", path=str(self.path))
        return str(row[0])

    def _meta_default(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _rollback(self) -> None:
        # No transaction may be open any more: the failing statement can already have ended it.
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")


def _is_full(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(err).lower()
