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


def _fake_comps(X0, y, n, clean_gain_at, shifted_loss_at):  # type: ignore[no-untyped-def]
    """comps(X, gap): the CNN right on a fraction of the rows that depends on the gap and on
    whether the rows are the unshifted ones (X0) or their moved copies."""

    def comps(X, gap):  # type: ignore[no-untyped-def]
        right = 0.6
        if X is X0:
            right += 0.2 if gap >= clean_gain_at else 0.0
        else:
            right -= 0.3 if gap >= shifted_loss_at else 0.0
        k = int(right * y.size)
        pred = np.where(np.arange(y.size) < k, y, (y + 1) % n)
        lp = np.log(np.where(np.eye(n)[pred] > 0, 0.9, 0.1 / (n - 1)))
        return lp, np.zeros((y.size, n)), None

    return comps


def test_gate_is_chosen_for_clean_accuracy_within_the_shift_budget() -> None:
    from trainer.hybrid import GAP_GRID, fit_gated_fusion

    n = 5
    y = np.arange(200) % n
    X0 = np.random.default_rng(0).random((200, 40)).astype(np.float32)
    # Gating from 0.02 on gains clean accuracy and costs nothing moved: the smallest such gap.
    params, info = fit_gated_fusion(_fake_comps(X0, y, n, 0.02, 9.0), X0, y)
    assert params.calibrated_gap == 0.02 and [t["gap"] for t in info["calibrated_gap_tried"]] == list(GAP_GRID)
    # The same gain, but every gap that gains also loses 0.3 on moved spectra: no gate.
    params, _ = fit_gated_fusion(_fake_comps(X0, y, n, 0.02, 0.0), X0, y)
    assert params.calibrated_gap == -1.0
    # Nothing gained anywhere: no gate (ties go to the smaller gap).
    params, _ = fit_gated_fusion(_fake_comps(X0, y, n, 9.0, 9.0), X0, y)
    assert params.calibrated_gap == -1.0


def test_gated_library_scores_use_zero_lag_on_a_calibrated_axis(tiny_spectra) -> None:  # type: ignore[no-untyped-def]
    from trainer.hybrid import library_scores

    ds, tr, va = _split(tiny_spectra)
    lib = library_from_dataset(ds, tr)
    X = ds.X[va[:10]]
    corr, _xc, moved = library_scores(lib, X, ds.n_classes, 3, calibrated_gap=1.0)  # always calibrated
    assert not moved.any()
    zero = np.stack([lib.per_class(lib.search(x)[2], ds.n_classes) for x in X])
    assert np.allclose(corr, zero)
    free = library_scores(lib, X, ds.n_classes, 3)[0]
    assert np.all(free >= corr - 1e-6)


def test_extra_term_is_weighted_only_when_it_carries_the_label() -> None:
    # The experimental extra evidence term (bench/hybrid_svm.py): a fused logit that cannot tell
    # two classes apart plus a term that can gets a positive weight; a constant term gets none.
    from trainer.hybrid import fit_extra_weight

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    s = np.where(np.isin(np.arange(4), (0, 1)), 2.0, 0.0) + 3.0 * np.eye(4)[y] * (y >= 2)[:, None]
    # s knows classes 2 and 3, but ties 0 with 1
    informative = np.eye(4)[y] + rng.normal(0, 0.1, (200, 4))
    w, t = fit_extra_weight(s, informative, y)
    assert w > 0 and t > 0
    w0, _ = fit_extra_weight(s, np.zeros((200, 4)), y)
    assert w0 == 0.0
