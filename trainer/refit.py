"""Re-fit the fusion of an exported bundle without retraining (`trainer refit-fusion`).

The fusion (edge.fusion.FusionParams: weights, temperature, unknown threshold) is the only
part of a bundle fitted after the CNN; when its fitting recipe changes, the CNN, its int8
model and the library stay valid. This re-runs that one step on the bundle's own calibration
specimens, recovered from the manifest's "training" section (same data, selection, seed and
split functions as `trainer train`), and measures the fused reliability on its held-out
specimens again. Only manifest.json changes (it is not among the hashed files); the split
must reproduce the manifest's counts exactly, or nothing is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import load_bundle
from edge.classifier import Classifier
from edge.library import SearchParams, load_library
from edge.pipeline import Analyzer, bundle_library
from edge.preprocess import PreprocessSpec
from trainer.dataset import Dataset, from_spectra
from trainer.errors import ExportError
from trainer.fmcnn import TrainConfig, holdout_rows
from trainer.hybrid import fit_hybrid, fit_noisy_fusion, fused_reliability
from trainer.library_build import HYBRID_CORR_VIEW
from trainer.rruff import RamanSpectrum, load_rruff, select


def bundle_split(
    manifest: dict[str, Any],
    data: Path,
    *,
    spectra: list[RamanSpectrum] | None = None,
    spec: PreprocessSpec | None = None,
) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """(dataset, held-out mask, calibration mask) exactly as `trainer train` split it for this
    bundle; raises ExportError when the data do not reproduce the manifest's counts.

    `spectra`: the spectra already read from `data` (a caller that needs them too, e.g. for
    their RAW files, saves the second ~15 s read; `data` then only names them in errors).
    `spec`: preprocess the rows with it (e.g. the bundle's own `edge.bundle.Bundle.spec`)
    instead of the default PreprocessSpec(); the split itself does not depend on it, as long
    as it keeps the same spectra."""
    info = manifest.get("training") or {}
    cfg_d = info.get("config") or {}
    if "calib_fraction" not in info or not cfg_d:
        raise ExportError("the bundle's manifest has no training split (export older than calibration specimens)")
    if spectra is None:
        spectra, _report = load_rruff(data)
    chosen, counts = select(spectra, info.get("selection", "paper"))
    if info.get("minerals"):
        wanted = {m.strip() for m in str(info["minerals"]).split(",") if m.strip()}
        chosen = [s for s in chosen if s.mineral in wanted]
    ds = from_spectra(chosen, spec, counts=counts)
    cfg = TrainConfig(
        seed=int(cfg_d.get("seed", 0)),
        val_split=str(cfg_d.get("val_split", "specimen")),
        val_fraction=float(cfg_d.get("val_fraction", 0.1)),
    )
    is_val, is_cal = holdout_rows(ds.y, ds.groups, cfg, float(info["calib_fraction"]))
    got = {"n_spectra": len(ds.y), "n_heldout": int(is_val.sum()), "n_calibration": int(is_cal.sum())}
    want = {k: info.get(k) for k in got}
    if got != want:
        raise ExportError(f"{data} does not reproduce this bundle's split: {got} vs manifest {want}")
    return ds, is_val, is_cal


def refit_fusion(bundle_dir: str | Path, data: Path, *, noisy: bool = True) -> dict[str, Any]:
    """Re-fit the bundle's fusion on its calibration specimens; returns the new fusion section.

    `noisy`: also fit the parameters for noisy spectra (edge.fusion) on emulated readouts of
    the same calibration specimens (trainer.noisy_fusion)."""
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)  # verifies every hashed file first
    if bundle_library(bundle) is None or "fusion" not in bundle.manifest:
        raise ExportError(f"{bundle_dir} has no reference library and fusion to re-fit")
    # Searched with the current recipe's correlation view, whatever the bundle was fitted with:
    # a re-fit moves an older bundle to it (the library file itself does not change).
    lib = load_library(bundle_dir, grid_n=bundle.spec.grid_n, params=SearchParams(view=HYBRID_CORR_VIEW))
    ds, is_val, is_cal = bundle_split(bundle.manifest, data)
    if tuple(ds.labels) != tuple(bundle.labels):
        raise ExportError(f"{data} gives other classes than the bundle's labels.json")
    clf = Classifier(bundle)
    t_cnn = clf.temperature if clf.temperature is not None else 1.0
    cal = ds.subset(np.flatnonzero(is_cal))
    params, info = fit_hybrid(clf, lib, cal, t_cnn)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["fusion"] = params.to_dict() | {
        "fitted_on": f"{int(is_cal.sum())} calibration spectra, library of {len(lib)} training spectra",
    }
    manifest["library"]["fit"] = info
    _write_manifest(bundle_dir, manifest)
    if noisy:
        fitted_on = manifest["fusion"]["fitted_on"]
        with_noisy, noisy_info = fit_noisy_fusion(bundle_dir, ds.subset(np.flatnonzero(is_cal)), seed=0)
        manifest["fusion"] = with_noisy.to_dict() | {"fitted_on": fitted_on}
        manifest["library"]["fit"]["noisy"] = noisy_info
        _write_manifest(bundle_dir, manifest)
    # Measured with the edge's own identification path on the bundle as now written.
    an = Analyzer(load_bundle(bundle_dir))
    manifest["fusion"]["heldout"] = fused_reliability(an, ds.subset(np.flatnonzero(is_val)))
    _write_manifest(bundle_dir, manifest)
    return dict(manifest["fusion"])


def _write_manifest(bundle_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = bundle_dir / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, bundle_dir / "manifest.json")
