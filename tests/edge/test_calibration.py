"""Raman-shift calibration: the pure measurement, `edge calibrate` through a real pty, and the
daemon-side correction restoring accuracy on a miscalibrated (emulated) device."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import load_bundle
from edge.calibrate import calibrate
from edge.calibration import REFERENCE_LINES_CM1, CalibrationError, measure_shift_offset
from edge.config import load_config
from edge.errors import ConfigError
from edge.pipeline import Analyzer
from firmware_bridge.client import Spectrometer
from firmware_bridge.emulator import Emulator, EmulatorConfig
from firmware_bridge.physics import InstrumentModel
from raman_core.bands import reference_sample

X = np.linspace(100.0, 1900.0, 1024)  # ~1.8 cm-1 per pixel, like the emulator


def measured(sample: str, offset: float, seed: int = 0, counts: float = 3000.0) -> np.ndarray:
    """A raw spectrum of `sample` as seen by a device whose axis reads `offset` too high."""
    ref = reference_sample(sample)
    rng = np.random.default_rng(seed)
    lines = np.interp(X - offset, ref.shift_cm1, ref.intensity)
    background = 500.0 + 2000.0 * np.exp(-(((X - 900.0) / 600.0) ** 2))
    return rng.poisson(background + counts * lines).astype(np.float64)


@pytest.mark.parametrize("offset", [0.0, 3.3, -7.5, 12.0, 25.0, -33.0])
@pytest.mark.parametrize("sample", ["polystyrene", "cyclohexane", "silicon"])
def test_offset_is_recovered_to_half_a_wavenumber(sample: str, offset: float) -> None:
    check = measure_shift_offset(X, measured(sample, offset, seed=int(abs(offset) * 10)), sample)
    assert check.offset_cm1 == pytest.approx(offset, abs=0.5)
    assert check.n_found == len(REFERENCE_LINES_CM1[sample])
    assert check.residual_cm1 < 1.0


def test_wrong_sample_or_no_signal_is_an_error_not_an_offset() -> None:
    with pytest.raises(CalibrationError, match="found .* of 5 polystyrene lines"):
        measure_shift_offset(X, measured("silicon", 0.0), "polystyrene")
    with pytest.raises(CalibrationError, match="not found near"):
        measure_shift_offset(X, measured("polystyrene", 0.0, counts=0.0), "polystyrene")
    with pytest.raises(CalibrationError, match="unknown reference 'neon'"):
        measure_shift_offset(X, measured("polystyrene", 0.0), "neon")
    short = X < 450
    with pytest.raises(CalibrationError, match="none of the silicon lines"):
        measure_shift_offset(X[short], measured("silicon", 0.0)[short], "silicon")


def test_offset_is_a_validated_config_key() -> None:
    assert load_config(env={"RAMAN_EDGE_SHIFT_OFFSET_CM1": "-4.25"}).shift_offset_cm1 == -4.25
    with pytest.raises(ConfigError, match="shift_offset_cm1 must be within"):
        load_config(env={"RAMAN_EDGE_SHIFT_OFFSET_CM1": "250"})


def _emulator(**kw: object) -> Emulator:
    emu = Emulator(EmulatorConfig(**kw))  # type: ignore[arg-type]
    emu.start()
    return emu


def test_edge_calibrate_through_a_pty_reports_the_devices_error(tmp_path: Path) -> None:
    emu = _emulator(sample="polystyrene", model=InstrumentModel(shift_error_cm1=11.0), seed=3)
    try:
        cfg = load_config(None, env={}, overrides={"port": emu.port, "integration_ms": 100})
        out = io.StringIO()
        assert calibrate(cfg, "polystyrene", frames=4, as_json=True, out=out) == 0
    finally:
        emu.stop()
    report = json.loads(out.getvalue())
    assert report["offset_cm1"] == pytest.approx(11.0, abs=0.5)
    assert report["ok"] and report["device"]["serial"] == "EMU-0001"


def test_configured_offset_restores_accuracy_of_a_miscalibrated_device() -> None:
    # 12 cm-1 of calibration error costs the CNN about half its accuracy (bench/robustness).
    # The same frames, converted with and without the offset edge calibrate measured.
    bundle = load_bundle()
    error = 12.0
    model = InstrumentModel(shift_error_cm1=error)
    emu = _emulator(sample="polystyrene", model=model, seed=4)
    try:
        cfg = load_config(None, env={}, overrides={"port": emu.port, "integration_ms": 100})
        out = io.StringIO()
        calibrate(cfg, "polystyrene", frames=4, as_json=True, out=out)
    finally:
        emu.stop()
    offset = json.loads(out.getvalue())["offset_cm1"]
    emu = _emulator(model=model, seed=5, hold=1)
    try:
        with Spectrometer.open(emu.port) as spec:
            info = spec.handshake()
            spec.configure(integration_ms=100)
            frames = spec.acquire(24)
        truth = {g.seq: g.mineral for g in emu.ground_truth}
    finally:
        emu.stop()
    # The CNN alone (no library) is what the offset rescues; the hybrid aligns each spectrum
    # to its best library match (edge.alignment) and tolerates the error by itself.
    scores = {}
    for lib in (False, True):
        plain = Analyzer(bundle, use_bundle_library=lib)
        fixed = replace_offset(plain, offset)
        for name, an in (("plain", plain), ("fixed", fixed)):
            shifts = an.shifts_for(info.calibration_nm, info.laser_nm, info.pixel_count)
            results = [an.analyze_counts(f.counts, shifts) for f in frames]
            scores[name, lib] = sum(
                a.status == "ok" and a.top[0][0] == truth[f.seq] for a, f in zip(results, frames, strict=True)
            )
    print(f"\n{error} cm-1 error, offset {offset}: correct of 24 (as reported, with offset): {scores}")
    assert scores["fixed", False] >= scores["plain", False] + 4
    assert scores["fixed", True] >= scores["plain", True] - 1 and scores["fixed", True] >= 18


def replace_offset(an: Analyzer, offset: float) -> Analyzer:
    return Analyzer(
        an.bundle,
        classifier=an.classifier,
        weights=an.weights,
        limits=an.limits,
        shift_offset_cm1=offset,
        use_bundle_library=an._use_bundle_library,
    )
