"""Synthetic reference samples the emulator can put under its laser (instead of RRUFF minerals).

Used to exercise `edge calibrate`: a polystyrene or silicon reference with known bands, seen
through the emulator's optics, noise and (with `shift_error_cm1`) a wrong calibration. Band
positions follow ASTM E1840 (polystyrene, cyclohexane) and silicon's phonon line; relative
heights and widths are typical of a 785 nm instrument, not certified values.
"""

from __future__ import annotations

import hashlib

import numpy as np

from firmware_bridge.errors import UsageError
from trainer.rruff import RamanSpectrum

#: (centre cm-1, relative height, FWHM cm-1) of each sample's bands.
SAMPLES: dict[str, tuple[tuple[float, float, float], ...]] = {
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
    if name not in SAMPLES:
        raise UsageError(f"unknown sample {name!r}; known: {', '.join(sorted(SAMPLES))}")
    x = np.arange(100.0, 1900.0, 0.5)
    y = np.zeros_like(x)
    for centre, height, fwhm in SAMPLES[name]:
        gamma = fwhm / 2.0  # Lorentzian bands, as liquids and crystals show
        y += height * gamma**2 / ((x - centre) ** 2 + gamma**2)
    digest = hashlib.sha256(repr(SAMPLES[name]).encode()).hexdigest()
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
