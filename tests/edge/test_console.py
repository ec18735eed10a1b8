"""ThrottledLines: every line arrives, in order, within the interval, through a real pipe."""

from __future__ import annotations

import os
import time

from edge.console import ThrottledLines


def _reader(fd: int, want: int, timeout_s: float) -> tuple[list[str], float]:
    buf = b""
    t0 = time.monotonic()
    os.set_blocking(fd, False)
    while buf.count(b"\n") < want and time.monotonic() - t0 < timeout_s:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            time.sleep(0.002)
            continue
        buf += chunk
    return buf.decode().splitlines(), time.monotonic() - t0


def test_lines_are_batched_but_none_is_held_past_the_interval() -> None:
    r, w = os.pipe()
    stream = os.fdopen(w, "w", buffering=8192)
    out = ThrottledLines(stream, interval_s=0.1)
    try:
        for i in range(500):
            print(f"line {i}", file=out, flush=True)
        # The last lines sit in the buffer until the timer flushes them (no further print).
        lines, waited = _reader(r, 500, timeout_s=5.0)
        assert lines == [f"line {i}" for i in range(500)]
        assert waited < 2.0
        print("late", file=out, flush=True)
        lines, _ = _reader(r, 1, timeout_s=5.0)
        assert lines == ["late"]
    finally:
        out.flush_now()
        stream.close()
        os.close(r)


def test_flush_now_writes_at_once() -> None:
    r, w = os.pipe()
    stream = os.fdopen(w, "w", buffering=8192)
    out = ThrottledLines(stream, interval_s=60.0)
    try:
        print("a", file=out, flush=True)  # first flush goes straight through
        print("b", file=out, flush=True)  # held: the interval has not passed
        out.flush_now()
        lines, _ = _reader(r, 2, timeout_s=2.0)
        assert lines == ["a", "b"]
    finally:
        stream.close()
        os.close(r)
