"""Trainer fixtures: real RRUFF subsets from the shared copy, and a tiny trained FMCNN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rruff_data import require_rruff as _require_rruff

from trainer.rruff import RamanSpectrum, load_rruff

TINY_MINERALS = ("Quartz", "Calcite", "Gypsum", "Forsterite", "Diopside", "Rutile", "Anhydrite", "Dolomite")


def require_rruff() -> Path:
    return _require_rruff()


@pytest.fixture(scope="session")
def rruff_path() -> Path:
    return require_rruff()


@pytest.fixture(scope="session")
def tiny_spectra(rruff_path: Path) -> list[RamanSpectrum]:
    spectra, report = load_rruff(rruff_path, minerals=set(TINY_MINERALS))
    assert report.n_kept > 50
    return spectra


@pytest.fixture(scope="session")
def tiny_model(tiny_spectra: list[RamanSpectrum]) -> tuple[Any, Any]:
    """A real FMCNN trained for a few seconds on 8 minerals from RRUFF (paper filters)."""
    pytest.importorskip("tensorflow")
    from trainer.dataset import from_spectra
    from trainer.fmcnn import TrainConfig, train_fmcnn
    from trainer.rruff import select

    chosen, _ = select(tiny_spectra, "paper")
    ds = from_spectra(chosen)
    model, _hist = train_fmcnn(
        ds.X, ds.y, ds.n_classes, TrainConfig(epochs=25, patience=25, seed=0, val_split="spectrum", monitor="val_loss")
    )
    return model, ds


@pytest.fixture
def fmcnn_trainings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every real FMCNN training of the test, counted (one entry each): who trains what, and
    what a model directory saves."""
    pytest.importorskip("tensorflow")
    import trainer.fmcnn as fm

    trained: list[int] = []
    real_train = fm.train_fmcnn

    def counting(*a: Any, **kw: Any) -> Any:
        trained.append(1)
        return real_train(*a, **kw)

    monkeypatch.setattr(fm, "train_fmcnn", counting)
    return trained
