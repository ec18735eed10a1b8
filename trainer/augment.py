"""Training-time augmentation of preprocessed spectra from instrument physics (pure NumPy).

Every transform acts on rows already on the PreprocessSpec grid (uniform spacing
`step_cm1`), is vectorised over rows and documents its range and why:

- global Raman-shift error up to +/-25 cm-1 on `shift_fraction` of rows, plus an axis stretch
  up to +/-0.5 %: an uncalibrated or drifted field instrument (wrong laser wavelength, wrong
  spectrograph polynomial) moves every band together; the shipped model lost half its accuracy
  at 10 cm-1 with +/-4 cm-1 augmentation (identification notes);
- smooth per-band relative intensity: a random low-frequency log-gain curve (x0.6-1.6): band
  ratios change with crystal orientation and polarisation, never band positions;
- broadening by a Gaussian of sigma up to 2.5 cm-1: a lower-resolution spectrograph or a wider
  slit than the RRUFF instruments;
- residual baseline: low-order polynomial up to 8 % of the max (fluorescence the rolling-ball
  baseline in preprocessing left behind);
- shot + read noise: sigma^2 = a * x + b^2 (Poisson photon noise grows with the signal, the
  read noise floor does not), up to 2 % of the max at the peak;
- tail truncation: library spectra end anywhere in the last ~20 % of the grid while instrument
  spectra run to the end, so half the rows are zeroed beyond a random grid point in that range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class AugmentConfig:
    step_cm1: float = 1.0  # grid spacing of the PreprocessSpec (shifts are converted to points)
    max_shift_cm1: float = 25.0
    #: Share of rows shifted. 0.5 rather than 0.8: on held-out specimens 0.8 gave 0.647 / 0.572 /
    #: 0.432 at 0 / 10 / 20 cm-1 and 0.5 gave 0.698 / 0.601 / 0.396 (bench/results/fmcnn_arch.md):
    #: the unshifted half keeps the exact band positions most spectra arrive with.
    shift_fraction: float = 0.5
    max_stretch: float = 0.005
    band_gain: tuple[float, float] = (0.6, 1.6)
    max_broaden_sigma_cm1: float = 2.5
    max_baseline: float = 0.08
    max_noise: float = 0.02
    tail_start_fraction: float = 0.8  # tail cut point drawn from [this, 1] of the grid
    tail_cut_fraction: float = 0.5


def shift_stretch(
    X: NDArray[np.float32], shift_pts: NDArray[np.float64], stretch: NDArray[np.float64]
) -> NDArray[np.float32]:
    """Move every band by `shift_pts` grid points (and scale the axis about its centre by
    1+stretch), by linear interpolation; points shifted in from outside the grid read 0."""
    n, length = X.shape
    grid = np.arange(length, dtype=np.float64)
    centre = (length - 1) / 2
    src = (grid[None, :] - shift_pts.reshape(-1, 1) - centre) / (1 + stretch.reshape(-1, 1)) + centre
    inside = (src >= 0) & (src <= length - 1)
    src = np.clip(src, 0, length - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, length - 1)
    w = src - lo
    rows = np.arange(n)[:, None]
    out = X[rows, lo] * (1 - w) + X[rows, hi] * w
    return np.where(inside, out, 0.0).astype(np.float32)


def broaden(X: NDArray[np.float32], sigma_pts: NDArray[np.float64]) -> NDArray[np.float32]:
    """Convolve each row with a unit-area Gaussian of its own sigma (in grid points)."""
    out = X.astype(np.float32).copy()
    half = int(np.ceil(3 * max(float(np.max(sigma_pts, initial=0.0)), 1e-3)))
    k = np.arange(-half, half + 1, dtype=np.float64)
    for i, s in enumerate(sigma_pts):
        if s > 0.05:
            g = np.exp(-0.5 * (k / s) ** 2)
            out[i] = np.convolve(X[i], g / g.sum(), mode="same")
    return out


def tail_cut(X: NDArray[np.float32], cut_index: NDArray[np.int64]) -> NDArray[np.float32]:
    """Zero every point at or beyond `cut_index` of each row."""
    grid = np.arange(X.shape[1])
    return np.where(grid[None, :] >= cut_index.reshape(-1, 1), 0.0, X).astype(np.float32)


def augment(
    X: NDArray[np.float32], rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()
) -> NDArray[np.float32]:
    n, length = X.shape
    step = cfg.step_cm1
    moved = rng.random(n) < cfg.shift_fraction
    shift = np.where(moved, rng.uniform(-cfg.max_shift_cm1, cfg.max_shift_cm1, n), 0.0) / step
    stretch = np.where(moved, rng.uniform(-cfg.max_stretch, cfg.max_stretch, n), 0.0)
    out = shift_stretch(X, shift, stretch)
    # Smooth gain: a random cosine series of <= 4 cycles over the grid, in log space.
    t = np.linspace(0, 1, length)[None, :]
    lo, hi = np.log(cfg.band_gain[0]), np.log(cfg.band_gain[1])
    curve = sum(rng.normal(0, 1, (n, 1)) * np.cos(np.pi * f * t + rng.uniform(0, np.pi, (n, 1))) for f in (1, 2, 4, 8))
    curve = curve / np.maximum(np.abs(curve).max(axis=1, keepdims=True), 1e-9)
    out = out * np.exp(np.where(curve > 0, curve * hi, -curve * lo)).astype(np.float32)
    out = broaden(out, rng.uniform(0, cfg.max_broaden_sigma_cm1, n) / step * (rng.random(n) < 0.5))
    tt = 2 * t - 1
    coef = rng.normal(0, 1, (n, 3))
    base = coef[:, :1] + coef[:, 1:2] * tt + coef[:, 2:3] * (2 * tt**2 - 1)
    base -= base.min(axis=1, keepdims=True)
    base /= np.maximum(base.max(axis=1, keepdims=True), 1e-9)
    peak = np.maximum(out.max(axis=1, keepdims=True), 1e-6)
    out = out + base * rng.uniform(0, cfg.max_baseline, (n, 1)) * peak
    level = rng.uniform(0, cfg.max_noise, (n, 1)) * peak
    shot = rng.uniform(0, 1, (n, 1))  # share of the noise variance that is photon (shot) noise
    sigma = level * np.sqrt(shot * np.clip(out / peak, 0, None) + (1 - shot))
    out = out + rng.normal(0, 1, out.shape) * sigma
    cut = rng.integers(int(cfg.tail_start_fraction * length), length, n)
    out = np.where(rng.random((n, 1)) < cfg.tail_cut_fraction, tail_cut(out.astype(np.float32), cut), out)
    return (out / np.maximum(out.max(axis=1, keepdims=True), 1e-6)).astype(np.float32)
