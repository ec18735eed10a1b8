"""The daemon's terminal output at mapping rates: one line per result, flushed at most 10x/s.

`edge run` prints a line per result (what a person watching it, or journald, wants). At
hundreds of spectra a second a flush per line is a write system call per result; profiling
the daemon at a 2 ms stream put `print` at 0.46 ms per result (bench/profile_daemon.py).
`ThrottledLines` keeps the lines and their order, writes them in batches, and never holds a
line longer than `interval_s`: a timer flushes what is pending when no further line comes.
A terminal (isatty) is flushed at every line, as before.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, TextIO


class ThrottledLines:
    """A text stream wrapper whose `flush` is rate-limited (see the module docstring)."""

    def __init__(self, stream: TextIO, interval_s: float = 0.1) -> None:
        self._stream = stream
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._last = 0.0
        self._timer: threading.Timer | None = None
        try:
            self._tty = bool(stream.isatty())
        except (AttributeError, ValueError):
            self._tty = False

    def write(self, text: str) -> int:
        return self._stream.write(text)

    def flush(self) -> None:
        if self._tty:
            self._stream.flush()
            return
        with self._lock:
            wait = self._last + self._interval_s - time.monotonic()
            if wait <= 0:
                self._flush_locked()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._timed)
                self._timer.daemon = True
                self._timer.start()

    def flush_now(self) -> None:
        """Write everything now (end of run)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._flush_locked()

    def _timed(self) -> None:
        with self._lock:
            self._timer = None
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._last = time.monotonic()
        # stdout closed or gone (the reader left): the results are in the outbox anyway.
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
