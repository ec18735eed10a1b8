"""edge.instrument: the exposure every command configures, and the one dark frame, on a real
emulator where the device is involved."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge import instrument
from edge.config import load_config
from edge.errors import InputError
from firmware_bridge.emulator import Emulator, EmulatorConfig

LIMITS = SimpleNamespace(integration_min_ms=10, integration_max_ms=5000)


def cfg(**overrides: object) -> object:
    return load_config(None, env={}, overrides=overrides)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # simulate: at most 100 ms (the emulator's detector) and never longer than the period
        ({"simulate": True, "integration_ms": 1000, "rate_hz": 1.0}, (100, 1, 1000)),
        ({"simulate": True, "integration_ms": 1000, "rate_hz": 20.0}, (50, 1, 50)),
        ({"simulate": True, "integration_ms": 1, "rate_hz": 1.0}, (10, 1, 1000)),  # device minimum
        # a real device streams back to back, within its limits
        ({"port": "/dev/x", "integration_ms": 200, "averages": 3}, (200, 3, 600)),
        ({"port": "/dev/x", "integration_ms": 60_000, "averages": 2}, (5000, 2, 10_000)),
    ],
)
def test_configured_exposure(overrides: dict[str, object], expected: tuple[int, int, int]) -> None:
    e = instrument.configured_exposure(cfg(**overrides), LIMITS)  # type: ignore[arg-type]
    assert (e.integration_ms, e.averages, e.period_ms) == expected


def test_open_instrument_configures_the_device_and_takes_a_clean_dark(tmp_path: Path) -> None:
    c = cfg(simulate=True, integration_ms=1000, rate_hz=1.0)
    with ExitStack() as stack:
        port = instrument.start_emulator(Emulator(EmulatorConfig(seed=3)), stack)
        spec, info, exposure = instrument.open_instrument(c, port, stack)  # type: ignore[arg-type]
        assert exposure.integration_ms == 100 and info.pixel_count > 0
        dark, n_spikes = instrument.take_dark(spec)
        assert dark.shape == (info.pixel_count,) and n_spikes >= 0 and np.all(np.isfinite(dark))
        frame = spec.acquire(1)[0]
        assert frame.integration_ms == 100  # what open_instrument configured


def test_a_port_that_does_not_exist_is_one_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"cannot open spectrometer at {tmp_path / 'ttyNONE'}"):
        instrument.open_spectrometer(str(tmp_path / "ttyNONE"), 115200, reconnect=False, retries=1)
