"""The root of every Raman Edge exception family.

Each package keeps its own family (`edge.errors.EdgeError`, `firmware_bridge.errors.BridgeError`,
`trainer.errors.TrainerError`); all of them derive from `RamanError`, so a CLI catches one class
and prints one line for any expected failure of any package. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class RamanError(Exception):
    """Root of every error a Raman Edge package raises on purpose."""


class DataError(RamanError, ValueError):
    """Data handed to us is unusable; the message says what and why."""


class DataNotFoundError(DataError):
    """A data path (RRUFF folder or zip, spectrum file) does not exist."""


class FileFormatError(DataError):
    """A data file could not be read: carries the file, a 1-based line (or None) and a reason key."""

    def __init__(self, file: str, line: int | None, reason: str, detail: str) -> None:
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {detail}")
        self.file = file
        self.line = line
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Keeps the error picklable (multiprocessing workers raise it across processes).
        return (type(self), (self.file, self.line, self.reason, self.detail))
