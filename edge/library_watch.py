"""The daemon's added-reference library: load it, notice changes, refuse a bad one loudly.

`LibraryWatch.poll()` is called by the acquisition loop; it stats the directory's two files
(cheap) and reloads only when their (name, size, mtime_ns) fingerprint changed, so an
`edge library add` from a shell or a `library/add` request is picked up without a restart.
A damaged or foreign directory (edge.library.LibraryError: hash mismatch, another model's
references, a wrong grid) is refused with its message; the analyzer then runs on the
bundle's own library and `state()` says so (it is part of the `status` response).
The library functions themselves are edge.library / edge.library_cli's; nothing is re-done here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge.bundle import Bundle
from edge.errors import EdgeError
from edge.library import JSON_NAME, NPZ_NAME, ReferenceLibrary
from edge.library_cli import open_added, resolve_dir

log = logging.getLogger("edge.library")

LibraryState = Literal["none", "loaded", "refused"]


@dataclass(frozen=True)
class LibraryStatus:
    directory: str
    state: LibraryState  # none: nothing added yet; loaded: bundle + added; refused: bundle only
    added_references: int
    added_minerals: tuple[str, ...]
    error: str | None  # why the directory was refused
    using: str  # human-readable: which library the analyzer uses now


def fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    out = []
    for name in (JSON_NAME, NPZ_NAME):
        try:
            st = (directory / name).stat()
        except OSError:
            continue
        out.append((name, st.st_size, st.st_mtime_ns))
    return tuple(out)


class LibraryWatch:
    def __init__(self, bundle: Bundle, directory: Path) -> None:
        self.bundle = bundle
        self.directory = resolve_dir(bundle, directory)  # UsageError if inside the bundle
        self._seen: tuple[tuple[str, int, int], ...] | None = None
        self._failed_once: tuple[tuple[str, int, int], ...] | None = None
        self._status = LibraryStatus(str(self.directory), "none", 0, (), None, "the bundle's own library")

    def poll(self) -> tuple[bool, ReferenceLibrary | None]:
        """(changed, added library or None). Never raises for a bad directory: it is refused."""
        fp = fingerprint(self.directory)
        if fp == self._seen:
            return False, None
        try:
            lib = open_added(self.bundle, self.directory)
        except (EdgeError, OSError) as err:
            # save_library writes the npz, then the json: a poll between the two sees a hash
            # mismatch. Refuse only what fails twice with the same files.
            if fp != self._failed_once:
                self._failed_once = fp
                return False, None
            self._seen = fp
            msg = f"library_dir {self.directory} refused: {err}"
            log.warning("library refused; using the bundle's own library", extra={"error": msg})
            self._status = LibraryStatus(str(self.directory), "refused", 0, (), msg, "the bundle's own library only")
            return True, None
        self._seen, self._failed_once = fp, None
        if lib is None or len(lib) == 0:
            self._status = LibraryStatus(str(self.directory), "none", 0, (), None, "the bundle's own library")
            return True, None
        minerals = tuple(sorted({lib.minerals[int(c)] for c in lib.class_idx}))
        self._status = LibraryStatus(
            str(self.directory), "loaded", len(lib), minerals, None, f"bundle + {len(lib)} added reference(s)"
        )
        log.info("added references loaded", extra={"directory": str(self.directory), "references": len(lib)})
        return True, lib

    def status(self) -> LibraryStatus:
        return self._status


def add_reference(
    bundle: Bundle,
    directory: Path,
    mineral: str,
    shift_cm1: list[float],
    intensity: list[float],
    *,
    corrected: bool,
    reference_id: str | None = None,
) -> ReferenceLibrary:
    """One reference from arrays (the `library/add` request), stored like `edge library add`
    stores a file's: preprocessed with the bundle's spec, appended, saved with its SHA-256.
    A refused (damaged or foreign) directory is not written to: LibraryError."""
    import numpy as np

    from edge.errors import UsageError
    from edge.library import build_library, save_library
    from edge.preprocess import preprocess

    if len(shift_cm1) != len(intensity):
        raise UsageError(f"shift_cm1 has {len(shift_cm1)} values but intensity has {len(intensity)}")
    prep = preprocess(shift_cm1, intensity, bundle.spec, corrected=corrected)  # SpectrumError if unusable
    if not np.any(prep.values):
        raise UsageError("the spectrum is flat after preprocessing: nothing to match against")
    ref = reference_id or f"{mineral}:request"
    new = build_library((mineral,), np.zeros(1), [ref], np.zeros(1), prep.values[None, :])
    directory = resolve_dir(bundle, directory)
    old = open_added(bundle, directory)
    lib = new if old is None else old.extended(new)
    directory.mkdir(parents=True, exist_ok=True)
    save_library(lib, directory, model_sha256=bundle.sha256)
    return lib
