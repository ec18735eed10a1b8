"""Mixtures on real RRUFF spectra: a 50/50 quartz+calcite spot names both; a pure one names one.

Also the pieces of the fit: the vectorised pair NNLS and reference columns against their
plain forms, the residual (matching pursuit) stage, each condition of the criterion, and
manifests written before a parameter existed."""

from __future__ import annotations

import numpy as np
import pytest

from edge.mixture import MixtureParams, _columns, _shifted, fit_mixture, nnls, pair_fits

UNGATED = MixtureParams(min_gain=-np.inf, min_excess=0.0, min_fraction=0.0)


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    from tests.trainer.conftest import TINY_MINERALS, require_rruff
    from trainer.dataset import from_spectra
    from trainer.library_build import library_from_dataset
    from trainer.rruff import load_rruff, select

    spectra, _ = load_rruff(require_rruff(), minerals=set(TINY_MINERALS))
    ds = from_spectra(select(spectra, "paper")[0])
    held = np.isin(ds.groups, np.unique(ds.groups)[::4])
    return ds, library_from_dataset(ds, np.flatnonzero(~held)), np.flatnonzero(held)


def _mix(ds, a: str, b: str, f: float, k: int = 0):  # type: ignore[no-untyped-def]
    """f * (k-th held-out spectrum of a) + (1 - f) * (of b), max-normalised."""
    _, _, held = ds
    d = ds[0]
    i = held[d.y[held] == d.labels.index(a)][k]
    j = held[d.y[held] == d.labels.index(b)][k]
    x = f * d.X[i] + (1 - f) * d.X[j]
    return (x / x.max()).astype(np.float32)


def test_two_minerals_named_with_fractions(data) -> None:  # type: ignore[no-untyped-def]
    _ds, lib, _held = data
    x = _mix(data, "Quartz", "Calcite", 0.6)
    sim, lag = lib.similarities(x)
    fit = fit_mixture(x, lib, sim, lag, MixtureParams())
    assert fit.components is not None
    assert {m for m, _ in fit.components} == {"Quartz", "Calcite"}
    assert sum(f for _m, f in fit.components) == pytest.approx(1.0)
    assert fit.components[0][1] >= fit.components[1][1]
    assert fit.pair_residual < fit.single_residual and 0.0 <= fit.excess <= 1.0


def test_pure_spectra_are_rarely_called_mixtures(data) -> None:  # type: ignore[no-untyped-def]
    ds, lib, held = data
    called = 0
    for i in held:
        sim, lag = lib.similarities(ds.X[i])
        called += fit_mixture(ds.X[i], lib, sim, lag, MixtureParams()).components is not None
    assert called / held.size <= 0.15


def test_the_second_mineral_comes_from_the_residual(data) -> None:  # type: ignore[no-untyped-def]
    """One first-stage class and one residual class: the minor mineral (30 %) is then named
    only if searching the library with the residual finds it. The mixture's own similarity
    ranking (the next class after the major one) would name it far less often."""
    import itertools

    ds, lib, held = data
    minerals = [m for m in ds.labels if (ds.y[held] == ds.labels.index(m)).any()]
    one_each = MixtureParams(n_candidates=1, n_residual_candidates=1, min_gain=-np.inf, min_fraction=0.0)
    named = by_own_ranking = n = 0
    for a, b in itertools.permutations(minerals, 2):
        x = _mix(data, a, b, 0.7)
        sim, lag = lib.similarities(x)
        fit = fit_mixture(x, lib, sim, lag, one_each)
        named += fit.pair is not None and set(fit.pair) == {a, b}
        own = lib.per_class(sim)
        top = int(np.argmax(own))
        own[top] = -np.inf
        by_own_ranking += {ds.labels[top], ds.labels[int(np.argmax(own))]} == {a, b}
        n += 1
    assert n >= 30
    assert named >= 0.9 * n
    assert by_own_ranking <= 0.6 * n
    no_residual = fit_mixture(x, lib, sim, lag, MixtureParams(n_candidates=1, n_residual_candidates=0))
    assert no_residual.pair is None and no_residual.components is None  # one class: no pair at all


def test_each_condition_of_the_criterion_gates_the_answer(data) -> None:  # type: ignore[no-untyped-def]
    _ds, lib, _held = data
    x = _mix(data, "Forsterite", "Calcite", 0.55)
    sim, lag = lib.similarities(x)
    fit = fit_mixture(x, lib, sim, lag, UNGATED)
    assert fit.pair is not None and fit.pair_fractions is not None and fit.components is not None
    eps = 1e-6
    at = {"min_gain": fit.gain, "min_excess": fit.excess, "min_fraction": min(fit.pair_fractions) - 1e-4}
    just_below = MixtureParams(**{k: v - eps for k, v in at.items()})
    assert fit_mixture(x, lib, sim, lag, just_below).components == fit.components
    for key in at:
        above = MixtureParams(**{k: (v + 2e-4 if k == key else v - eps) for k, v in at.items()})
        assert fit_mixture(x, lib, sim, lag, above).components is None, key


def test_pair_fits_equal_two_column_nnls() -> None:
    rng = np.random.default_rng(1)
    C = np.abs(rng.normal(size=(7, 120)))
    C[3] = 2 * C[1]  # a collinear pair: no interior solution
    x = 0.6 * C[0] + 0.3 * C[4] + rng.normal(0, 0.05, 120)
    i, j, r2, w = pair_fits(C @ C.T, C @ x, float(x @ x))
    assert i.size == 21
    interior = 0
    for p in range(i.size):
        wp, r = nnls(C[[i[p], j[p]]].T, x)
        if np.isfinite(r2[p]):
            interior += 1
            assert np.sqrt(r2[p]) == pytest.approx(r, rel=1e-9)
            np.testing.assert_allclose(w[p], wp, rtol=1e-7)
        else:  # NNLS puts one weight at 0 (or the columns are collinear)
            assert (wp <= 0).any() or {i[p], j[p]} == {1, 3}
    assert 0 < interior < i.size
    best = int(np.argmin(r2))
    assert {int(i[best]), int(j[best])} == {0, 4}


def test_columns_are_the_shifted_references(data) -> None:  # type: ignore[no-untyped-def]
    _ds, lib, _held = data
    rows = [5, 0, len(lib) - 1, 17]
    lags = [0, 7, -20, 20]
    got = _columns(lib, rows, lags)
    want = np.stack([_shifted(lib.reference(r), s) for r, s in zip(rows, lags, strict=True)])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_manifest_values_and_older_manifests() -> None:
    assert MixtureParams.from_manifest({}) == MixtureParams()
    old = MixtureParams.from_manifest({"mixture": {"n_candidates": 4, "min_gain": 0.3, "min_fraction": 0.1}})
    assert (old.n_candidates, old.min_gain, old.min_fraction) == (4, 0.3, 0.1)
    assert old.min_excess == MixtureParams().min_excess and old.refs_per_class == MixtureParams().refs_per_class
    new = MixtureParams.from_manifest({"mixture": {"min_excess": "0.6", "refs_per_class": 3.0, "later_key": 1}})
    assert new.min_excess == 0.6 and new.refs_per_class == 3 and isinstance(new.refs_per_class, int)


def test_closed_form_nnls_equals_scipy() -> None:
    """edge.mixture.nnls (no SciPy on the device) gives scipy.optimize.nnls's answer."""
    from scipy.optimize import nnls as scipy_nnls

    rng = np.random.default_rng(0)
    for trial in range(300):
        k = 1 + trial % 2
        A = np.abs(rng.normal(size=(200, k)))
        if trial % 7 == 0 and k == 2:
            A[:, 1] = A[:, 0] * 2  # collinear columns
        x = A @ rng.normal(size=k) + rng.normal(0, 0.3, 200)  # weights of either sign
        w, r = nnls(A, x)
        ws, rs = scipy_nnls(A, x)
        assert r == pytest.approx(rs, rel=1e-9, abs=1e-9)
        if trial % 7:
            np.testing.assert_allclose(w, ws, atol=1e-8)


def test_a_library_with_another_view_is_fitted_with_pearson(data) -> None:  # type: ignore[no-untyped-def]
    """NNLS mixes spectra linearly: the fit ranks candidates by Pearson whatever the library's
    correlation view, so a sqrt_d1 library gives the very fit of the Pearson one."""
    from edge.library import SearchParams, build_library

    _ds, lib, _held = data
    v = build_library(
        lib.minerals, lib.class_idx, list(lib.rruff_ids), lib.laser_nm, lib.spectra, params=SearchParams(view="sqrt_d1")
    )
    p = build_library(lib.minerals, lib.class_idx, list(lib.rruff_ids), lib.laser_nm, lib.spectra)
    x = _mix(data, "Quartz", "Calcite", 0.5)
    got = fit_mixture(x, v, *v.similarities(x), UNGATED)  # the view's similarities are not used
    want = fit_mixture(x, p, *p.similarities(x), UNGATED)
    assert got == want and got.components is not None
    assert {m for m, _f in got.components} == {"Quartz", "Calcite"}
