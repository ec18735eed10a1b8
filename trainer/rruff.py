"""The trainer's view of RRUFF: load a whole download, apply the named selections.

The file format itself (parsing, file names, the folder/zip walk) lives in
`raman_core.rruff_format`, shared with the edge and the emulator; it is re-exported here so
trainer code keeps one import.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.errors import InputError
from raman_core.rruff_format import (
    XRAY_PATTERN,
    FileNameInfo,
    RamanSpectrum,
    RruffParseError,
    default_rruff_path,
    iter_files,
    mineral_key,
    mineral_name_filter,
    parse_filename,
    parse_rruff_text,
)

__all__ = [
    "DEFAULT_RRUFF_PATH",
    "XRAY_PATTERN",
    "FileNameInfo",
    "LoadReport",
    "RamanSpectrum",
    "RruffParseError",
    "SELECTIONS",
    "iter_files",
    "load_rruff",
    "mineral_key",
    "parse_filename",
    "parse_rruff_text",
    "select",
]

#: $RAMAN_RRUFF, else the shared copy beside a checkout (raman_core.rruff_format.default_rruff_path).
DEFAULT_RRUFF_PATH = default_rruff_path()


@dataclass
class LoadReport:
    n_files: int = 0
    n_kept: int = 0
    n_classes: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[RruffParseError] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.n_files} files", f"{self.n_kept} spectra kept", f"{self.n_classes} classes"]
        if self.skipped:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()))
            parts.append(f"skipped: {reasons}")
        return "; ".join(parts)


def load_rruff(
    path: str | os.PathLike[str],
    *,
    progress: Callable[[int], None] | None = None,
    minerals: set[str] | None = None,
) -> tuple[list[RamanSpectrum], LoadReport]:
    """Read every spectrum under `path`; unreadable files are skipped and counted by reason.

    `minerals` keeps only files whose *file name* carries one of these (ASCII-fied) names,
    before parsing: a fast way to read a few minerals out of the 5,000-file zip.
    """
    report = LoadReport()
    spectra: list[RamanSpectrum] = []
    for name, data in iter_files(path, mineral_name_filter(minerals)):
        report.n_files += 1
        try:
            spectra.append(parse_rruff_text(data, name))
        except RruffParseError as err:
            report.skipped[err.reason] += 1
            report.errors.append(err)
        if progress is not None:
            progress(report.n_files)
    report.n_kept = len(spectra)
    report.n_classes = len({s.mineral for s in spectra})
    return spectra, report


SELECTIONS = ("paper", "min8", "all")

#: `##NAMES=` values that are not a mineral: RRUFF's unidentified samples. A class of them would
#: mix different minerals and clash with the result's `unknown` flag, so selections drop them.
UNLABELLED_NAMES = frozenset({"unknown"})


@dataclass(frozen=True)
class SelectionCounts:
    name: str
    n_input: int
    n_raw_dropped: int
    n_unlabelled_dropped: int
    n_unconfirmed_dropped: int
    n_duplicates_dropped: int
    n_small_class_dropped: int
    n_spectra: int
    n_classes: int
    n_specimens: int


def select(spectra: list[RamanSpectrum], selection: str) -> tuple[list[RamanSpectrum], SelectionCounts]:
    """Apply a named selection (documented in docs/data.md).

    - all:   Processed spectra with a mineral name (not RRUFF's "unknown"), byte-identical
             duplicates removed.
    - paper: all + ##STATUS= mentions X-ray diffraction + classes with >= 2 spectra.
    - min8:  paper with >= 8 spectra per class.
    """
    if selection not in SELECTIONS:
        raise InputError(f"unknown selection {selection!r}; choose one of {', '.join(SELECTIONS)}")
    kept = [s for s in spectra if s.data_type == "Processed"]
    n_raw = len(spectra) - len(kept)
    labelled = [s for s in kept if s.mineral.strip().lower() not in UNLABELLED_NAMES]
    n_unlabelled = len(kept) - len(labelled)
    kept = labelled
    n_unconf = 0
    if selection != "all":
        before = len(kept)
        kept = [s for s in kept if s.xray_confirmed]
        n_unconf = before - len(kept)
    seen: set[str] = set()
    unique: list[RamanSpectrum] = []
    for s in sorted(kept, key=lambda s: s.file):
        if s.digest not in seen:
            seen.add(s.digest)
            unique.append(s)
    n_dup = len(kept) - len(unique)
    min_per_class = {"all": 1, "paper": 2, "min8": 8}[selection]
    counts = Counter(s.mineral for s in unique)
    final = [s for s in unique if counts[s.mineral] >= min_per_class]
    return final, SelectionCounts(
        name=selection,
        n_input=len(spectra),
        n_raw_dropped=n_raw,
        n_unlabelled_dropped=n_unlabelled,
        n_unconfirmed_dropped=n_unconf,
        n_duplicates_dropped=n_dup,
        n_small_class_dropped=len(unique) - len(final),
        n_spectra=len(final),
        n_classes=len({s.mineral for s in final}),
        n_specimens=len({s.rruff_id for s in final}),
    )
