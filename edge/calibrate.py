"""`edge calibrate`: measure a reference on the spectrometer and report its shift-axis offset.

The I/O side of edge.calibration: acquire a dark frame and a few spectra of the reference,
average, subtract, convert pixels with the device's own polynomial (no configured offset),
measure, and print the configuration line that corrects it. Exit codes: 0 the lines were
found and agree with one offset; 1 they disagree (the polynomial itself is wrong, an offset
will not fix it); device and input errors go through the CLI's EdgeError handling.
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from dataclasses import asdict
from typing import Any, TextIO

import numpy as np

from edge import instrument
from edge.calibration import REFERENCE_LINES_CM1, CalibrationCheck, measure_shift_offset
from edge.config import EdgeConfig
from edge.errors import InputError, UsageError
from edge.preprocess import pixel_shifts

#: Above this RMS disagreement between lines, a single offset does not describe the error.
MAX_RESIDUAL_CM1 = 2.0


def calibrate(
    cfg: EdgeConfig,
    reference: str,
    *,
    frames: int = 10,
    as_json: bool = False,
    simulate_shift_error_cm1: float = 0.0,
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    if reference not in REFERENCE_LINES_CM1:
        raise UsageError(f"--reference must be one of {', '.join(sorted(REFERENCE_LINES_CM1))}, not {reference!r}")
    if frames < 1:
        raise UsageError("--frames must be >= 1")
    if not cfg.simulate and not cfg.port:
        raise InputError("no spectrometer: give --port PORT (e.g. /dev/serial/by-id/...) or --simulate")
    from firmware_bridge.errors import BridgeError

    with ExitStack() as stack:
        port = cfg.port or ""
        if cfg.simulate:
            port = instrument.start_emulator(_emulator(reference, simulate_shift_error_cm1), stack)
        try:
            spec, info, exposure = instrument.open_instrument(cfg, port, stack)
            check = measure_reference(spec, info, reference, frames)
        except BridgeError as err:
            raise InputError(f"spectrometer at {port}: {err}") from err
    integration_ms = exposure.integration_ms
    ok = check.residual_cm1 <= MAX_RESIDUAL_CM1
    report = {
        "device": {"model": info.model, "serial": info.serial_number, "laser_nm": info.laser_nm},
        "frames": frames,
        "integration_ms": integration_ms,
        **asdict(check),
        "configured_offset_cm1": cfg.shift_offset_cm1,
        "ok": ok,
    }
    if as_json:
        out.write(json.dumps(report) + "\n")
    else:
        _print(check, cfg, info, ok, out)
    return 0 if ok else 1


def measure_reference(spec: Any, info: Any, reference: str, frames: int, dark: Any = None) -> CalibrationCheck:
    """Average `frames` spectra of `reference` on a configured, handshaken spectrometer, subtract
    the dark frame (taken now unless given), and measure the offset on the device's own shift
    axis (no configured offset applied). Shared by `edge calibrate` and the daemon's health check.
    BridgeError (device) and CalibrationError (lines not found) propagate."""
    if dark is None:
        dark, _ = instrument.take_dark(spec)
    counts = np.mean([f.counts.astype(np.float64) for f in spec.acquire(frames)], axis=0)
    shifts = pixel_shifts(info.calibration_nm, info.laser_nm, info.pixel_count)
    return measure_shift_offset(shifts, counts - dark, reference)


def _emulator(reference: str, shift_error_cm1: float) -> Any:
    from firmware_bridge.emulator import Emulator, EmulatorConfig
    from firmware_bridge.physics import InstrumentModel
    from raman_core.bands import REFERENCE_BANDS as SAMPLES

    if reference not in SAMPLES:
        raise UsageError(f"the emulator has no {reference} sample; it has {', '.join(sorted(SAMPLES))}")
    return Emulator(EmulatorConfig(sample=reference, model=InstrumentModel(shift_error_cm1=shift_error_cm1)))


def _print(check: CalibrationCheck, cfg: EdgeConfig, info: Any, ok: bool, out: TextIO) -> None:
    out.write(f"{info.model} {info.serial_number}, {info.laser_nm:g} nm laser; reference {check.reference}\n")
    out.write("  certified   measured    error   height\n")
    for m in check.lines:
        if m.measured_cm1 is None:
            out.write(f"  {m.expected_cm1:9.1f}   not found\n")
        else:
            out.write(f"  {m.expected_cm1:9.1f}  {m.measured_cm1:9.2f}  {m.error_cm1:+7.2f}   {m.height:6.2f}\n")
    out.write(
        f"offset {check.offset_cm1:+.2f} cm-1 (the device reads that much too high), "
        f"residual {check.residual_cm1:.2f} cm-1 over {check.n_found} lines\n"
    )
    if not ok:
        out.write(
            f"the lines disagree by more than {MAX_RESIDUAL_CM1} cm-1: the wavelength polynomial itself is off; "
            "a single offset will not correct it. Recalibrate the device (e.g. a neon lamp).\n"
        )
        return
    if abs(check.offset_cm1 - cfg.shift_offset_cm1) < 0.5:
        out.write(f"the configured shift_offset_cm1 = {cfg.shift_offset_cm1:g} already matches\n")
    else:
        out.write(
            "to correct every spectrum, put this in edge.toml (or RAMAN_EDGE_SHIFT_OFFSET_CM1):\n"
            f"shift_offset_cm1 = {check.offset_cm1:.2f}\n"
        )
