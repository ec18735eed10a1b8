"""Reference band tables: the synthetic samples the emulator can serve and the certified lines
`edge calibrate` measures against.

Band positions follow ASTM E1840 (polystyrene, cyclohexane) and silicon's first-order phonon
line; relative heights and widths are typical of a 785 nm instrument, not certified values.
The emulator renders `REFERENCE_BANDS` (with a deliberate calibration error, to exercise
`edge calibrate`); the edge fits `CALIBRATION_LINES_CM1`. Both must name the same samples.
"""

from __future__ import annotations

import hashlib

import numpy as np

from raman_core.errors import DataError
from raman_core.rruff_format import RamanSpectrum


class UnknownReferenceError(DataError):
    """A reference sample name that is not in the tables."""


#: (centre cm-1, relative height, FWHM cm-1) of each sample's bands.
REFERENCE_BANDS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "polystyrene": (
        (620.9, 0.22, 8.0),
        (795.8, 0.10, 10.0),
        (1001.4, 1.00, 6.0),
        (1031.8, 0.28, 8.0),
        (1155.3, 0.13, 10.0),
        (1450.5, 0.10, 14.0),
        (1583.1, 0.09, 8.0),
        (1602.3, 0.30, 8.0),
    ),
    "cyclohexane": (
        (801.3, 1.00, 6.0),
        (1028.3, 0.35, 7.0),
        (1157.6, 0.08, 8.0),
        (1266.4, 0.25, 8.0),
        (1444.4, 0.45, 10.0),
    ),
    "silicon": ((520.7, 1.00, 4.5),),
}


def reference_sample(name: str) -> RamanSpectrum:
    """A noiseless, 0.5 cm-1-sampled spectrum of `name` shaped like a library entry."""
    if name not in REFERENCE_BANDS:
        raise UnknownReferenceError(f"unknown sample {name!r}; known: {', '.join(sorted(REFERENCE_BANDS))}")
    x = np.arange(100.0, 1900.0, 0.5)
    y = np.zeros_like(x)
    for centre, height, fwhm in REFERENCE_BANDS[name]:
        gamma = fwhm / 2.0  # Lorentzian bands, as liquids and crystals show
        y += height * gamma**2 / ((x - centre) ** 2 + gamma**2)
    digest = hashlib.sha256(repr(REFERENCE_BANDS[name]).encode()).hexdigest()
    return RamanSpectrum(
        file=f"sample:{name}",
        mineral=name.capitalize(),
        rruff_id=f"REF-{name}",
        laser_nm=None,
        data_type="Processed",
        orientation="unoriented",
        status="reference sample (synthetic)",
        xray_confirmed=False,
        digest=digest,
        shift_cm1=x,
        intensity=y,
    )


#: Certified band positions (cm-1) used to measure a shift-axis offset: the strong, isolated
#: bands of each reference (weak or overlapping ones would bias the fit).
CALIBRATION_LINES_CM1: dict[str, tuple[float, ...]] = {
    "polystyrene": (620.9, 1001.4, 1031.8, 1155.3, 1602.3),
    "cyclohexane": (801.3, 1028.3, 1266.4, 1444.4),
    "silicon": (520.7,),
}
