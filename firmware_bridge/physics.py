"""Forward model of a dispersive Raman spectrometer: library spectrum -> detector counts.

`simulate_counts(shift_cm1, intensity, model, rng)` is a pure function (all randomness comes
from `rng`), so the emulator, the tests and the edge robustness benchmark share it:

    model = InstrumentModel.default(laser_nm=785, pixels=1024, fluorescence_ratio=5.0)
    counts = simulate_counts(spec.shift_cm1, spec.intensity, model, np.random.default_rng(0))
    info_coeffs = model.reported_calibration_nm()   # what the device claims (may be off)

Steps, in the order light meets the instrument:
1. true pixel -> wavelength polynomial, laser line -> Raman shift of every pixel;
2. the (baseline-corrected) library spectrum, integrated over each pixel's shift interval, so
   narrow bands are not lost between pixel centres;
3. instrument line shape: Gaussian of `fwhm_px` pixels;
4. fluorescence: a broad smooth background `fluorescence_ratio` times the strongest band;
5. photon budget from `signal_e_per_ms * integration_ms`, shot (Poisson) noise per average,
   read noise, dark offset + dark current, fixed-pattern offset per pixel;
6. cosmic rays: Poisson number of 1-2 pixel spikes per frame;
7. averaging, rounding, saturation at 65535.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from raman_core.units import FULL_SCALE, raman_shift_to_wavelength, to_raman_shift

FloatArray = NDArray[np.float64]


def default_calibration_nm(
    laser_nm: float, pixels: int, shift_min_cm1: float = 100.0, shift_max_cm1: float = 1900.0
) -> tuple[float, ...]:
    """A realistic cubic pixel -> nm polynomial (c0 first) spanning the given shift range.

    Real spectrographs are not linear in wavelength: a few tenths of a percent of bow plus a
    small cubic term, which is what exercises the consumer's polynomial evaluation.
    """
    w0, w1 = raman_shift_to_wavelength(np.array([shift_min_cm1, shift_max_cm1]), laser_nm)
    p = np.arange(pixels, dtype=np.float64)
    x = p / (pixels - 1)
    wl = w0 + (w1 - w0) * (x + 0.04 * x * (1 - x) + 0.01 * x * (1 - x) * (x - 0.5))
    coeffs = np.polynomial.polynomial.polyfit(p, wl, 3)
    return tuple(float(c) for c in coeffs)


@dataclass(frozen=True)
class InstrumentModel:
    """Everything about the simulated instrument and exposure. Units are in the names."""

    laser_nm: float = 785.0
    pixels: int = 1024
    calibration_nm: tuple[float, ...] = ()  # true pixel -> nm, c0 first; () = default
    #: The device reports a calibration whose Raman shift is off by this much (cm-1).
    shift_error_cm1: float = 0.0
    fwhm_px: float = 2.5  # instrument line shape
    fluorescence_ratio: float = 3.0  # fluorescence peak / strongest Raman band
    signal_e_per_ms: float = 60.0  # electrons/ms at the strongest band (sets SNR)
    integration_ms: int = 100
    averages: int = 1
    read_noise_e: float = 8.0
    dark_offset_counts: float = 500.0
    dark_current_e_per_ms: float = 0.05
    fixed_pattern_counts: float = 5.0  # per-pixel offset spread (fixed for the instrument)
    cosmic_rate: float = 0.2  # mean spikes per exposure
    cosmic_counts: tuple[float, float] = (2000.0, 20000.0)  # spike height range
    gain_e_per_count: float = 1.0
    #: Samples differ in brightness (cross-section, focus, grain size): each library spectrum's
    #: signal is scaled by a factor in [1/sqrt(spread), sqrt(spread)], log-uniform, fixed per
    #: spectrum (drawn from a hash of its intensities, so repeated exposures agree). 1 = off.
    sample_brightness_spread: float = 1.0

    @classmethod
    def default(cls, **overrides: object) -> InstrumentModel:
        model = cls(**overrides)  # type: ignore[arg-type]
        if not model.calibration_nm:
            model = replace(model, calibration_nm=default_calibration_nm(model.laser_nm, model.pixels))
        return model

    def true_wavelengths_nm(self) -> FloatArray:
        coeffs = self.calibration_nm or default_calibration_nm(self.laser_nm, self.pixels)
        p = np.arange(self.pixels, dtype=np.float64)
        return np.asarray(np.polynomial.polynomial.polyval(p, coeffs), dtype=np.float64)

    def true_shifts_cm1(self) -> FloatArray:
        return to_raman_shift(self.true_wavelengths_nm(), self.laser_nm)

    def reported_calibration_nm(self) -> tuple[float, ...]:
        """The polynomial the device puts in INFO: exact, or off by `shift_error_cm1`."""
        coeffs = self.calibration_nm or default_calibration_nm(self.laser_nm, self.pixels)
        if self.shift_error_cm1 == 0.0:
            return tuple(coeffs)
        p = np.arange(self.pixels, dtype=np.float64)
        wrong = raman_shift_to_wavelength(self.true_shifts_cm1() + self.shift_error_cm1, self.laser_nm)
        fitted = np.polynomial.polynomial.polyfit(p, wrong, max(3, len(coeffs) - 1))
        return tuple(float(c) for c in fitted)


def _pixel_edges(centres: FloatArray) -> FloatArray:
    mid = 0.5 * (centres[1:] + centres[:-1])
    first = centres[0] - (mid[0] - centres[0])
    last = centres[-1] + (centres[-1] - mid[-1])
    return np.concatenate([[first], mid, [last]])


def raman_on_pixels(shift_cm1: ArrayLike, intensity: ArrayLike, model: InstrumentModel) -> FloatArray:
    """Library spectrum -> noise-free Raman signal per pixel, peak 1.0, line shape applied.

    Each pixel gets the mean of the library spectrum over its shift interval (via the
    cumulative integral), which keeps narrow bands that fall between pixel centres.
    Outside the library's measured range the signal is zero.
    """
    x = np.asarray(shift_cm1, dtype=np.float64)
    y = np.clip(np.asarray(intensity, dtype=np.float64), 0.0, None)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    keep = np.concatenate([[True], np.diff(x) > 0])
    x, y = x[keep], y[keep]
    if y.max() > 0:
        y = y / y.max()
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(x))])
    edges = _pixel_edges(model.true_shifts_cm1())
    ce = np.clip(edges, x[0], x[-1])
    area = np.interp(ce, x, cum)
    width = np.diff(edges)
    signal = np.diff(area) / np.where(width > 0, width, 1.0)
    if model.fwhm_px > 0:
        sigma = model.fwhm_px / 2.3548
        half = int(np.ceil(4 * sigma))
        k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
        signal = np.convolve(signal, k / k.sum(), mode="same")
    peak = signal.max()
    return signal / peak if peak > 0 else signal


@functools.lru_cache(maxsize=8)
def _unit_axis(pixels: int) -> FloatArray:
    axis = np.linspace(0.0, 1.0, pixels)
    axis.setflags(write=False)
    return axis


def fluorescence_background(model: InstrumentModel, rng: np.random.Generator) -> FloatArray:
    """A broad, smooth, positive background with peak 1.0 (shape drawn from `rng`)."""
    x = _unit_axis(model.pixels)
    centre = rng.uniform(0.2, 1.2)
    width = rng.uniform(0.5, 1.2)
    tilt = rng.uniform(-0.3, 0.3)
    bg = np.exp(-0.5 * ((x - centre) / width) ** 2) + tilt * (x - 0.5) + 0.3
    bg = np.clip(bg, 0.05, None)
    return np.asarray(bg / bg.max(), dtype=np.float64)


def _fixed_pattern(model: InstrumentModel) -> FloatArray:
    # Fixed for an instrument (same every frame), so seeded from the model, not from `rng`.
    return _fixed_pattern_for(model.pixels, model.fixed_pattern_counts)


@functools.lru_cache(maxsize=8)
def _fixed_pattern_for(pixels: int, spread_counts: float) -> FloatArray:
    # Cached: a fast emulator serves 1,000 frames/s and this never changes for an instrument.
    pattern = np.random.default_rng(pixels).normal(0.0, spread_counts, pixels)
    pattern.setflags(write=False)
    return pattern


def _sample_brightness(intensity: ArrayLike, spread: float) -> float:
    if spread == 1.0:
        return 1.0
    u = zlib.crc32(np.ascontiguousarray(intensity, dtype=np.float64).tobytes()) / 2.0**32
    return float(spread ** (u - 0.5))


def simulate_counts(
    shift_cm1: ArrayLike,
    intensity: ArrayLike,
    model: InstrumentModel,
    rng: np.random.Generator,
    *,
    dark: bool = False,
    fluorescence: FloatArray | None = None,
    raman: FloatArray | None = None,
) -> NDArray[np.uint16]:
    """One detector readout (uint16 counts per pixel) of a library spectrum.

    `dark=True` simulates a laser-off exposure (offset, dark current, noise, cosmics only).
    `fluorescence` lets a caller keep one background shape across frames of a sample;
    by default a new shape is drawn from `rng`. `raman` is `raman_on_pixels(shift_cm1,
    intensity, model)` computed once by a caller that exposes the same sample many times
    (the emulator): the clean signal does not change between frames, only the noise.
    """
    n = model.pixels
    t = float(model.integration_ms)
    avg = max(1, int(model.averages))
    electrons = np.full(n, model.dark_current_e_per_ms * t)
    if not dark:
        if raman is None:
            raman = raman_on_pixels(shift_cm1, intensity, model)
        fluo = fluorescence if fluorescence is not None else fluorescence_background(model, rng)
        bright = _sample_brightness(intensity, model.sample_brightness_spread)
        electrons += model.signal_e_per_ms * bright * t * (raman + model.fluorescence_ratio * fluo)
    # Sum of `avg` Poisson exposures is Poisson with `avg` times the mean.
    summed = rng.poisson(np.clip(electrons, 0.0, None) * avg).astype(np.float64)
    summed += rng.normal(0.0, model.read_noise_e * np.sqrt(avg), n)
    counts = summed / avg / model.gain_e_per_count
    counts += model.dark_offset_counts + _fixed_pattern(model)
    for _ in range(rng.poisson(model.cosmic_rate)):
        # A cosmic ray hits one exposure of the `avg`, so averaging dilutes it.
        pos = int(rng.integers(0, n))
        width = int(rng.integers(1, 3))
        counts[pos : pos + width] += rng.uniform(*model.cosmic_counts) / avg
    return np.clip(np.rint(counts), 0, FULL_SCALE).astype(np.uint16)
