"""Build the emulator's built-in sample tray (firmware_bridge/sample_tray.npz) from RRUFF.

    python scripts/make_sample_tray.py [--rruff PATH] [--per-mineral 2]

For each mineral of `firmware_bridge.library.DEFAULT_MINERALS`: up to `--per-mineral` RRUFF
Processed, X-ray-confirmed spectra, each from a different specimen where RRUFF has several,
preferring 785/780 nm (the emulator's default laser) and the widest shift range. Each is
resampled onto one 1 cm-1 grid (100-1800 cm-1, linear interpolation: RRUFF bands are
>= 3 cm-1 wide, so nothing is lost that the emulator's ~1.5 cm-1 pixels could show), scaled
to a maximum of 1 and stored as float16, with NaN outside the spectrum's measured range.
The RRUFF id, file name, laser, status line and SHA-256 of the original file are kept, so
every served spectrum can be traced back to rruff.info.

Data: RRUFF (Lafuente B, Downs R T, Yang H, Stone N (2015) The power of databases: the RRUFF
project. In: Highlights in Mineralogical Crystallography, T Armbruster and R M Danisi, eds.
Berlin, Germany, W. De Gruyter, pp 1-30), https://rruff.info.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware_bridge.library import DEFAULT_MINERALS, TRAY_FILE, TRAY_FORMAT, load_library  # noqa: E402
from raman_core.rruff_format import default_rruff_path  # noqa: E402

GRID_CM1 = np.arange(100.0, 1801.0, 1.0)
CITATION = (
    "Lafuente B, Downs R T, Yang H, Stone N (2015) The power of databases: the RRUFF project. "
    "In: Highlights in Mineralogical Crystallography, T Armbruster and R M Danisi, eds. "
    "Berlin, Germany, W. De Gruyter, pp 1-30. https://rruff.info"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rruff", type=Path, default=default_rruff_path())
    ap.add_argument("--per-mineral", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "firmware_bridge" / TRAY_FILE)
    args = ap.parse_args()
    spectra = load_library(args.rruff, DEFAULT_MINERALS)
    rows, meta = [], []
    for mineral in DEFAULT_MINERALS:
        mine = [s for s in spectra if s.mineral.lower() == mineral.lower()]
        if not mine:
            print(f"warning: no spectrum of {mineral}", file=sys.stderr)
            continue
        # Prefer the emulator's laser, then the widest range; one per specimen first.
        mine.sort(key=lambda s: (s.laser_nm not in (780, 785), -(s.shift_cm1.max() - s.shift_cm1.min()), s.file))
        chosen, seen = [], set()
        for s in mine:
            if s.rruff_id not in seen:
                chosen.append(s)
                seen.add(s.rruff_id)
        chosen += [s for s in mine if s not in chosen]
        for s in chosen[: args.per_mineral]:
            order = np.argsort(s.shift_cm1)
            x, y = s.shift_cm1[order], s.intensity[order]
            row = np.interp(GRID_CM1, x, y, left=np.nan, right=np.nan)
            row = row / np.nanmax(row)
            rows.append(row.astype(np.float16))
            meta.append(
                {
                    "mineral": s.mineral,
                    "rruff_id": s.rruff_id,
                    "laser_nm": s.laser_nm,
                    "file": Path(s.file).name,
                    "status": s.status,
                    "sha256": s.digest,
                }
            )
    doc = {"format": TRAY_FORMAT, "source": "RRUFF excellent_unoriented", "citation": CITATION, "spectra": meta}
    np.savez_compressed(
        args.out, grid_cm1=GRID_CM1.astype(np.float32), intensity=np.stack(rows), meta=np.array(json.dumps(doc))
    )
    print(
        f"{args.out}: {len(rows)} spectra of {len({m['mineral'] for m in meta})} minerals,"
        f" {args.out.stat().st_size} bytes"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
