"""Export-time choice of the unknown score: held-out known vs the same spectra with their mineral removed."""

from __future__ import annotations

import numpy as np
import pytest

from edge.fusion import fuse
from trainer.dataset import from_spectra
from trainer.hybrid import _auroc, _without_true_class, corr_per_class, fit_fusion
from trainer.library_build import library_from_dataset
from trainer.rruff import select


def test_auroc_is_mann_whitney() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    k, u = rng.normal(1, 1, 50), np.round(rng.normal(0, 1, 40), 1)
    k[:5] = u[:5]  # ties
    y = np.r_[np.ones(50), np.zeros(40)]
    assert _auroc(k, u) == pytest.approx(roc_auc_score(y, np.r_[k, u]))


def test_removing_the_true_class_renormalises_the_cnn_and_hides_its_references() -> None:
    log_p = np.log(np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]))
    corr = np.array([[0.9, 0.5, 0.2], [0.1, 0.3, 0.8]])
    lp, c, e = _without_true_class(log_p, corr, corr.copy(), np.array([0, 2]))
    np.testing.assert_allclose(np.exp(lp[0, 1:]), [0.75, 0.25])
    np.testing.assert_allclose(np.exp(lp[1, :2]), [0.5, 0.5])
    assert np.isneginf(c[0, 0]) and np.isneginf(c[1, 2]) and np.isneginf(e[1, 2])  # type: ignore[index]
    assert c[0, 1] == 0.5


def test_fit_chooses_a_score_and_keeps_95_percent(tiny_spectra) -> None:  # type: ignore[no-untyped-def]
    ds = from_spectra(select(tiny_spectra, "paper")[0])
    ids = np.unique(ds.groups)
    held = np.isin(ds.groups, ids[::3])
    tr, va = np.flatnonzero(~held), np.flatnonzero(held)
    lib = library_from_dataset(ds, tr)
    corr = corr_per_class(lib, ds.X[va], ds.n_classes)
    flat = np.full((va.size, ds.n_classes), np.log(1.0 / ds.n_classes))
    params, info = fit_fusion(flat, corr, ds.y[va])
    assert params.unknown_score in ("top_p", "top_logit")
    aur = info["unknown_score_auroc_class_removed"]
    assert aur[params.unknown_score] == max(aur.values()) and aur[params.unknown_score] > 0.5
    kept = np.mean([not fuse(params, ds.n_classes, flat[i], corr[i]).unknown for i in range(va.size)])
    assert 0.9 <= kept <= 1.0


def test_cv_embeddings_are_the_unit_bottleneck(tiny_spectra) -> None:  # type: ignore[no-untyped-def]
    """`trainer cv --models hybrid` embeds with the model's bottleneck, L2-normalised (as the edge)."""
    pytest.importorskip("keras")
    from trainer.fmcnn import ArchConfig, make_fmcnn
    from trainer.hybrid import emb_per_class, keras_embeddings

    ds = from_spectra(select(tiny_spectra, "paper")[0])
    model = make_fmcnn(ds.X.shape[1], ds.n_classes, ArchConfig())  # untrained: only shapes and norms matter
    E = keras_embeddings(model, ds.X[:20])
    assert E.shape == (20, model.get_layer("bottleneck").output.shape[-1])
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    lib = library_from_dataset(ds, np.arange(20, ds.y.size), embedding=keras_embeddings(model, ds.X[20:]))
    pc = emb_per_class(lib, E, ds.n_classes)
    assert pc.shape == (20, ds.n_classes) and np.nanmax(pc) <= 1.0 + 1e-2
