"""On-disk outbox: every result is committed here before any publish attempt.

Rationale (ordering and durability):

* A row is inserted, with its `seq` taken from a persisted counter in the same transaction,
  before the publisher ever sees it; it is deleted only after the broker's PUBACK for it.
  A crash at any point therefore leaves the result either unsent-and-stored or acknowledged.
* `seq` comes from `meta.next_seq`, not from MAX(seq), because acknowledged rows are deleted:
  the counter must keep increasing even when the table is empty.
* Group commit (`group_commit_ms`, default 2, at most 5): WAL + synchronous=NORMAL, so a
  commit writes its transaction into the WAL (the OS has it: it survives a crash or SIGKILL of
  this process) without waiting for the disk, and a syncer thread makes everything written so
  far durable with one fdatasync of the WAL, at most `group_commit_ms` after the oldest
  commit not yet synced (sooner when `max_group_rows` are waiting). That is exactly what
  synchronous=FULL does per commit (SQLite's FULL = NORMAL + a WAL sync at every commit), once
  per group instead. `peek` returns only rows that are durable (it waits for the group in
  flight, bounded), so a result is never published before it is durable: after a power cut
  the rows lost are the last un-synced group, never published, and their seqs, which no
  consumer has seen, are handed out again. Acknowledgement deletes ride on the next sync; a
  power cut can undo one, which means a duplicate delivery (QoS 1 allows it; ids de-duplicate).
  `group_commit_ms=0` keeps synchronous=FULL: one fsync inside every commit.
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
import os
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
#: Upper bound of the group-commit wait: a result is durable within this plus one fsync.
MAX_GROUP_COMMIT_MS = 5.0
#: How long `peek` waits for the group in flight before returning only what is durable.
_PEEK_DURABLE_WAIT_S = 1.0


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
    commit_ms: float  # time inside commit() (written to the WAL; durable follows within the group wait)
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
        group_commit_ms: float = 2.0,
        max_group_rows: int = 256,
    ) -> None:
        """Open (creating if needed) the outbox at `path`.

        `max_db_pages` caps the database file via SQLite's max_page_count: a hard quota that
        behaves exactly like a full disk (the tests use it to simulate one).
        `group_commit_ms` is the longest a committed result waits for its group's fsync
        (0: fsync inside every commit); see the module docstring for the durability rules.
        """
        if not 0.0 <= group_commit_ms <= MAX_GROUP_COMMIT_MS:
            raise UsageError(f"group_commit_ms must be within 0-{MAX_GROUP_COMMIT_MS:g} ms, got {group_commit_ms}")
        if max_group_rows < 1:
            raise UsageError(f"max_group_rows must be positive, got {max_group_rows}")
        self.path = Path(path)
        self.device_id = device_id
        self.limits = limits or OutboxLimits()
        self.group_commit_s = group_commit_ms / 1000.0
        self.max_group_rows = max_group_rows
        self._lock = threading.Lock()
        self._commit_ms: dict[int, float] = {}
        # Group commit state, under _sync (never take _lock while holding _sync).
        self._sync = threading.Condition()
        self._written_seq = 0  # highest seq whose transaction is in the WAL
        self._durable_seq = 0  # highest seq whose transaction has been fsync'd
        self._started_at: dict[int, float] = {}  # seq -> perf_counter at commit start, until durable
        self._closing = False
        self._sync_error: OSError | None = None
        self._wal_fd: int | None = None
        self._syncer: threading.Thread | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL" if self.group_commit_s > 0 else "PRAGMA synchronous=FULL")
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
            # Everything already in the file is durable once the WAL sync below has run.
            self._written_seq = self._durable_seq = int(self._meta("next_seq")) - 1
        except sqlite3.Error as err:
            raise OutboxError(f"cannot open outbox {self.path}: {err}", path=str(self.path)) from None
        if self.group_commit_s > 0:
            try:
                self._open_wal()
                # A previous run may have been killed with rows written but not yet synced:
                # sync them now, so everything visible at start is durable.
                self._fsync_wal()
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)  # the -wal file's directory entry
                finally:
                    os.close(dir_fd)
            except OSError as err:
                self._db.close()
                raise OutboxError(f"cannot open outbox {self.path}: {err}", path=str(self.path)) from None
            self._syncer = threading.Thread(target=self._sync_loop, name="outbox-sync", daemon=True)
            self._syncer.start()

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
            if self._syncer is None:
                # synchronous=FULL: durable now. Kept in memory: writing it into the row
                # would cost a second fsync per result.
                self._commit_ms[seq] = commit_ms
                self._written_seq = self._durable_seq = seq
            else:
                # Published commit_ms is set when the group is durable (commit start -> fsync done).
                with self._sync:
                    self._written_seq = seq
                    self._started_at[seq] = t0
                    self._sync.notify_all()
        return Committed(result=stamped, commit_ms=commit_ms, dropped=dropped)

    def wait_durable(self, seq: int | None = None, timeout_s: float = _PEEK_DURABLE_WAIT_S) -> bool:
        """Block until `seq` (default: everything committed so far) is durable; False on timeout."""
        with self._sync:
            target = self._written_seq if seq is None else seq
            return self._sync.wait_for(lambda: self._durable_seq >= target, timeout_s)

    @property
    def durable_seq(self) -> int:
        """Highest seq known to be on disk (fsync'd); rows above it are not published yet."""
        with self._sync:
            return self._durable_seq

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
        """The oldest unacknowledged *durable* rows with seq > after_seq, in seq order.

        Waits (bounded: the group wait plus one fsync) for the group in flight, so a caller
        that was told of a commit finds its row; never returns a row that is not yet durable.
        """
        self.wait_durable()
        durable = self.durable_seq
        with self._lock:
            cur = self._db.execute(
                "SELECT seq, id, payload, committed_at FROM outbox WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (after_seq, durable, limit),
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
        if self._syncer is not None:
            with self._sync:
                self._closing = True
                self._sync.notify_all()
            self._syncer.join()  # it syncs what is still pending first
            self._syncer = None
        with self._lock:
            self._db.close()
        if self._wal_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._wal_fd)
            self._wal_fd = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- group commit -------------------------------------------------------------------------

    def _open_wal(self) -> None:
        wal = Path(f"{self.path}-wal")
        fd = os.open(wal, os.O_RDWR)
        if self._wal_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._wal_fd)
        self._wal_fd = fd

    def _fsync_wal(self) -> None:
        """fdatasync the WAL: what synchronous=FULL does at every commit (any descriptor of
        the file flushes its dirty pages). Reopened if SQLite replaced the file."""
        assert self._wal_fd is not None
        try:
            same = os.stat(f"{self.path}-wal").st_ino == os.fstat(self._wal_fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            self._open_wal()
        os.fdatasync(self._wal_fd)

    def _sync_loop(self) -> None:
        while True:
            with self._sync:
                self._sync.wait_for(lambda: self._closing or self._written_seq > self._durable_seq)
                if self._written_seq == self._durable_seq:
                    return  # closing, nothing pending
                # Bounded wait: let more commits join this group, up to group_commit_s after
                # the oldest one (or until enough rows are waiting, or close()).
                oldest = self._started_at.get(self._durable_seq + 1, time.perf_counter())
                deadline = oldest + self.group_commit_s
                self._sync.wait_for(
                    lambda: self._closing or self._written_seq - self._durable_seq >= self.max_group_rows,
                    max(0.0, deadline - time.perf_counter()),
                )
                target = self._written_seq
                old = self._durable_seq
            try:
                self._fsync_wal()
            except OSError as err:
                with self._sync:
                    self._sync_error = err
                    if self._closing:
                        return  # close() must not hang on a dead disk; those rows stay unpublished
                time.sleep(0.1)  # e.g. EIO: retry; nothing above old is published meanwhile
                continue
            done = time.perf_counter()
            with self._sync:
                started = [self._started_at.pop(s, done) for s in range(old + 1, target + 1)]
            with self._lock:
                for s, t0 in zip(range(old + 1, target + 1), started, strict=True):
                    self._commit_ms[s] = (done - t0) * 1000.0
            with self._sync:
                self._durable_seq = target
                self._sync_error = None
                self._sync.notify_all()

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
