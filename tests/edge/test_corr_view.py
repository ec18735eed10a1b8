"""Correlation views: the slope filter is Savitzky-Golay's, views are standardised, and the
"pearson" view is Pearson's r."""

from __future__ import annotations

import numpy as np
import pytest

from edge.corr_view import SLOPE_HALF_WINDOW, SLOPE_KERNEL, correlations, slope, view_matrix, view_parts


def _spectra(n: int = 6, g: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.arange(g)
    X = np.zeros((n, g))
    for i in range(n):
        for _ in range(5):
            c, w, h = rng.uniform(20, g - 20), rng.uniform(3, 12), rng.uniform(0.1, 1)
            X[i] += h * np.exp(-0.5 * ((grid - c) / w) ** 2)
        X[i] += 0.01 * rng.normal(size=g)
    return (X / X.max(axis=1, keepdims=True)).astype(np.float32)


def test_slope_is_the_savitzky_golay_first_derivative() -> None:
    from scipy.signal import savgol_coeffs, savgol_filter

    w = 2 * SLOPE_HALF_WINDOW + 1
    np.testing.assert_allclose(SLOPE_KERNEL, savgol_coeffs(w, 2, deriv=1, use="dot"), atol=1e-7)
    X = _spectra()
    h = SLOPE_HALF_WINDOW
    ours = slope(X)[:, h:-h]  # the edges are zero-padded here, polynomial-fitted in SciPy
    np.testing.assert_allclose(ours, savgol_filter(X, w, 2, deriv=1, axis=1)[:, h:-h], atol=1e-5)


@pytest.mark.parametrize("view", ["pearson", "sqrt_d1"])
def test_views_are_correlations(view: str) -> None:
    X = _spectra()
    for part in view_parts(X, view):  # type: ignore[arg-type]
        np.testing.assert_allclose(part.mean(axis=1), 0, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(part, axis=1), 1, atol=1e-5)
    r = correlations(X, X, view)  # type: ignore[arg-type]
    np.testing.assert_allclose(np.diag(r), 1, atol=1e-5)
    np.testing.assert_allclose(r, r.T, atol=1e-6)
    assert np.all(np.abs(r) <= 1 + 1e-5)
    assert view_matrix(X, view).shape == (len(X), len(view_parts(X[:1], view)) * X.shape[1])  # type: ignore[arg-type]


def test_pearson_view_is_pearsons_r_and_sqrt_d1_is_the_mean_of_its_two_parts() -> None:
    X = _spectra()
    np.testing.assert_allclose(correlations(X, X, "pearson"), np.corrcoef(X), atol=1e-5)
    s = np.sqrt(np.maximum(X, 0))
    want = (np.corrcoef(s) + np.corrcoef(slope(s))) / 2
    np.testing.assert_allclose(correlations(X, X, "sqrt_d1"), want, atol=1e-5)


def test_sqrt_d1_counts_weak_bands_that_pearson_hardly_sees() -> None:
    # Two spectra share a dominant band and differ in a weak one: Pearson calls them nearly
    # the same, the square-root view (where the weak band is a third as tall, not a tenth) less so.
    g = np.arange(500, dtype=np.float64)
    band = lambda c, h: h * np.exp(-0.5 * ((g - c) / 5) ** 2)  # noqa: E731
    a = band(200, 1.0) + band(350, 0.1)
    b = band(200, 1.0) + band(380, 0.1)
    X = np.stack([a, b]).astype(np.float32)
    assert correlations(X, X, "pearson")[0, 1] > 0.98
    assert correlations(X, X, "sqrt_d1")[0, 1] < correlations(X, X, "pearson")[0, 1] - 0.05  # 0.90 vs 0.99


def test_unknown_view_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown correlation view"):
        view_parts(_spectra(), "log")  # type: ignore[arg-type]
