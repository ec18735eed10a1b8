"""Raman shift and wavelength, and the detector's full scale.

Pure functions on arrays, shared by the emulator's forward model (`firmware_bridge.physics`)
and the edge's pixel-to-shift conversion (`edge.preprocess`): both must use the same formula,
or the emulator would test a different instrument from the one the edge assumes.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from raman_core.errors import DataError

FloatArray = NDArray[np.float64]

#: Counts of a saturated pixel on the 16-bit detectors the protocol carries (uint16 samples).
FULL_SCALE = 65535


class UnitError(DataError):
    """A wavelength or shift cannot be converted (non-finite, non-positive, wrong shape)."""


def _as_1d(name: str, values: ArrayLike) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise UnitError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def to_raman_shift(wavelength_nm: ArrayLike, laser_nm: float) -> FloatArray:
    """Stokes Raman shift in cm-1 of scattered light at `wavelength_nm` for a laser line."""
    wl = _as_1d("wavelength_nm", wavelength_nm)
    if wl.size == 0:
        raise UnitError("wavelength_nm is empty")
    if not np.isfinite(wl).all():
        bad = ~np.isfinite(wl)
        first = int(np.flatnonzero(bad)[0])
        raise UnitError(f"wavelength_nm has {int(bad.sum())} non-finite values (NaN/inf), first at index {first}")
    if not np.isfinite(laser_nm) or laser_nm <= 0:
        raise UnitError(f"laser wavelength must be a positive number of nm, got {laser_nm}")
    if (wl <= 0).any():
        raise UnitError("wavelengths must be positive (check the calibration polynomial)")
    return 1e7 / float(laser_nm) - 1e7 / wl


def raman_shift_to_wavelength(shift_cm1: ArrayLike, laser_nm: float) -> FloatArray:
    """Inverse of `to_raman_shift` (the emulator's forward model)."""
    s = _as_1d("shift_cm1", shift_cm1)
    return 1e7 / (1e7 / float(laser_nm) - s)
