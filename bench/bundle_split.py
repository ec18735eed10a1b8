"""The shipped bundle's own specimen split, rebuilt from its manifest and checked against it.

`trainer train`/`trainer export` split the selection's specimens (RRUFF IDs) into training,
held-out (early stopping) and calibration sets before training (docs/bundle.md, "Held-out
and calibration specimens"); only the training rows are in the bundle's reference library.
The split is deterministic (trainer.fmcnn.holdout_rows, seeded by the training config), so a
bench can rebuild it from the RRUFF copy and the manifest's `training` section instead of
needing the trainer's data.npz. `bundle_split` refuses to return a split whose counts differ
from the manifest's, or whose training specimens are not the library's.

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


def train_config(training: dict[str, Any]) -> Any:
    """trainer.fmcnn.TrainConfig from a manifest's `training.config` (arch as ArchConfig)."""
    from trainer.fmcnn import ArchConfig, TrainConfig

    cfg = dict(training["config"])
    cfg["arch"] = ArchConfig(**cfg["arch"])
    return TrainConfig(**cfg)


def bundle_split(bundle: Any, data: Path | None = None, spectra: list[Any] | None = None) -> BundleSplit:
    """Rebuild `bundle`'s (train, held-out, calibration) split; raises SplitMismatch.

    `data`: RRUFF folder or zip (default: the trainer's default copy, which is where the
    shipped bundle was trained from: manifest `training.data`). `spectra`: already loaded
    RRUFF spectra (skips the ~15 s read)."""
    from trainer.dataset import from_spectra
    from trainer.fmcnn import holdout_rows
    from trainer.rruff import DEFAULT_RRUFF_PATH, load_rruff, select

    training = bundle.manifest["training"]
    if spectra is None:
        spectra, _report = load_rruff(data or DEFAULT_RRUFF_PATH)
    chosen, counts = select(spectra, training["selection"])
    if training.get("minerals"):
        wanted = {m.strip() for m in str(training["minerals"]).split(",") if m.strip()}
        chosen = [s for s in chosen if s.mineral in wanted]
    ds = from_spectra(chosen, bundle.spec, counts=counts)
    if ds.labels != bundle.labels:
        raise SplitMismatch(f"selection gives {len(ds.labels)} classes, the bundle has {len(bundle.labels)}")
    is_val, is_cal = holdout_rows(ds.y, ds.groups, train_config(training), float(training["calib_fraction"]))
    got = {
        "n_spectra": int(ds.y.size),
        "n_train": int((~is_val & ~is_cal).sum()),
        "n_heldout": int(is_val.sum()),
        "n_calibration": int(is_cal.sum()),
    }
    want = {k: training.get(k) for k in got}
    if got != want:
        raise SplitMismatch(f"rebuilt split {got} differs from the manifest's {want}")
    lib_ids = _library_ids(bundle)
    if lib_ids is not None and Counter(ds.groups[~is_val & ~is_cal].tolist()) != lib_ids:
        raise SplitMismatch("the rebuilt training rows are not the specimens of the bundle's library")
    by_file = {s.file: s for s in chosen}
    raw = tuple(s for s in spectra if s.data_type == "RAW")
    return BundleSplit(ds, tuple(by_file[f] for f in ds.files), is_val, is_cal, raw)


def _library_ids(bundle: Any) -> Counter[str] | None:
    """RRUFF ID of every library reference (one per training row), if the bundle has a library."""
    import json

    p = Path(bundle.path) / "library.json"
    if not p.is_file():
        return None
    return Counter(json.loads(p.read_text(encoding="utf-8"))["rruff_ids"])
