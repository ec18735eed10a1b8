"""Outbox on a real SQLite file: ordering, persistence across processes, bounds, full disk."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.errors import OutboxFullError
from edge.outbox import Outbox, OutboxLimits
from edge.result import Result


def test_commit_stamps_increasing_seq_and_stable_id(tmp_path: Path, make_result: Callable[..., Result]) -> None:
    with Outbox(tmp_path / "o.sqlite", device_id="dev1") as ob:
        stamped = [ob.commit(make_result(i)).result for i in range(3)]
        rows = ob.peek(limit=10)
    assert [r.seq for r in stamped] == [1, 2, 3]
    assert [r.seq for r in rows] == [1, 2, 3]
    assert all(r.id.startswith("dev1-") and r.id.endswith(f"-{r.seq}") for r in stamped)
    assert [json.loads(row.payload)["id"] for row in rows] == [r.id for r in stamped]


def test_wal_mode_and_sync_levels(tmp_path: Path, make_result: Callable[..., Result]) -> None:
    # Group commit: NORMAL (the WAL is fsync'd by the syncer, once per group); 0 ms: FULL.
    with Outbox(tmp_path / "g.sqlite", device_id="dev1") as ob:
        ob.commit(make_result())
        assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with Outbox(tmp_path / "f.sqlite", device_id="dev1", group_commit_ms=0) as ob:
        ob.commit(make_result())
        assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert ob.durable_seq == 1


def test_second_connection_sees_committed_row_and_other_process_resumes_seq(
    tmp_path: Path, make_result: Callable[..., Result]
) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path, device_id="dev1") as ob:
        ob.commit(make_result(1))
        ob.commit(make_result(2))
        # A concurrent reader (another connection) sees the rows: they are committed.
        other = sqlite3.connect(path)
        assert other.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 2
        other.close()
        first_ids = [r.id for r in ob.peek()]
    code = (
        "import sys; from edge.outbox import Outbox; from edge.result import Result\n"
        f"ob = Outbox({str(path)!r}, device_id='dev1')\n"
        "r = Result.from_json(sys.argv[1])\n"
        "print([r.seq for r in ob.peek()], ob.commit(r).result.id)\n"
        "ob.ack([1]); ob.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, make_result(3).to_json()],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    assert out[0] == "[1," and out[1] == "2]"
    store = first_ids[0].split("-")[1]
    assert out[2] == f"dev1-{store}-3"  # same store id, seq continues after a restart
    with Outbox(path, device_id="dev1") as ob:
        assert [r.seq for r in ob.peek()] == [2, 3]
        assert ob.stats().next_seq == 4
        assert ob.commit(make_result()).result.seq == 4


def test_ack_deletes_only_acknowledged_and_seq_never_reused(tmp_path: Path, make_result: Callable[..., Result]) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path, device_id="dev1") as ob:
        for i in range(5):
            ob.commit(make_result(i))
        assert ob.ack([1, 2, 3, 4, 5, 99]) == 5
        assert ob.pending() == 0
    with Outbox(path, device_id="dev1") as ob:
        assert ob.commit(make_result()).result.seq == 6


def test_drop_oldest_by_rows_is_counted_and_persisted(tmp_path: Path, make_result: Callable[..., Result]) -> None:
    path = tmp_path / "o.sqlite"
    limits = OutboxLimits(max_rows=5)
    with Outbox(path, device_id="dev1", limits=limits) as ob:
        dropped = [ob.commit(make_result(i)).dropped for i in range(8)]
        assert dropped == [0] * 5 + [1, 1, 1]
        assert [r.seq for r in ob.peek()] == [4, 5, 6, 7, 8]
    with Outbox(path, device_id="dev1", limits=limits) as ob:
        s = ob.stats()
        assert (s.pending, s.dropped_total) == (5, 3)


def test_drop_oldest_by_bytes(tmp_path: Path, make_result: Callable[..., Result]) -> None:
    with Outbox(tmp_path / "o.sqlite", device_id="dev1") as probe:
        size = len(probe.commit(make_result()).result.to_json())
    limits = OutboxLimits(max_bytes=3 * size + size // 2)
    with Outbox(tmp_path / "b.sqlite", device_id="dev1", limits=limits) as ob:
        for i in range(6):
            ob.commit(make_result(i))
        s = ob.stats()
        assert s.pending == 3 and s.dropped_total == 3 and s.pending_bytes <= limits.max_bytes
        assert [r.seq for r in ob.peek()] == [4, 5, 6]


def test_drop_by_age(tmp_path: Path, make_result: Callable[..., Result]) -> None:
    limits = OutboxLimits(max_age_s=60)
    with Outbox(tmp_path / "o.sqlite", device_id="dev1", limits=limits) as ob:
        ob.commit(make_result(), now_s=1000.0)
        ob.commit(make_result(), now_s=1030.0)
        assert ob.prune_expired(now_s=1070.0) == 1  # the first is 70 s old
        ob.commit(make_result(), now_s=1200.0)  # commits prune too
        assert [r.seq for r in ob.peek()] == [3]
        assert ob.stats().dropped_total == 2


def test_full_disk_raises_precisely_and_stores_nothing(tmp_path: Path, make_result: Callable[..., Result]) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path, device_id="dev1", max_db_pages=12) as ob:
        committed = 0
        with pytest.raises(OutboxFullError) as info:
            for i in range(10_000):
                ob.commit(make_result(i))
                committed += 1
        assert committed > 0
        assert "full" in str(info.value) and str(path) in str(info.value)
        assert "not stored" in str(info.value)
        s = ob.stats()
        assert s.pending == committed and s.next_seq == committed + 1  # no gap, no phantom row
        assert s.dropped_total == 0  # a full disk never drops older results
        # Space freed (results acknowledged): commits work again, seq continues.
        ob.ack(range(1, committed + 1))
        assert ob.commit(make_result()).result.seq == committed + 1
