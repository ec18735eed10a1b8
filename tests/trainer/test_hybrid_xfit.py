"""The cross-fitted hybrid: inner parts split as the protocol, rows kept in order, real CNNs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.cv import CVConfig, run_cv
from trainer.dataset import from_spectra
from trainer.hybrid_xfit import crossfit_components, inner_folds
from trainer.rruff import select


def test_grouped_parts_keep_specimens_whole_and_cover_every_row() -> None:
    y = np.repeat(np.arange(6), 8)
    groups = np.repeat(np.arange(24), 2)  # four specimens of two spectra per class
    part = inner_folds(y, groups, grouped=True, k=4, seed=0)
    assert set(part) == {0, 1, 2, 3}
    for g in np.unique(groups):
        assert np.unique(part[groups == g]).size == 1
    # Stratified: a class's eight spectra spread over every part, specimens ignored.
    part = inner_folds(y, groups, grouped=False, k=4, seed=0)
    for c in range(6):
        assert np.bincount(part[y == c], minlength=4).tolist() == [2, 2, 2, 2]


def test_crossfit_components_route_each_part_to_its_own_scorer() -> None:
    def scorer(tag: float):  # type: ignore[no-untyped-def]
        return lambda Xq, gap: (Xq[:, :2] + tag, Xq[:, :2] * 0 + gap, Xq[:, :2] * 0 + tag)

    parts = [(np.array([4, 1]), scorer(100.0)), (np.array([0, 2, 3]), scorer(200.0))]
    X = np.arange(10, dtype=np.float64).reshape(5, 2)
    lp, corr, emb = crossfit_components(parts)(X, 0.5)
    assert lp.shape == (5, 2) and np.all(corr == 0.5)
    assert emb[:, 0].tolist() == [100.0, 100.0, 200.0, 200.0, 200.0]
    assert lp[2].tolist() == [204.0, 205.0]  # third row of X, scored by the second part


def test_hybrid_xfit_trains_one_cnn_per_part_and_reuses_the_folds_own(  # type: ignore[no-untyped-def]
    tiny_spectra, tmp_path: Path, monkeypatch, fmcnn_trainings
) -> None:
    import trainer.hybrid_xfit as hx

    monkeypatch.setattr(hx, "INNER_FOLDS", 2)
    trained = fmcnn_trainings
    chosen, counts = select(tiny_spectra, "paper")
    ds = from_spectra(chosen, counts=counts)
    models = tmp_path / "models"
    cfg = CVConfig(models=("fmcnn", "hybrid_xfit", "corr"), folds=2, repeats=1, seed=0)
    results = run_cv(ds, cfg, cache=tmp_path / "a.jsonl", model_dir=models)
    # Per fold: the fold's FMCNN (shared with the fmcnn column) and one per inner part.
    assert len(trained) == 2 * (1 + 2)
    assert len(list(models.glob("*-fmcnn-xfit*.keras"))) == 4
    by = {(r.model, r.fold): r for r in results}
    for fold in range(2):
        xfit = by[("hybrid_xfit", fold)]
        assert xfit.ece is not None
        assert xfit.accuracy >= min(by[("fmcnn", fold)].accuracy, by[("corr", fold)].accuracy) - 0.1


def _without_a_cnn(monkeypatch, n_classes: int) -> None:  # type: ignore[no-untyped-def]
    """The CNN replaced by one that knows nothing (flat probabilities, the spectrum itself as
    its embedding): the fusion's plumbing without TensorFlow."""
    import trainer.hybrid as hy
    import trainer.models as tm

    def embed(model, X):  # type: ignore[no-untyped-def]
        e = np.asarray(X[:, ::8], np.float32)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    monkeypatch.setattr(tm, "fold_fmcnn", lambda *a, **kw: object())
    monkeypatch.setattr(hy, "_probabilities", lambda model, X: np.full((len(X), n_classes), 1.0 / n_classes))
    monkeypatch.setattr(hy, "keras_embeddings", embed)


def test_an_extra_term_is_cross_fitted_on_the_same_rows_as_the_fusion(  # type: ignore[no-untyped-def]
    tiny_spectra, monkeypatch
) -> None:
    import trainer.hybrid as hy
    import trainer.hybrid_xfit as hx

    ds = from_spectra(select(tiny_spectra, "paper")[0])
    _without_a_cnn(monkeypatch, ds.n_classes)
    test = np.isin(ds.groups, np.unique(ds.groups)[::4])
    label_of = {x.tobytes(): int(c) for x, c in zip(ds.X, ds.y, strict=True)}
    calls: list[int] = []

    def oracle(X_tr, y_tr, X_te, n, seed):  # type: ignore[no-untyped-def]
        # Never trained on what it scores (checked), and it names every row's true class, so a
        # row scored out of order would show up as a disagreement with the fit's labels.
        assert not {x.tobytes() for x in X_tr} & {x.tobytes() for x in X_te}
        calls.append(len(X_te))
        return np.eye(n)[[label_of[x.tobytes()] for x in X_te]]

    seen = {}
    real_fit = hy.fit_extra_weight

    def spy(s, x, y):  # type: ignore[no-untyped-def]
        seen.update(x=x, y=y)
        return real_fit(s, x, y)

    monkeypatch.setattr(hy, "fit_extra_weight", spy)
    p = hx.hybrid_xfit_scores(
        ds.X[~test], ds.y[~test], ds.X[test], ds.n_classes, 0, groups=ds.groups[~test], extra_term=oracle
    )
    # One fit per inner part, then one on the whole training fold for the test fold.
    assert calls == [
        *[
            int((hx.inner_folds(ds.y[~test], ds.groups[~test], True, hx.INNER_FOLDS, 0) == k).sum())
            for k in range(hx.INNER_FOLDS)
        ],
        int(test.sum()),
    ]
    assert seen["x"].shape[0] == int((~test).sum())
    assert (seen["x"].argmax(axis=1) == seen["y"]).all()
    assert np.allclose(p.sum(axis=1), 1.0)
    assert (p.argmax(axis=1) == ds.y[test]).all()  # the oracle term carried the label
