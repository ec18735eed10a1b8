"""Structured logging: one line per event, `key=value` (default) or JSON.

Call sites pass fields through `extra=`: `log.warning("broker unreachable", extra={"broker":
url})`. An expected fault (an EdgeError) is logged as its message only; a traceback is printed
only for unexpected exceptions, which are bugs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from edge.errors import EdgeError

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            out[key] = value
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        out["error"] = str(exc)
        out["error_type"] = type(exc).__name__
        if not isinstance(exc, EdgeError):
            out["traceback"] = logging.Formatter().formatException(record.exc_info)
    return out


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = []
        for key, value in _fields(record).items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if key == "traceback":
                continue
            if text == "" or any(c in text for c in ' ="\n'):
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        tb = _fields(record).get("traceback")
        return f"{line}\n{tb}" if tb else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted.

    A handler bound to the `sys.stderr` object of the moment keeps writing to it after it has
    been replaced and closed (pytest's capture, an embedding application), and every later
    record then fails with "I/O operation on closed file".
    """

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(level: str = "info", fmt: str = "kv", stream: TextIO | None = None) -> None:
    """Install one handler on the root logger (idempotent: replaces an earlier one)."""
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _CurrentStderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_raman_edge", False):
            root.removeHandler(old)
    handler._raman_edge = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
