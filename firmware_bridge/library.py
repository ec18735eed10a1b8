"""Load the RRUFF spectra the emulator serves, reading only the files it needs.

`trainer.rruff.iter_files` reads every file; the shared zip holds ~5,000 of them, so the
emulator filters the *names* first (`parse_filename`) and decompresses only the matches.
That makes `simulate --minerals Quartz` start in well under a second.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from firmware_bridge.errors import UsageError
from trainer.rruff import RamanSpectrum, RruffParseError, parse_filename, parse_rruff_text

#: Served when no --minerals is given: common, well-known minerals that have Processed,
#: X-ray-confirmed spectra in RRUFF excellent_unoriented (RRUFF spells barite "Baryte").
DEFAULT_MINERALS: tuple[str, ...] = (
    "Quartz",
    "Calcite",
    "Dolomite",
    "Aragonite",
    "Gypsum",
    "Anhydrite",
    "Baryte",
    "Celestine",
    "Forsterite",
    "Diopside",
    "Albite",
    "Microcline",
    "Orthoclase",
    "Rutile",
    "Anatase",
    "Hematite",
    "Magnesite",
    "Siderite",
    "Rhodochrosite",
    "Fluorapatite",
    "Corundum",
    "Spodumene",
    "Beryl",
)


def _wanted(name: str, minerals: set[str] | None) -> bool:
    info = parse_filename(name)
    if info is None or info.data_type != "Processed":
        return False
    return minerals is None or info.mineral.lower() in minerals


def _iter_matching(path: Path, minerals: set[str] | None) -> Iterator[tuple[str, bytes]]:
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for name in sorted(zf.namelist()):
                if name.lower().endswith(".txt") and _wanted(name, minerals):
                    yield name, zf.read(name)
        return
    if path.is_file():
        if _wanted(path.name, minerals):
            yield path.name, path.read_bytes()
        return
    for child in sorted(path.rglob("*")):
        if not child.is_file():
            continue
        if child.suffix.lower() == ".zip":
            yield from _iter_matching(child, minerals)
        elif child.suffix.lower() == ".txt" and _wanted(child.name, minerals):
            yield str(child.relative_to(path)), child.read_bytes()


def load_library(
    path: str | os.PathLike[str],
    minerals: Iterable[str] | None = DEFAULT_MINERALS,
    *,
    xray_only: bool = True,
) -> list[RamanSpectrum]:
    """Processed (and by default X-ray-confirmed) spectra of `minerals` (None: all) under
    `path` (folder, zip, or folder of zips). Unreadable files are skipped.

    Raises UsageError when the path does not exist or nothing matches, with the names asked.
    """
    p = Path(path)
    if not p.exists():
        raise UsageError(f"RRUFF path {p} does not exist")
    wanted = None if minerals is None else {m.strip().lower() for m in minerals if m.strip()}
    out: list[RamanSpectrum] = []
    for name, data in _iter_matching(p, wanted):
        try:
            spec = parse_rruff_text(data, name)
        except RruffParseError:
            continue
        if xray_only and not spec.xray_confirmed:
            continue
        out.append(spec)
    if not out:
        asked = "all minerals" if wanted is None else ", ".join(sorted(wanted))
        raise UsageError(f"no Processed{' X-ray-confirmed' if xray_only else ''} RRUFF spectra for {asked} under {p}")
    return out
