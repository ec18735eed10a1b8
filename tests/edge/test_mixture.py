"""Mixtures on real RRUFF spectra: a 50/50 quartz+calcite spot names both; a pure one names one."""

from __future__ import annotations

import numpy as np
import pytest

from edge.mixture import MixtureParams, fit_mixture


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


def test_two_minerals_named_with_fractions(data) -> None:  # type: ignore[no-untyped-def]
    ds, lib, held = data
    q = held[ds.y[held] == ds.labels.index("Quartz")][0]
    c = held[ds.y[held] == ds.labels.index("Calcite")][0]
    x = 0.6 * ds.X[q] + 0.4 * ds.X[c]
    x = (x / x.max()).astype(np.float32)
    sim, lag = lib.similarities(x)
    fit = fit_mixture(x, lib, sim, lag, MixtureParams())
    assert fit.components is not None
    assert {m for m, _ in fit.components} == {"Quartz", "Calcite"}
    assert sum(f for _m, f in fit.components) == pytest.approx(1.0)
    assert fit.components[0][1] >= fit.components[1][1]


def test_pure_spectra_are_rarely_called_mixtures(data) -> None:  # type: ignore[no-untyped-def]
    ds, lib, held = data
    called = 0
    for i in held:
        sim, lag = lib.similarities(ds.X[i])
        called += fit_mixture(ds.X[i], lib, sim, lag, MixtureParams()).components is not None
    assert called / held.size <= 0.15


def test_closed_form_nnls_equals_scipy() -> None:
    """edge.mixture.nnls (no SciPy on the device) gives scipy.optimize.nnls's answer."""
    from scipy.optimize import nnls as scipy_nnls

    from edge.mixture import nnls

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
