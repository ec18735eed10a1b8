"""Emulated spectra, run through the shared preprocessing, must look like their source."""

from __future__ import annotations

import numpy as np
import pytest
from rruff_data import require_rruff

from edge.preprocess import PreprocessSpec, pixel_to_wavelength, preprocess, to_raman_shift
from firmware_bridge.library import DEFAULT_MINERALS, load_library
from firmware_bridge.physics import InstrumentModel, simulate_counts


@pytest.fixture(scope="module")
def one_per_mineral() -> list:
    spectra = load_library(require_rruff(), DEFAULT_MINERALS)
    first: dict[str, object] = {}
    for s in spectra:
        first.setdefault(s.mineral, s)
    return list(first.values())


def correlation_after_preprocess(spectrum, model: InstrumentModel, seed: int) -> float:
    spec = PreprocessSpec()
    grid = spec.grid_cm1()
    counts = simulate_counts(spectrum.shift_cm1, spectrum.intensity, model, np.random.default_rng(seed))
    wl = pixel_to_wavelength(np.arange(model.pixels), model.reported_calibration_nm())
    emulated = preprocess(to_raman_shift(wl, model.laser_nm), counts.astype(float), spec, corrected=False).values
    source = preprocess(spectrum.shift_cm1, spectrum.intensity, spec, corrected=True).values
    inside = (grid >= spectrum.shift_cm1.min()) & (grid <= spectrum.shift_cm1.max())
    return float(np.corrcoef(emulated[inside], source[inside])[0, 1])


@pytest.mark.parametrize("laser_nm", [785.0, 532.0])
def test_emulated_spectra_correlate_with_source(one_per_mineral: list, laser_nm: float) -> None:
    model = InstrumentModel.default(laser_nm=laser_nm)
    r = np.array([correlation_after_preprocess(s, model, i) for i, s in enumerate(one_per_mineral)])
    names = [s.mineral for s in one_per_mineral]
    print(
        f"\nlaser {laser_nm:g} nm, n={r.size}: min {r.min():.3f} median {np.median(r):.3f} "
        f"max {r.max():.3f}; below 0.9: " + ", ".join(f"{n} {v:.2f}" for n, v in zip(names, r, strict=True) if v < 0.9)
    )
    assert r.size >= 20
    assert np.mean(r >= 0.9) >= 0.8


def test_physics_is_deterministic_and_bounded(one_per_mineral: list) -> None:
    s = one_per_mineral[0]
    model = InstrumentModel.default(signal_e_per_ms=5000.0)  # far too bright: saturates
    a = simulate_counts(s.shift_cm1, s.intensity, model, np.random.default_rng(1))
    b = simulate_counts(s.shift_cm1, s.intensity, model, np.random.default_rng(1))
    assert a.dtype == np.uint16 and np.array_equal(a, b)
    assert a.max() == 65535


def test_integration_time_scales_signal(one_per_mineral: list) -> None:
    s = one_per_mineral[0]
    quiet = dict(cosmic_rate=0.0, read_noise_e=0.0)
    short = InstrumentModel.default(integration_ms=50, **quiet)
    long = InstrumentModel.default(integration_ms=200, **quiet)
    a = simulate_counts(s.shift_cm1, s.intensity, short, np.random.default_rng(0)).astype(float)
    b = simulate_counts(s.shift_cm1, s.intensity, long, np.random.default_rng(0)).astype(float)
    offset = short.dark_offset_counts
    ratio = (b.mean() - offset) / (a.mean() - offset)
    assert 3.5 < ratio < 4.5


def test_shift_error_moves_the_reported_calibration() -> None:
    exact = InstrumentModel.default()
    wrong = InstrumentModel.default(shift_error_cm1=5.0)
    p = np.arange(exact.pixels)
    s_exact = to_raman_shift(pixel_to_wavelength(p, exact.reported_calibration_nm()), 785.0)
    s_wrong = to_raman_shift(pixel_to_wavelength(p, wrong.reported_calibration_nm()), 785.0)
    assert np.allclose(s_wrong - s_exact, 5.0, atol=0.2)


def test_dark_frame_has_no_signal() -> None:
    model = InstrumentModel.default(cosmic_rate=0.0)
    dark = simulate_counts(np.zeros(2), np.zeros(2), model, np.random.default_rng(0), dark=True)
    assert abs(dark.mean() - model.dark_offset_counts) < 10
