"""The spectra the emulator serves: the built-in sample tray, or RRUFF files the user names.

The **sample tray** (`firmware_bridge/sample_tray.npz`, made by `scripts/make_sample_tray.py`
from RRUFF, documented in docs/data.md) ships with the package, so `firmware_bridge simulate`
and `edge run --simulate` work from a wheel with no RRUFF download. `--spectra PATH` reads a
RRUFF folder or zip instead, decompressing only the files whose *names* match the minerals
asked for (`raman_core.rruff_format.mineral_name_filter`), so `--minerals Quartz` on the
5,000-file zip starts in well under a second.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import numpy as np

from firmware_bridge.errors import UsageError
from raman_core.rruff_format import (
    RamanSpectrum,
    RruffParseError,
    iter_files,
    mineral_key,
    mineral_name_filter,
    parse_filename,
    parse_rruff_text,
)

#: Served when no --minerals is given: common rock-forming and well-known minerals that have
#: Processed, X-ray-confirmed spectra in RRUFF excellent_unoriented (RRUFF spells barite
#: "Baryte"). The sample tray holds these.
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
    "Enstatite",
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
    "Almandine",
    "Zircon",
)

TRAY_FILE = "sample_tray.npz"
TRAY_FORMAT = "raman-edge-sample-tray/1"


def load_library(
    path: str | os.PathLike[str] | None,
    minerals: Iterable[str] | None = DEFAULT_MINERALS,
    *,
    xray_only: bool = True,
) -> list[RamanSpectrum]:
    """Spectra of `minerals` (None: all) from the built-in tray (`path=None`) or from a RRUFF
    folder, zip or folder of zips: Processed, and by default X-ray-confirmed. Unreadable files
    are skipped.

    Raises UsageError when the path does not exist or nothing matches, naming what was asked.
    """
    if path is None:
        return load_tray(minerals)
    p = Path(path)
    if not p.exists():
        raise UsageError(f"--spectra {p} does not exist (give a RRUFF folder or .zip, or omit it for the sample tray)")
    wanted = None if minerals is None else {m.strip() for m in minerals if m.strip()}
    by_name = mineral_name_filter(wanted)

    def keep(name: str) -> bool:
        info = parse_filename(name)
        return info is not None and info.data_type == "Processed" and (by_name is None or by_name(name))

    out: list[RamanSpectrum] = []
    for name, data in iter_files(p, keep):
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


def tray_path() -> Path:
    """The installed sample tray (inside the firmware_bridge package)."""
    return Path(str(resources.files("firmware_bridge").joinpath(TRAY_FILE)))


def load_tray(minerals: Iterable[str] | None = None, path: str | os.PathLike[str] | None = None) -> list[RamanSpectrum]:
    """The sample tray's spectra, optionally only `minerals` (matched like RRUFF file names)."""
    p = Path(path) if path is not None else tray_path()
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            grid = np.asarray(z["grid_cm1"], np.float64)
            table = np.asarray(z["intensity"], np.float64)
    except (OSError, KeyError, ValueError) as err:
        raise UsageError(f"sample tray {p} unreadable ({err}); reinstall raman-edge or pass --spectra PATH") from err
    if meta.get("format") != TRAY_FORMAT or len(meta.get("spectra", [])) != table.shape[0]:
        raise UsageError(f"sample tray {p} is not a {TRAY_FORMAT} file; reinstall raman-edge or pass --spectra PATH")
    wanted = None if minerals is None else {mineral_key(m) for m in minerals if m.strip()}
    out: list[RamanSpectrum] = []
    for row, info in zip(table, meta["spectra"], strict=True):
        if wanted is not None and mineral_key(info["mineral"]) not in wanted:
            continue
        measured = np.isfinite(row)  # NaN marks grid points outside the measured range
        out.append(
            RamanSpectrum(
                file=info["file"],
                mineral=info["mineral"],
                rruff_id=info["rruff_id"],
                laser_nm=info["laser_nm"],
                data_type="Processed",
                orientation="unoriented",
                status=info["status"],
                xray_confirmed=True,
                digest=info["sha256"],
                shift_cm1=grid[measured],
                intensity=row[measured],
            )
        )
    if not out:
        have = sorted({s["mineral"] for s in meta["spectra"]})
        asked = ", ".join(sorted(minerals or ()))
        raise UsageError(
            f"the sample tray has no {asked}; it holds {', '.join(have)} (pass --spectra PATH for a RRUFF download)"
        )
    return out
