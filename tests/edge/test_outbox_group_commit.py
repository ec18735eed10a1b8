"""Group commit: many results per fsync, a bounded wait, and nothing visible to the
publisher (peek) before its fsync has completed."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.errors import UsageError
from edge.outbox import MAX_GROUP_COMMIT_MS, Outbox
from edge.result import Result


class CountingFsync:
    """Wraps os.fdatasync: counts calls and can hold them until released (a slow disk)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        real = os.fdatasync

        def fake(fd: int) -> None:
            self.entered.set()
            self.gate.wait()
            self.calls += 1
            real(fd)

        monkeypatch.setattr(os, "fdatasync", fake)


def test_burst_is_committed_with_few_fsyncs(
    tmp_path: Path, make_result: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = CountingFsync(monkeypatch)
    with Outbox(tmp_path / "o.sqlite", device_id="dev1", group_commit_ms=5) as ob:
        start_calls = fsync.calls  # the open-time sync
        for i in range(200):
            ob.commit(make_result(i))
        assert ob.wait_durable(timeout_s=5)
        rows = ob.peek(limit=1000)
        assert [r.seq for r in rows] == list(range(1, 201))
        assert fsync.calls - start_calls <= 50, fsync.calls  # one per group, not one per result
        # Published commit_ms covers commit start -> durable, so it is at least the write time.
        assert all(r.commit_ms is not None and r.commit_ms > 0 for r in rows)


def test_rows_are_not_visible_to_peek_before_their_fsync(
    tmp_path: Path, make_result: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = CountingFsync(monkeypatch)
    with Outbox(tmp_path / "o.sqlite", device_id="dev1", group_commit_ms=1) as ob:
        fsync.gate.clear()
        fsync.entered.clear()
        ob.commit(make_result(1))
        assert fsync.entered.wait(5)  # the syncer is inside the (held) fsync
        assert ob.durable_seq == 0
        got: list[list[int]] = []
        reader = threading.Thread(target=lambda: got.append([r.seq for r in ob.peek()]))
        reader.start()
        reader.join(0.2)
        assert reader.is_alive() and not got  # peek waits for the group in flight
        fsync.gate.set()
        reader.join(5)
        assert got == [[1]]
        assert ob.durable_seq == 1


def test_durable_within_the_bounded_wait(tmp_path: Path, make_result: Callable[..., Result]) -> None:
    with Outbox(tmp_path / "o.sqlite", device_id="dev1", group_commit_ms=MAX_GROUP_COMMIT_MS) as ob:
        ob.commit(make_result())
        t0 = time.perf_counter()
        assert ob.wait_durable(timeout_s=5)
        # The wait is 5 ms plus one fsync; allow a loaded machine a generous margin.
        assert time.perf_counter() - t0 < 1.0


def test_close_syncs_what_is_pending_and_reopen_continues(tmp_path: Path, make_result: Callable[..., Result]) -> None:
    path = tmp_path / "o.sqlite"
    ob = Outbox(path, device_id="dev1", group_commit_ms=5)
    for i in range(5):
        ob.commit(make_result(i))
    ob.close()
    with Outbox(path, device_id="dev1") as again:
        assert again.durable_seq == 5
        assert [r.seq for r in again.peek()] == [1, 2, 3, 4, 5]
        assert again.commit(make_result(9)).result.seq == 6


def test_concurrent_committers_get_unique_increasing_seqs(tmp_path: Path, make_result: Callable[..., Result]) -> None:
    with Outbox(tmp_path / "o.sqlite", device_id="dev1") as ob:
        seqs: list[int] = []
        lock = threading.Lock()

        def work() -> None:
            for i in range(50):
                s = ob.commit(make_result(i)).result.seq
                with lock:
                    seqs.append(s)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(seqs) == list(range(1, 201))
        assert [r.seq for r in ob.peek(limit=500)] == list(range(1, 201))


@pytest.mark.parametrize("ms", [-1.0, MAX_GROUP_COMMIT_MS + 0.1])
def test_group_wait_out_of_range_is_a_usage_error(tmp_path: Path, ms: float) -> None:
    with pytest.raises(UsageError, match="group_commit_ms"):
        Outbox(tmp_path / "o.sqlite", device_id="dev1", group_commit_ms=ms)
