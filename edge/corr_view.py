"""What the correlation search compares: the spectrum itself, or its square-root and slope view.

Search-match (RRUFF, CrystalSleuth; edge.library) scores a reference by the Pearson
correlation of two max-normalised spectra. That lets the strongest band dominate: a mineral
with one intense band and a handful of weak ones correlates well with anything that shares the
intense band, and members of a solid-solution series differ mostly in their weaker bands and
in where each band sits.

The "sqrt_d1" view compares two things instead, each standardised, with equal weight:

- the square root of the spectrum (negative values from baseline removal clipped to 0). For
  counts with Poisson (shot) noise the square root makes the noise the same at every band
  height (the variance-stabilising transform), and it compresses the range between strong and
  weak bands, so the weak bands that tell similar minerals apart count;
- the slope of that square root (a 9-point Savitzky-Golay first derivative, quadratic fit, on
  the 1 cm-1 model grid). A slope is zero on a flat background and changes sign at every
  band maximum, so it is sensitive to where a band sits and blind to a slowly varying
  residual background.

The correlation of two views is then (r_sqrt + r_slope) / 2: still in [-1, 1], and 1 only for
the same spectrum. bench/corr_views.py measured it (2026-12-08) against plain Pearson and the
other candidate views, each chosen per CV fold by leave-out accuracy on its training fold only.

"pearson" is the view of every bundle fitted before it (the manifest's fusion `corr_view`).
Pure NumPy, no state.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

CorrView = Literal["pearson", "sqrt_d1"]
CORR_VIEWS: tuple[CorrView, ...] = ("pearson", "sqrt_d1")

#: Savitzky-Golay first derivative, 9-point window, quadratic (= linear) fit: the weights are
#: k / sum(k^2) for k = -4..4 (tests/edge/test_corr_view.py checks them against SciPy).
SLOPE_HALF_WINDOW = 4
_K = np.arange(-SLOPE_HALF_WINDOW, SLOPE_HALF_WINDOW + 1, dtype=np.float64)
SLOPE_KERNEL = (_K / float(_K @ _K)).astype(np.float32)


def standardize(x: NDArray[np.floating]) -> NDArray[np.float32]:
    """Rows centred and scaled to unit norm (flat rows: centred, left at zero)."""
    z = np.asarray(x, np.float32)
    z = z - z.mean(axis=-1, keepdims=True)
    n = np.linalg.norm(z, axis=-1, keepdims=True)
    return (z / np.where(n == 0, 1.0, n)).astype(np.float32)


def slope(x: NDArray[np.floating]) -> NDArray[np.float32]:
    """First derivative per grid point along the last axis (edges: the window is zero-padded)."""
    x = np.asarray(x, np.float32)
    h = SLOPE_HALF_WINDOW
    pad = np.zeros(x.shape[:-1] + (x.shape[-1] + 2 * h,), np.float32)
    pad[..., h : h + x.shape[-1]] = x
    out = np.zeros_like(x)
    # y[i] = sum_k w_k x[i + k]: a correlation with the kernel, one shifted add per weight
    # (vectorised over rows; 9 adds beat np.convolve per row for a library of thousands).
    for j, w in enumerate(SLOPE_KERNEL):
        if w:
            out += w * pad[..., j : j + x.shape[-1]]
    return out


def view_parts(x: NDArray[np.floating], view: CorrView) -> tuple[NDArray[np.float32], ...]:
    """The standardised parts whose correlations the view averages, each (..., grid_n).

    The correlation of two spectra under `view` is mean_p (part_p(a) . part_p(b)); each part
    can be moved along the grid on its own (edge.library's lag search)."""
    if view == "pearson":
        return (standardize(x),)
    if view == "sqrt_d1":
        s = np.sqrt(np.maximum(np.asarray(x, np.float32), 0.0))
        return standardize(s), standardize(slope(s))
    raise ValueError(f"unknown correlation view {view!r}; known: {', '.join(CORR_VIEWS)}")


def view_matrix(x: NDArray[np.floating], view: CorrView) -> NDArray[np.float32]:
    """Rows whose dot products are the view's zero-lag correlations: the parts side by side,
    each divided by sqrt(number of parts). Shape (n, parts * grid_n)."""
    parts = view_parts(np.atleast_2d(np.asarray(x, np.float32)), view)
    return (np.concatenate(parts, axis=-1) / np.float32(np.sqrt(len(parts)))).astype(np.float32)


def correlations(a: NDArray[np.floating], b: NDArray[np.floating], view: CorrView) -> NDArray[np.float64]:
    """Zero-lag correlation of every row of `a` with every row of `b` under `view`, (na, nb)."""
    return view_matrix(a, view).astype(np.float64) @ view_matrix(b, view).astype(np.float64).T
