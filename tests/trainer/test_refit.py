"""`trainer refit-fusion`: the fusion of an exported bundle re-fitted on its own calibration
specimens, recovered from the manifest; only manifest.json changes, a wrong split is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TINY_MINERALS

ONE = ((200, 0, False),)


def _split(spectra: list[Any]) -> tuple[Any, np.ndarray, np.ndarray, dict[str, Any]]:
    """The dataset as `trainer train --minerals ...` builds it (selection first, then the
    minerals), its (held-out, calibration) masks and the manifest `training` section."""
    from trainer.dataset import from_spectra
    from trainer.fmcnn import TrainConfig, holdout_rows
    from trainer.rruff import select

    chosen, counts = select(spectra, "paper")
    ds = from_spectra([s for s in chosen if s.mineral in TINY_MINERALS], counts=counts)
    cfg = TrainConfig(seed=0, val_split="specimen")
    is_val, is_cal = holdout_rows(ds.y, ds.groups, cfg, 0.2)
    info = {
        "selection": "paper",
        "minerals": ",".join(TINY_MINERALS),
        "calib_fraction": 0.2,
        "config": cfg.to_dict(),
        "n_spectra": int(ds.y.size),
        "n_heldout": int(is_val.sum()),
        "n_calibration": int(is_cal.sum()),
    }
    return ds, is_val, is_cal, info


@pytest.fixture(scope="module")
def split_bundle(tiny_model: tuple[Any, Any], rruff_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.export import export_bundle
    from trainer.rruff import load_rruff

    model, _ = tiny_model
    spectra, _ = load_rruff(rruff_path)
    ds, is_val, is_cal, info = _split(spectra)
    out = tmp_path_factory.mktemp("refit") / "b"
    export_bundle(
        model,
        ds.subset(np.flatnonzero(~is_val & ~is_cal)),
        ds.subset(np.flatnonzero(is_val)),
        out,
        name="t",
        training_info=info,
        calibration_candidates=ONE,
        parity_min=0.0,
        calibration_set=ds.subset(np.flatnonzero(is_cal)),
    )
    return out


def test_refit_rewrites_the_fusion_and_keeps_the_bundle_valid(split_bundle: Path, rruff_path: Path) -> None:
    from edge.bundle import load_bundle
    from trainer.refit import refit_fusion

    before = json.loads((split_bundle / "manifest.json").read_text())
    bytes_before = {f.name: f.read_bytes() for f in split_bundle.iterdir() if f.name != "manifest.json"}
    fusion = refit_fusion(split_bundle, rruff_path)
    after = json.loads((split_bundle / "manifest.json").read_text())
    assert after["fusion"] == fusion
    assert fusion["fitted_on"].startswith(f"{before['training']['n_calibration']} calibration spectra")
    assert fusion["heldout"]["n"] == before["training"]["n_heldout"] > 0
    assert 0.0 <= fusion["heldout"]["ece"] <= 1.0 and fusion["temperature"] > 0
    # Nothing but the manifest was touched, and the bundle still verifies.
    assert {f.name: f.read_bytes() for f in split_bundle.iterdir() if f.name != "manifest.json"} == bytes_before
    assert after["files"] == before["files"]
    load_bundle(split_bundle)
    # The noisy-spectrum fit ran on emulated readouts of the calibration specimens: either a
    # second parameter set with its SNR threshold, or the reason there is none.
    noisy = after["library"]["fit"]["noisy"]
    assert noisy["n_spectra"] == before["training"]["n_calibration"] and noisy["n_readouts"] > 0
    if noisy["chosen"] is None:
        assert "noisy" not in fusion
    else:
        assert fusion["noisy_below_snr"] == noisy["chosen"]["noisy_below_snr"] > 0
        assert fusion["noisy"]["temperature"] > 0


def test_refit_refuses_data_that_do_not_reproduce_the_split(split_bundle: Path, rruff_path: Path) -> None:
    from trainer.errors import ExportError
    from trainer.refit import refit_fusion

    path = split_bundle / "manifest.json"
    m = json.loads(path.read_text())
    m["training"]["n_calibration"] += 1  # as if another copy of RRUFF had one more spectrum
    path.write_text(json.dumps(m))
    text = path.read_text()
    with pytest.raises(ExportError, match="does not reproduce this bundle's split"):
        refit_fusion(split_bundle, rruff_path)
    assert path.read_text() == text


def test_bundle_split_takes_loaded_spectra_and_a_spec(tiny_spectra: list[Any], tmp_path: Path) -> None:
    """Already-read spectra are split as they are (`data` is not read again: here it does not
    exist), and `spec` changes the rows' preprocessing, not the split."""
    from dataclasses import replace

    from edge.preprocess import PreprocessSpec
    from trainer.errors import ExportError
    from trainer.refit import bundle_split

    ds0, val0, cal0, info = _split(tiny_spectra)
    manifest = {"training": info}
    missing = tmp_path / "no-rruff-here"
    ds, is_val, is_cal = bundle_split(manifest, missing, spectra=tiny_spectra)
    assert ds.files == ds0.files and (is_val == val0).all() and (is_cal == cal0).all()
    assert is_val.any() and is_cal.any() and ds.spec == PreprocessSpec()
    coarse = replace(PreprocessSpec(), grid_step_cm1=2.0, grid_n=680)  # the same 150-1509 cm-1 range
    ds2, val2, cal2 = bundle_split(manifest, missing, spectra=tiny_spectra, spec=coarse)
    assert ds2.spec == coarse and ds2.X.shape == (ds.y.size, 680)
    assert ds2.files == ds.files and (val2 == is_val).all() and (cal2 == is_cal).all()
    # One chosen spectrum fewer is another split: refused, naming the data it was read from.
    fewer = [s for s in tiny_spectra if s.file != ds.files[0]]
    with pytest.raises(ExportError, match="no-rruff-here does not reproduce"):
        bundle_split(manifest, missing, spectra=fewer)
