"""The one preprocessing module: spectrum in, model input out.

Used by the trainer (on RRUFF files) and by the edge daemon (on instrument frames), so a
change here changes both sides at once; the bundle records `PREPROCESS_VERSION` and the
spec it was trained with, and the edge refuses a bundle whose version it does not know.

Every stage is a pure function on NumPy arrays. Order for raw instrument spectra:

    pixel_to_wavelength -> to_raman_shift -> (dark subtraction) -> despike
    -> remove_baseline -> resample -> normalize

RRUFF "Processed" spectra are already baseline-corrected and calibrated, so for them
(`corrected=True`) only sort/deduplicate -> resample -> normalize runs.

Grid policy (see docs/preprocessing.md): the model grid is the paper's 1,360 points,
150-1,509 cm-1 at 1 cm-1. Most RRUFF spectra stop near 1,290 cm-1; grid points outside the
measured range are set to 0 (not extrapolated) and `coverage` reports the fraction of the
grid that was measured. `spec.max_shift_cm1` optionally zeroes everything above a shift for
every spectrum, so that full-range instrument spectra look like the truncated library.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edge.errors import SpectrumError
from edge.lapack import banded_solver
from raman_core import units

PREPROCESS_VERSION = "1"

#: The paper's grid: 1,360 points from 150 cm-1, 1 cm-1 apart (last point 1,509 cm-1).
PAPER_GRID_START_CM1 = 150.0
PAPER_GRID_STEP_CM1 = 1.0
PAPER_GRID_N = 1360

#: Fewer finite points than this and a spectrum is not a spectrum.
MIN_POINTS = 16

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything preprocessing needs; written into the bundle manifest verbatim."""

    grid_start_cm1: float = PAPER_GRID_START_CM1
    grid_step_cm1: float = PAPER_GRID_STEP_CM1
    grid_n: int = PAPER_GRID_N
    #: "max": divide by the largest value, so the strongest band is 1.0.
    normalization: str = "max"
    #: Grid points above this shift are zeroed for every spectrum (None: keep all).
    max_shift_cm1: float | None = None
    #: Whitaker-Hayes modified z-score threshold for cosmic-ray spikes (raw spectra only).
    despike_threshold: float = 8.0
    #: arPLS smoothness for baseline removal (raw spectra only), on the pixel axis.
    baseline_lam: float = 1e5
    version: str = field(default=PREPROCESS_VERSION)

    def grid_cm1(self) -> FloatArray:
        return self.grid_start_cm1 + self.grid_step_cm1 * np.arange(self.grid_n, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise SpectrumError(f"preprocessing spec has unknown keys {sorted(unknown)}")
        if str(data.get("version", PREPROCESS_VERSION)) != PREPROCESS_VERSION:
            raise SpectrumError(
                f"preprocessing spec version {data.get('version')!r} is not supported "
                f"by this edge (knows {PREPROCESS_VERSION!r}); upgrade raman-edge"
            )
        return cls(**data)


@dataclass(frozen=True)
class Prepared:
    """Model input plus what the quality gate and the peak report need."""

    values: NDArray[np.float32]  # on the grid, normalised
    coverage: float  # fraction of grid points inside the measured range
    n_spikes: int  # cosmic-ray pixels replaced (0 for corrected spectra)
    scale: float  # the divisor used by normalize (intensity units of the input)
    #: Strongest band over the pixel noise (std from first differences), before resampling.
    snr: float = float("nan")
    #: Height of the removed background over the strongest band (raw spectra only).
    fluorescence_ratio: float = float("nan")


def _as_1d(name: str, values: ArrayLike) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise SpectrumError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _check_finite(name: str, arr: FloatArray) -> None:
    if arr.size == 0:
        raise SpectrumError(f"{name} is empty")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise SpectrumError(f"{name} has {int(bad.sum())} non-finite values (NaN/inf), first at index {first}")


def pixel_to_wavelength(pixels: ArrayLike, coeffs_nm: ArrayLike) -> FloatArray:
    """Evaluate the device calibration polynomial; coeffs are c0 + c1*p + c2*p^2 + ..."""
    p = _as_1d("pixels", pixels)
    c = _as_1d("calibration coefficients", coeffs_nm)
    _check_finite("calibration coefficients", c)
    # np.polyval wants the highest order first; devices store c0 first.
    return np.asarray(np.polyval(c[::-1], p), dtype=np.float64)


def to_raman_shift(wavelength_nm: ArrayLike, laser_nm: float) -> FloatArray:
    """Stokes Raman shift in cm-1 of scattered light at `wavelength_nm` for a laser line."""
    try:
        return units.to_raman_shift(wavelength_nm, laser_nm)
    except units.UnitError as err:
        raise SpectrumError(str(err)) from None


def pixel_shifts(calibration_nm: ArrayLike, laser_nm: float, n_pixels: int) -> FloatArray:
    """Raman shift (cm-1) of every detector pixel, from the device's polynomial and laser line."""
    return to_raman_shift(pixel_to_wavelength(np.arange(n_pixels), calibration_nm), laser_nm)


raman_shift_to_wavelength = units.raman_shift_to_wavelength


def sort_unique(x: ArrayLike, y: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Sort by x and average duplicated x values, dropping non-finite pairs.

    RRUFF files occasionally repeat or reverse x; interpolation needs strictly increasing x.
    """
    xa = _as_1d("shift_cm1", x)
    ya = _as_1d("intensity", y)
    if xa.shape != ya.shape:
        raise SpectrumError(f"shift and intensity lengths differ ({xa.size} vs {ya.size})")
    _check_finite("intensity", ya)
    _check_finite("shift_cm1", xa)
    if xa.size >= MIN_POINTS and bool((xa[1:] > xa[:-1]).all()):
        return xa, ya  # already strictly increasing (every instrument axis): nothing to sort
    order = np.argsort(xa, kind="stable")
    xs, ys = xa[order], ya[order]
    ux, inverse, counts = np.unique(xs, return_inverse=True, return_counts=True)
    if ux.size != xs.size:
        ys = np.bincount(inverse, weights=ys) / counts
        xs = ux
    if xs.size < MIN_POINTS:
        raise SpectrumError(f"spectrum has {xs.size} distinct points; need at least {MIN_POINTS}")
    return xs, ys


def resample(x: ArrayLike, y: ArrayLike, grid_cm1: ArrayLike) -> tuple[FloatArray, float]:
    """Linear interpolation onto `grid_cm1`; zero outside the measured range.

    Returns (values, coverage) where coverage is the fraction of grid points that fall
    inside [min(x), max(x)]. A spectrum already on the grid is returned unchanged.
    """
    xs, ys = sort_unique(x, y)
    g = _as_1d("grid", grid_cm1)
    inside = (g >= xs[0]) & (g <= xs[-1])
    out = np.zeros_like(g)
    out[inside] = np.interp(g[inside], xs, ys)
    return out, float(inside.mean()) if g.size else 0.0


def normalize(y: ArrayLike, method: str = "max") -> tuple[FloatArray, float]:
    """Scale so the strongest band is 1.0 ("max"); returns (scaled, divisor)."""
    arr = _as_1d("intensity", y)
    _check_finite("intensity", arr)
    if method != "max":
        raise SpectrumError(f"unknown normalization {method!r}; this edge knows 'max'")
    peak = float(arr.max())
    if peak <= 0 or peak - float(arr.min()) <= 1e-12 * max(1.0, abs(peak)):
        raise SpectrumError("spectrum is flat or has no positive signal; nothing to normalise")
    return arr / peak, peak


def _sliding(arr: FloatArray, size: int) -> NDArray[np.float64]:
    """Windows of `size` centred on every pixel, edges repeated (scipy.ndimage mode="nearest")."""
    half = size // 2
    padded = np.pad(arr, (half, size - 1 - half), mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, size)


def _edge_padded(arr: FloatArray, left: int, right: int) -> FloatArray:
    """arr with its first value repeated `left` times before and its last `right` times after
    (np.pad mode="edge" without its per-call bookkeeping)."""
    n = arr.size
    out = np.empty(n + left + right, arr.dtype)
    out[left : left + n] = arr
    out[:left] = arr[0]
    out[left + n :] = arr[-1]
    return out


def _median5(p: FloatArray, n: int) -> FloatArray:
    """Median of each 5-window of `p` (length n + 4) by a min/max selection network:
    median(a, b, c, d, e) = median3(e, max(min(a, b), min(c, d)), min(max(a, b), max(c, d))).
    Ten element-wise passes and no sort; every output is one of its window's values, so it
    is exactly the median a partition gives (tests/edge/test_preprocess_parity.py)."""
    a, b, c, d, e = (p[i : i + n] for i in range(5))
    lo_ab, hi_ab = np.minimum(a, b), np.maximum(a, b)
    lo_cd, hi_cd = np.minimum(c, d), np.maximum(c, d)
    f = np.maximum(lo_ab, lo_cd, out=lo_ab)
    g = np.minimum(hi_ab, hi_cd, out=hi_ab)
    lo_ef, hi_ef = np.minimum(e, f), np.maximum(e, f, out=f)
    np.minimum(hi_ef, g, out=hi_ef)
    return np.maximum(lo_ef, hi_ef, out=lo_ef)


def running_median(arr: FloatArray, size: int) -> FloatArray:
    """Centred running median with edge repetition for odd `size`; the same numbers as
    scipy's median_filter(mode="nearest"), without importing scipy.ndimage (~150 ms and
    several MB at start-up). Size 5 (the despiker's) by a selection network (~5x faster
    than partitioning each window); other sizes by a partition per window."""
    if size % 2 != 1:
        raise ValueError(f"running_median needs an odd window, got {size}")
    if size == 5 and arr.size:
        return _median5(_edge_padded(arr, 2, 2), arr.size)
    return np.partition(_sliding(arr, size), size // 2, axis=1)[:, size // 2]


def running_min(arr: FloatArray, size: int) -> FloatArray:
    """Centred running minimum with edge repetition (scipy.ndimage.minimum_filter, mode="nearest").

    By doubling: minima over windows of 2, 4, 8 ... pixels, each from two of the previous,
    then the window of `size` as the minimum of two overlapping power-of-two windows
    (log2(size) + 1 element-wise passes instead of size - 1; the minimum is exact either way)."""
    half = size // 2
    n = arr.size
    m = _edge_padded(arr, half, size - 1 - half)  # m[i] = min of a window of `width` from i
    width = 1
    while 2 * width <= size:
        m = np.minimum(m[:-width], m[width:])
        width *= 2
    if width == size:
        return m  # length n + size - width = n, this call's own array
    return np.minimum(m[:n], m[size - width : size - width + n])


def despike(y: ArrayLike, threshold: float = 8.0) -> tuple[FloatArray, int]:
    """Remove cosmic-ray spikes; returns (cleaned, number of pixels replaced).

    A cosmic ray hits one or two pixels; a Raman band (after the spectrograph's slit
    function) spans several. So a 5-pixel running median erases a spike completely but only
    trims the top of a band. A pixel is a spike when its residual from that median is an
    outlier (modified z-score above `threshold`, as in Whitaker & Hayes 2018) *and* the
    residual is most of its height above the local floor; the second test keeps strong,
    narrow real bands that the plain Whitaker-Hayes difference test would eat.
    Spike pixels are replaced by a 7-pixel running median.
    """
    arr = _as_1d("intensity", y)
    _check_finite("intensity", arr)
    if arr.size < MIN_POINTS:
        raise SpectrumError(f"spectrum has {arr.size} points; need at least {MIN_POINTS}")
    smooth = running_median(arr, 5)
    resid = arr - smooth
    med = float(np.median(resid))
    dev = np.abs(resid - med)
    mad = float(np.median(dev))
    if mad == 0.0:
        mad = float(np.mean(dev)) or 1.0
    z = 0.6745 * (resid - med) / mad
    floor = running_min(arr, 11)
    height = np.maximum(arr - floor, 1e-12)
    spikes = (z > threshold) & (resid > 0.6 * height)
    if not spikes.any():
        return arr.copy(), 0
    out = arr.copy()
    # Only the spike pixels need the 7-pixel median: a handful of windows, not the whole axis.
    idx = np.flatnonzero(spikes)
    out[idx] = np.partition(_sliding(arr, 7)[idx], 3, axis=1)[:, 3]
    return out, int(idx.size)


@dataclass(frozen=True)
class BaselineSystem:
    """What arPLS reuses between spectra of one device: lam * D'D for `n` pixels, where D is
    the second-difference matrix, as the three lower bands LAPACK's banded Cholesky reads
    (row 0: the diagonal, row 1: first subdiagonal, row 2: second; `ab[i - j, j] = A[i, j]`,
    unused tail entries 0). Lower storage: OpenBLAS's dpbsv is ~1.6x faster with it than
    with upper storage for this matrix (measured, 1,360 pixels).
    """

    n_pixels: int
    lam: float
    penalty_bands: FloatArray  # (3, n_pixels), read-only


@functools.lru_cache(maxsize=16)
def baseline_system(n_pixels: int, lam: float) -> BaselineSystem:
    """The penalty bands for `n_pixels` and `lam`, built once per (detector size, lam)."""
    if n_pixels < MIN_POINTS:
        raise SpectrumError(f"spectrum has {n_pixels} points; need at least {MIN_POINTS}")
    # D'D for second differences is pentadiagonal: diagonal 1 5 6 ... 6 5 1, first
    # off-diagonal -2 -4 ... -4 -2, second off-diagonal all 1.
    diag = np.full(n_pixels, 6.0)
    diag[[0, -1]] = 1.0
    diag[[1, -2]] = 5.0
    off1 = np.full(n_pixels - 1, -4.0)
    off1[[0, -1]] = -2.0
    bands = np.zeros((3, n_pixels))
    bands[0] = diag
    bands[1, :-1] = off1
    bands[2, :-2] = 1.0
    bands *= lam
    bands.setflags(write=False)
    return BaselineSystem(n_pixels, float(lam), bands)


def arpls(y: FloatArray, system: BaselineSystem, *, max_iter: int = 50, tol: float = 1e-3) -> FloatArray:
    """arPLS baseline (Baek et al. 2015) on a banded system: the same iteration as
    pybaselines.whittaker.arpls (weights start at 1; logistic reweighting from the mean and
    sample std of the negative residuals; stop when the relative change of the weights is
    below `tol`, or when fewer than two residuals are negative), solved with one banded
    Cholesky (LAPACK dpbsv, lower band storage) per iteration. Equal to pybaselines within floating-point
    rounding (tests/edge/test_preprocess_parity.py: max |difference| <= 1e-6 of the
    spectrum's range). The solver is NumPy's own LAPACK when it has one (edge.lapack).
    """
    solve = banded_solver()
    n = system.n_pixels
    w = np.ones(n)
    # Fortran order: the layout LAPACK reads, so f2py passes it without a copy.
    ab = np.empty((3, n), order="F")
    # Work buffers reused by every iteration: the loop is ~60 % NumPy call overhead and
    # temporaries at 1,360 pixels, so it works in place (same operations in the same order).
    resid, new_w, step = np.empty(n), np.empty(n), np.empty(n)
    baseline = y
    for _ in range(max_iter + 1):
        ab[...] = system.penalty_bands
        ab[0] += w
        baseline = w * y  # right-hand side, overwritten with the solution
        info = solve(ab, baseline)
        if info != 0:
            raise SpectrumError(f"baseline system is not positive definite (LAPACK dpbsv info={info})")
        np.subtract(y, baseline, out=resid)
        neg = resid[resid < 0]
        m = neg.size
        if m < 2:
            break  # pybaselines exits here too ("almost all baseline points below the data")
        mean = float(neg.sum()) / m
        neg -= mean
        std = math.sqrt(float(neg @ neg) / (m - 1)) or np.finfo(float).eps  # sample std (ddof=1)
        # 1 / (1 + exp(t)) with exp overflow going to weight 0, as scipy.special.expit(-t) does.
        np.subtract(resid, 2.0 * std - mean, out=new_w)
        new_w *= 2.0 / std
        with np.errstate(over="ignore"):
            np.exp(new_w, out=new_w)
        new_w += 1.0
        np.reciprocal(new_w, out=new_w)
        np.subtract(new_w, w, out=step)
        change = math.sqrt(float(step @ step)) / max(math.sqrt(float(w @ w)), np.finfo(float).tiny)
        if change < tol:
            break
        w, new_w = new_w, w
    return np.asarray(baseline, dtype=np.float64)


def remove_baseline(y: ArrayLike, lam: float = 1e5) -> FloatArray:
    """Subtract a smooth background (arPLS, Baek et al. 2015; see `arpls`).

    Fluorescence backgrounds are broad and several times the Raman band height; arPLS
    follows them under the bands without eating the bands. Works on the pixel axis, so
    `lam` does not depend on the shift units.
    """
    arr = _as_1d("intensity", y)
    _check_finite("intensity", arr)
    if arr.size < MIN_POINTS:
        raise SpectrumError(f"spectrum has {arr.size} points; need at least {MIN_POINTS}")
    return arr - arpls(arr, baseline_system(arr.size, float(lam)))


def preprocess(
    shift_cm1: ArrayLike,
    intensity: ArrayLike,
    spec: PreprocessSpec | None = None,
    *,
    corrected: bool,
) -> Prepared:
    """Turn one spectrum into model input.

    `corrected=True` for library spectra that are already baseline-corrected (RRUFF
    Processed, or a CSV the user exported after correction); `corrected=False` for raw
    instrument counts, which get despiked and baseline-corrected first.
    """
    spec = spec or PreprocessSpec()
    x, y = sort_unique(shift_cm1, intensity)
    n_spikes = 0
    fluorescence = float("nan")
    if not corrected:
        y, n_spikes = despike(y, threshold=spec.despike_threshold)
        raw = y
        y = remove_baseline(y, lam=spec.baseline_lam)
        background = raw - y
        fluorescence = float(np.ptp(background)) / max(float(y.max()), 1e-12)
    snr = signal_to_noise(y)
    grid = spec.grid_cm1()
    values, coverage = resample(x, y, grid)
    if spec.max_shift_cm1 is not None:
        values[grid > spec.max_shift_cm1] = 0.0
    if coverage == 0.0:
        raise SpectrumError(
            f"spectrum ({x[0]:.0f}-{x[-1]:.0f} cm-1) does not overlap the model grid "
            f"({grid[0]:.0f}-{grid[-1]:.0f} cm-1)"
        )
    values, scale = normalize(values, spec.normalization)
    return Prepared(values.astype(np.float32), coverage, n_spikes, scale, snr, fluorescence)


def noise_sigma(y: ArrayLike) -> float:
    """Pixel-to-pixel white-noise level, robust to bands and background (see signal_to_noise)."""
    d = np.diff(_as_1d("intensity", y))
    return 1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2.0)


def signal_to_noise(y: ArrayLike) -> float:
    """Strongest value over the white-noise level, estimated robustly from first differences.

    Differences cancel smooth structure (bands, background), so their MAD measures the
    pixel-to-pixel noise; sigma = 1.4826 * MAD / sqrt(2).
    """
    arr = _as_1d("intensity", y)
    sigma = noise_sigma(arr)
    peak = float(arr.max())
    if sigma <= 0:
        return float("inf") if peak > 0 else 0.0
    return peak / sigma


def preprocess_batch(
    spectra: list[tuple[ArrayLike, ArrayLike]],
    spec: PreprocessSpec | None = None,
    *,
    corrected: bool,
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """`preprocess` over many spectra: returns (X of shape (n, grid_n), coverage per row)."""
    spec = spec or PreprocessSpec()
    rows = [preprocess(x, y, spec, corrected=corrected) for x, y in spectra]
    if not rows:
        return np.zeros((0, spec.grid_n), np.float32), np.zeros(0)
    return np.stack([r.values for r in rows]), np.array([r.coverage for r in rows])
