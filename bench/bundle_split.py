"""The shipped bundle's own specimen split, rebuilt from its manifest and checked against it.

`trainer train`/`trainer export` split the selection's specimens (RRUFF IDs) into training,
held-out (early stopping) and calibration sets before training (docs/bundle.md, "Held-out
and calibration specimens"); only the training rows are in the bundle's reference library.
The split is deterministic (trainer.fmcnn.holdout_rows, seeded by the training config), so a
bench can rebuild it from the RRUFF copy and the manifest's `training` section instead of
needing the trainer's data.npz. The rebuilding is trainer.refit.bundle_split's (also behind
`trainer refit-fusion` and bench/shift_heldout.py); this module adds what a bench needs on top:
the source RamanSpectrum of every row, the download's RAW files, each specimen's role, and
more checks. `bundle_split` refuses to return a split whose counts differ from the
manifest's, whose classes are not the bundle's, or whose training specimens are not the
library's.

    from bench.bundle_split import bundle_split
    split = bundle_split(load_bundle(path))   # split.ds, .sources, .is_train/.is_heldout/.is_cal
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Where a specimen (RRUFF ID) sits relative to a bundle.
ROLES = ("train", "heldout", "calibration", "not_in_selection")


@dataclass(frozen=True)
class BundleSplit:
    ds: Any  # trainer.dataset.Dataset of the bundle's selection, rows in training order
    sources: tuple[Any, ...]  # the RamanSpectrum of every ds row (same order)
    is_heldout: NDArray[np.bool_]
    is_cal: NDArray[np.bool_]
    raw: tuple[Any, ...]  # the RAW spectra of the same download (no selection keeps them)

    @property
    def is_train(self) -> NDArray[np.bool_]:
        return ~self.is_heldout & ~self.is_cal

    def role_of(self, rruff_id: str) -> str:
        """The role of a specimen's rows; a specimen with rows in several roles (RRUFF IDs that
        carry two mineral names are split per mineral) reports the most 'seen' one, training
        first, so "not trained on" is never claimed for a specimen the model did see."""
        rows = self.ds.groups == rruff_id
        if not rows.any():
            return "not_in_selection"
        for role, mask in (("train", self.is_train), ("heldout", self.is_heldout), ("calibration", self.is_cal)):
            if (rows & mask).any():
                return role
        raise AssertionError("every row has a role")


class SplitMismatch(RuntimeError):
    """The rebuilt split is not the bundle's (other data, other code, other config)."""


def bundle_split(bundle: Any, data: Path | None = None, spectra: list[Any] | None = None) -> BundleSplit:
    """Rebuild `bundle`'s (train, held-out, calibration) split; raises SplitMismatch.

    The split is trainer.refit.bundle_split's (the one `trainer refit-fusion` and
    bench/shift_heldout.py use), preprocessed with the bundle's own spec; on top of its count
    check this one checks the classes, the training count and that the training rows are the
    library's specimens. `data`: RRUFF folder or zip (default: the trainer's default copy,
    which is where the shipped bundle was trained from: manifest `training.data`). `spectra`:
    the RRUFF spectra already read from `data` (skips the ~15 s read)."""
    from trainer.errors import ExportError
    from trainer.refit import bundle_split as rebuild
    from trainer.rruff import DEFAULT_RRUFF_PATH, load_rruff

    data = Path(data or DEFAULT_RRUFF_PATH)
    if spectra is None:
        spectra, _report = load_rruff(data)
    try:
        ds, is_val, is_cal = rebuild(bundle.manifest, data, spectra=spectra, spec=bundle.spec)
    except ExportError as err:
        raise SplitMismatch(str(err)) from err
    if tuple(ds.labels) != tuple(bundle.labels):
        raise SplitMismatch(f"selection gives {len(ds.labels)} classes, the bundle has {len(bundle.labels)}")
    is_train = ~is_val & ~is_cal
    if int(is_train.sum()) != bundle.manifest["training"].get("n_train"):
        raise SplitMismatch(
            f"rebuilt split has {int(is_train.sum())} training rows, the manifest "
            f"{bundle.manifest['training'].get('n_train')}"
        )
    lib_ids = _library_ids(bundle)
    if lib_ids is not None and Counter(ds.groups[is_train].tolist()) != lib_ids:
        raise SplitMismatch("the rebuilt training rows are not the specimens of the bundle's library")
    # The source of each row by file name (RamanSpectrum.file is the base name; selections keep
    # only Processed spectra), refused if two Processed files share a base name.
    processed = [s for s in spectra if s.data_type == "Processed"]
    by_file = {s.file: s for s in processed}
    if len(by_file) != len(processed):
        raise SplitMismatch("two Processed files share a base name: rows cannot be matched to their spectra")
    raw = tuple(s for s in spectra if s.data_type == "RAW")
    return BundleSplit(ds, tuple(by_file[f] for f in ds.files), is_val, is_cal, raw)


def _library_ids(bundle: Any) -> Counter[str] | None:
    """RRUFF ID of every library reference (one per training row), if the bundle has a library."""
    import json

    p = Path(bundle.path) / "library.json"
    if not p.is_file():
        return None
    return Counter(json.loads(p.read_text(encoding="utf-8"))["rruff_ids"])
