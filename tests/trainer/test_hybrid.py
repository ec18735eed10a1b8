"""Hybrid fitting on real held-out specimens: weights follow the evidence, the threshold keeps 95 %."""

from __future__ import annotations

import numpy as np

from edge.fusion import FusionParams, fuse
from trainer.dataset import from_spectra
from trainer.hybrid import corr_lag_scores, corr_per_class, fit_fusion
from trainer.library_build import library_from_dataset
from trainer.rruff import select


def _split(tiny_spectra):  # type: ignore[no-untyped-def]
    ds = from_spectra(select(tiny_spectra, "paper")[0])
    ids = np.unique(ds.groups)
    held = np.isin(ds.groups, ids[::3])
    return ds, np.flatnonzero(~held), np.flatnonzero(held)


def test_fit_uses_correlation_when_the_cnn_is_uninformative(tiny_spectra) -> None:  # type: ignore[no-untyped-def]
    ds, tr, va = _split(tiny_spectra)
    lib = library_from_dataset(ds, tr)
    corr = corr_per_class(lib, ds.X[va], ds.n_classes)
    flat = np.full((va.size, ds.n_classes), np.log(1.0 / ds.n_classes))
    params, info = fit_fusion(flat, corr, ds.y[va])
    assert params.w_corr > 0
    assert info["heldout_accuracy"] == info["heldout_accuracy_corr"] > 0.8
    kept = np.mean([not fuse(params, ds.n_classes, flat[i], corr[i]).unknown for i in range(va.size)])
    assert 0.9 <= kept <= 1.0


def test_fit_ignores_correlation_when_it_is_noise(tiny_spectra) -> None:  # type: ignore[no-untyped-def]
    ds, _tr, va = _split(tiny_spectra)
    rng = np.random.default_rng(0)
    onehot = np.log(np.where(np.eye(ds.n_classes)[ds.y[va]] > 0, 0.9, 0.1 / (ds.n_classes - 1)))
    params, _ = fit_fusion(onehot, rng.random((va.size, ds.n_classes)), ds.y[va])
    assert params.w_corr == 0.0 and isinstance(params, FusionParams)


def test_corr_lag_cv_model_ranks_held_out_specimens(tiny_spectra) -> None:  # type: ignore[no-untyped-def]
    ds, tr, va = _split(tiny_spectra)
    s = corr_lag_scores(ds.X[tr], ds.y[tr], ds.X[va], ds.n_classes, 0, groups=ds.groups[tr])
    assert (s.argmax(axis=1) == ds.y[va]).mean() > 0.8


def test_hidden_references_are_not_found(tiny_spectra) -> None:  # type: ignore[no-untyped-def]
    """The CV hybrid's calibration search: a spectrum must not find itself (stratified
    protocol) or its specimen (grouped) in the training fold's library."""
    from trainer.hybrid import library_scores

    ds, tr, _va = _split(tiny_spectra)
    lib = library_from_dataset(ds, tr)
    q = tr[:12]
    own = ds.y[q]
    rows = np.arange(q.size)
    seen = library_scores(lib, ds.X[q], ds.n_classes)[0][rows, own]
    assert np.all(seen > 0.999)  # each query is itself a reference
    itself = q[:, None] == tr[None, :]
    no_self = library_scores(lib, ds.X[q], ds.n_classes, hide=itself)[0][rows, own]
    specimen = ds.groups[q][:, None] == ds.groups[tr][None, :]
    no_specimen = library_scores(lib, ds.X[q], ds.n_classes, hide=specimen)[0][rows, own]
    assert np.all(no_self < seen) and np.all(no_specimen <= no_self)
    # Hiding a specimen hides its sibling spectra too: somewhere that must cost similarity.
    assert np.any(no_specimen < no_self)
