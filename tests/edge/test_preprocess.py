"""Properties of the one preprocessing module (used by trainer and edge alike)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edge.errors import SpectrumError
from edge.preprocess import (
    PreprocessSpec,
    despike,
    normalize,
    preprocess,
    raman_shift_to_wavelength,
    remove_baseline,
    resample,
    to_raman_shift,
)

GRID = PreprocessSpec().grid_cm1()


def gaussian(x: np.ndarray, center: float, fwhm: float, height: float = 1.0) -> np.ndarray:
    return height * np.exp(-4 * np.log(2) * ((x - center) / fwhm) ** 2)


def test_grid_is_the_papers() -> None:
    assert GRID.size == 1360 and GRID[0] == 150.0 and GRID[-1] == 1509.0


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(1e-3, 1e6))
def test_resampling_a_spectrum_on_the_grid_returns_it(seed: int, scale: float) -> None:
    y = np.random.default_rng(seed).random(1360) * scale
    out, coverage = resample(GRID, y, GRID)
    np.testing.assert_allclose(out, y, rtol=1e-12, atol=1e-9)
    assert coverage == 1.0


def test_resample_zero_fills_outside_measured_range_and_reports_coverage() -> None:
    x = np.linspace(100, 1290, 500)
    out, coverage = resample(x, np.ones_like(x), GRID)
    assert np.all(out[GRID > 1290] == 0) and np.all(out[GRID <= 1290] == 1)
    assert coverage == pytest.approx(np.mean(GRID <= 1290))


def test_resample_handles_reversed_and_duplicated_x() -> None:
    x = np.r_[np.linspace(1520, 140, 1000), 800.0, 800.0]
    y = np.r_[np.linspace(1520, 140, 1000), 790.0, 810.0]  # duplicated x: values averaged
    out, _ = resample(x, y, GRID)
    np.testing.assert_allclose(out, GRID, rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.floats(-5, 5), st.floats(-3, 3), st.floats(100, 5000), st.integers(0, 2**31 - 1))
def test_baseline_removal_of_a_smooth_background_leaves_about_zero(a: float, b: float, c: float, seed: int) -> None:
    # Real detectors are never noiseless; arPLS weights are defined by the noise level, so
    # the background carries 1 % noise and the check is on what is left besides the noise.
    t = np.linspace(-1, 1, 1024)
    noise = np.random.default_rng(seed).normal(0, 0.01 * c, t.size)
    background = c * (1 + 0.3 * np.tanh(a * t) + 0.2 * b * t**2)
    residual = remove_baseline(background + noise, lam=1e5) - noise
    assert np.max(np.abs(residual)) < 0.03 * c


def test_baseline_removal_keeps_raman_bands_on_fluorescence() -> None:
    px = np.arange(1024, dtype=float)
    band = gaussian(px, 400, 6, 1000)
    fluorescence = 5000 * np.exp(-(((px - 600) / 500) ** 2))
    out = remove_baseline(band + fluorescence)
    assert abs(out[400] - 1000) < 100
    assert np.median(np.abs(out[:300])) < 30


@settings(max_examples=50, deadline=None)
@given(st.integers(50, 970), st.floats(5, 50), st.integers(0, 2**31 - 1))
def test_despike_removes_a_single_pixel_spike_and_keeps_real_bands(pos: int, factor: float, seed: int) -> None:
    # Off the bands: a spike smaller than the band it sits on is, by design, not told apart
    # from the band (the second test in despike); that case is the next test.
    assume(abs(pos - 300) > 24 and abs(pos - 700) > 15)
    rng = np.random.default_rng(seed)
    px = np.arange(1024, dtype=float)
    clean = 100 + gaussian(px, 300, 8, 2000) + gaussian(px, 700, 5, 800)
    noisy = clean + rng.normal(0, 5, px.size)
    spiked = noisy.copy()
    spiked[pos] += factor * 100
    out, n = despike(spiked)
    assert n >= 1
    assert abs(out[pos] - clean[pos]) < 0.3 * factor * 100
    # real bands survive within noise
    assert abs(out[300] - noisy[300]) < 50 and abs(out[700] - noisy[700]) < 50


@pytest.mark.parametrize("pos", [285, 293, 300, 308])
def test_despike_removes_a_spike_taller_than_the_band_it_sits_on(pos: int) -> None:
    px = np.arange(1024, dtype=float)
    clean = 100 + gaussian(px, 300, 8, 2000)
    spiked = clean + np.random.default_rng(0).normal(0, 5, px.size)
    spiked[pos] += 5000.0
    out, n = despike(spiked)
    # The 5,000-count spike is gone; at the band's top the 7-pixel median replacing it reads
    # up to ~15 % low (measured 315 of 2,100 at the peak).
    assert n >= 1 and abs(out[pos] - clean[pos]) < 0.2 * 2000


def test_despike_leaves_a_clean_spectrum_alone() -> None:
    px = np.arange(1024, dtype=float)
    rng = np.random.default_rng(0)
    y = 100 + gaussian(px, 300, 4, 5000) + rng.normal(0, 3, px.size)
    out, n = despike(y)
    assert n == 0 and np.array_equal(out, y)


def test_raman_shift_round_trip() -> None:
    shift = np.linspace(100, 2000, 50)
    wl = raman_shift_to_wavelength(shift, 785.0)
    np.testing.assert_allclose(to_raman_shift(wl, 785.0), shift, atol=1e-8)
    # 520.7 cm-1 silicon line with a 785 nm laser sits near 818.4 nm
    assert raman_shift_to_wavelength([520.7], 785.0)[0] == pytest.approx(818.45, abs=0.05)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.arange(100.0), np.full(100, np.nan), "non-finite"),
        (np.arange(100.0), np.r_[np.ones(99), np.inf], "non-finite"),
        (np.array([]), np.array([]), "empty"),
        (np.arange(5.0), np.ones(5), "at least"),
        (np.arange(100.0), np.ones(99), "lengths differ"),
        (np.linspace(150, 1500, 200), np.zeros(200), "flat"),
        (np.linspace(3000, 4000, 200), np.ones(200), "does not overlap"),
    ],
)
def test_bad_input_raises_a_clear_error(x: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(SpectrumError, match=message):
        preprocess(x, y, corrected=True)


def test_normalize_max() -> None:
    out, scale = normalize(np.array([0.0, 2.0, 4.0]))
    assert scale == 4.0 and out.max() == 1.0


def test_spec_round_trips_and_rejects_unknown_keys() -> None:
    spec = PreprocessSpec(max_shift_cm1=1300.0)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(SpectrumError, match="unknown keys"):
        PreprocessSpec.from_dict({**spec.to_dict(), "bogus": 1})
    with pytest.raises(SpectrumError, match="version"):
        PreprocessSpec.from_dict({**spec.to_dict(), "version": "99"})
