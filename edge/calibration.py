"""Raman-shift calibration check against a reference material with certified band positions.

A device whose pixel->wavelength polynomial is off (or whose laser has drifted) shifts every
band by the same few cm-1. The quality gate cannot see that, and it costs more accuracy than
any other fault we measured (bench/robustness: 10 cm-1 halves the CNN's top-1). Measuring a
reference gives the offset; `shift_offset_cm1` in the daemon configuration then subtracts it
from every spectrum's shift axis.

Method: despike and remove the baseline on the native pixel axis (no resampling, so no
interpolation bias), find the offset that best aligns a comb of the reference's lines with
the spectrum (coarse search over +/-`max_offset_cm1`), then locate each line near its
expected position by a parabola through the three highest pixels. The offset is the median
line error; the residual (spread of the line errors around it) says whether a single offset
explains the error or the polynomial itself is wrong (a residual of several cm-1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edge.errors import SpectrumError
from edge.preprocess import despike, noise_sigma, remove_baseline, sort_unique
from raman_core.bands import CALIBRATION_LINES_CM1

#: Certified band positions (cm-1); the table lives with the other band tables.
REFERENCE_LINES_CM1 = CALIBRATION_LINES_CM1


@dataclass(frozen=True)
class LineMatch:
    expected_cm1: float
    measured_cm1: float | None  # None: no band found near the expected position
    height: float  # baseline-corrected height of the band, relative to the strongest line

    @property
    def error_cm1(self) -> float | None:
        return None if self.measured_cm1 is None else self.measured_cm1 - self.expected_cm1


@dataclass(frozen=True)
class CalibrationCheck:
    reference: str
    offset_cm1: float  # measured - certified: what the device's shift axis reads too high
    residual_cm1: float  # RMS of the line errors around the offset
    lines: tuple[LineMatch, ...]

    @property
    def n_found(self) -> int:
        return sum(m.measured_cm1 is not None for m in self.lines)


class CalibrationError(SpectrumError):
    """The reference's lines were not found in the spectrum (wrong sample, too weak, off range)."""


def measure_shift_offset(
    shift_cm1: ArrayLike,
    intensity: ArrayLike,
    reference: str,
    *,
    corrected: bool = False,
    max_offset_cm1: float = 40.0,
    min_lines: int | None = None,
) -> CalibrationCheck:
    """How far `shift_cm1` is off, from a spectrum of `reference` (see the module docstring).

    `corrected=True` skips despiking and baseline removal (already done). Raises
    CalibrationError when fewer than `min_lines` lines are found (default: all of a one- or
    two-line reference, else all but one).
    """
    if reference not in REFERENCE_LINES_CM1:
        raise CalibrationError(f"unknown reference {reference!r}; known: {', '.join(sorted(REFERENCE_LINES_CM1))}")
    lines = np.array(REFERENCE_LINES_CM1[reference])
    x, y = sort_unique(shift_cm1, intensity)
    if not corrected:
        y, _ = despike(y)
        y = remove_baseline(y)
    inside = (lines - max_offset_cm1 > x[0]) & (lines + max_offset_cm1 < x[-1])
    if not inside.any():
        raise CalibrationError(
            f"the spectrum covers {x[0]:.0f}-{x[-1]:.0f} cm-1: none of the {reference} lines "
            f"({', '.join(f'{v:g}' for v in lines)}) is inside it"
        )
    step = float(np.median(np.diff(x)))
    coarse = _coarse_offset(x, y, lines[inside], max_offset_cm1, step)
    top = float(np.max(y)) or 1.0
    noise = noise_sigma(y) or 1e-12
    matches = []
    window = max(5.0 * step, 8.0)
    for line, ok in zip(lines, inside, strict=True):
        if not ok:
            matches.append(LineMatch(float(line), None, 0.0))
            continue
        matches.append(_locate(x, y, float(line), float(line) + coarse, window, top, noise))
    found = [m for m in matches if m.measured_cm1 is not None]
    need = min_lines if min_lines is not None else (len(lines) if len(lines) <= 2 else len(lines) - 1)
    if len(found) < need:
        missing = ", ".join(f"{m.expected_cm1:g}" for m in matches if m.measured_cm1 is None)
        raise CalibrationError(
            f"found {len(found)} of {len(lines)} {reference} lines (need {need}); not found near: {missing} cm-1. "
            "Is the reference in focus, the laser on, the integration long enough?"
        )
    errors = np.array([m.error_cm1 for m in found], dtype=np.float64)
    offset = float(np.median(errors))
    residual = float(np.sqrt(np.mean((errors - offset) ** 2)))
    return CalibrationCheck(reference, round(offset, 2), round(residual, 2), tuple(matches))


def _coarse_offset(
    x: NDArray[np.float64], y: NDArray[np.float64], lines: NDArray[np.float64], max_offset: float, step: float
) -> float:
    """The offset (cm-1) at which a comb of Gaussians at `lines` best overlaps the spectrum."""
    pos = np.clip(y, 0.0, None)
    sigma = max(2.0 * step, 3.0)
    best, best_score = 0.0, -np.inf
    for d in np.arange(-max_offset, max_offset + 0.25, 0.25):
        comb = np.exp(-0.5 * ((x[:, None] - (lines[None, :] + d)) / sigma) ** 2).sum(axis=1)
        score = float(pos @ comb)
        if score > best_score:
            best, best_score = float(d), score
    return best


def _locate(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    expected: float,
    guess: float,
    window: float,
    top: float,
    noise: float,
) -> LineMatch:
    near = np.flatnonzero(np.abs(x - guess) <= window)
    if near.size < 3:
        return LineMatch(expected, None, 0.0)
    i = int(near[np.argmax(y[near])])
    if i == 0 or i == x.size - 1:
        return LineMatch(expected, None, 0.0)
    if y[i] < 5.0 * noise:
        return LineMatch(expected, None, float(y[i] / top))
    # Sub-pixel centre: a least-squares Gaussian (plus a constant) over the band's pixels; a
    # 3-point estimate is noise-limited to ~1 cm-1 on weak lines.
    from scipy.optimize import curve_fit  # local: keeps `import edge` fast

    sel = np.flatnonzero(np.abs(x - x[i]) <= window)
    sigma0 = max(2.0 * float(np.median(np.diff(x))), 2.0)
    try:
        popt, _ = curve_fit(
            _gaussian,
            x[sel],
            y[sel],
            p0=(float(y[i]), float(x[i]), sigma0, 0.0),
            bounds=((0.0, x[i] - window / 2, 0.5, -np.inf), (np.inf, x[i] + window / 2, 4 * window, np.inf)),
            maxfev=2000,
        )
        centre = float(popt[1])
    except (RuntimeError, ValueError):
        return LineMatch(expected, None, float(y[i] / top))
    return LineMatch(expected, round(float(centre), 2), round(float(y[i] / top), 3))


def _gaussian(x: NDArray[np.float64], a: float, c: float, s: float, b: float) -> NDArray[np.float64]:
    return np.asarray(a * np.exp(-0.5 * ((x - c) / s) ** 2) + b, dtype=np.float64)
