"""Getting a spectrometer ready: the one setup `edge run`, `edge calibrate` and `edge check` share.

open the port -> handshake (which also flushes a stream left running by an earlier session)
-> the configured exposure, clamped to the device's limits -> configure -> a dark frame. Device
faults at open and handshake become `InputError` naming the port, so every command says the
same thing about the same fault; later faults stay `BridgeError` for the caller to place (the
daemon retries them, the CLI prints them as one line).

`--simulate` runs the emulator (firmware_bridge) on a pty in this process: the same code path
as a real device, from the serial bytes up.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from edge.config import EdgeConfig
from edge.errors import InputError
from edge.preprocess import despike

if TYPE_CHECKING:
    from firmware_bridge.client import Spectrometer
    from firmware_bridge.emulator import Emulator

#: The emulator's virtual detector is calibrated for ~100 ms exposures (longer ones saturate
#: its brightest minerals), so --simulate caps the integration time there.
SIMULATE_MAX_INTEGRATION_MS = 100


@dataclass(frozen=True)
class Exposure:
    integration_ms: int
    averages: int
    period_ms: int  # one spectrum every period_ms while streaming


def simulated_integration_ms(integration_ms: int, period_ms: int) -> int:
    """The emulator's cap: at most SIMULATE_MAX_INTEGRATION_MS, and no longer than the period."""
    return min(integration_ms, SIMULATE_MAX_INTEGRATION_MS, period_ms)


def configured_exposure(cfg: EdgeConfig, info: Any) -> Exposure:
    """The configured exposure within the device's limits (`info`: the handshake's DeviceInfo).

    A real device streams back to back (period = integration x averages); the emulator streams
    at `rate_hz`.
    """
    if cfg.simulate:
        period_ms = max(1, round(1000.0 / cfg.rate_hz))
        integration_ms = simulated_integration_ms(cfg.integration_ms, period_ms)
    else:
        integration_ms = cfg.integration_ms
    integration_ms = min(max(integration_ms, info.integration_min_ms), info.integration_max_ms)
    if not cfg.simulate:
        period_ms = integration_ms * cfg.averages
    return Exposure(integration_ms=integration_ms, averages=cfg.averages, period_ms=period_ms)


def start_emulator(emulator: Emulator, stack: ExitStack) -> str:
    """Start `emulator` on a pty, stopped when `stack` closes; returns the port to open."""
    port = emulator.start()
    stack.callback(emulator.stop)
    return port


def open_spectrometer(port: str, baud: int, **options: Any) -> Spectrometer:
    """`Spectrometer.open` (options: timeout_s, retries, reconnect) with the fault as InputError."""
    from firmware_bridge.client import Spectrometer
    from firmware_bridge.errors import BridgeError

    try:
        return Spectrometer.open(port, baud=baud, **options)
    except BridgeError as err:
        raise InputError(f"cannot open spectrometer at {port}: {err}") from err


def handshake(spec: Spectrometer, port: str) -> Any:
    """The device's DeviceInfo (the handshake also flushes a stale stream)."""
    from firmware_bridge.errors import BridgeError

    try:
        return spec.handshake()
    except BridgeError as err:
        raise InputError(f"spectrometer at {port} does not answer: {err}") from err


def set_up(spec: Spectrometer, cfg: EdgeConfig, port: str) -> tuple[Any, Exposure]:
    """Handshake and configure the configured exposure; returns (DeviceInfo, Exposure)."""
    info = handshake(spec, port)
    exposure = configured_exposure(cfg, info)
    spec.configure(integration_ms=exposure.integration_ms, averages=exposure.averages)
    return info, exposure


def open_instrument(cfg: EdgeConfig, port: str, stack: ExitStack) -> tuple[Spectrometer, Any, Exposure]:
    """Open `port` (closed when `stack` closes), handshake, configure: (spectrometer, info, exposure)."""
    spec = stack.enter_context(open_spectrometer(port, cfg.baud))
    info, exposure = set_up(spec, cfg, port)
    return spec, info, exposure


def take_dark(spec: Spectrometer) -> tuple[NDArray[np.float64], int]:
    """A dark frame, despiked: (counts, cosmic-ray pixels removed). BridgeError propagates.

    A cosmic ray in the one dark frame would become a negative spike in every spectrum after
    subtraction (and despike only removes positive spikes), so it is cleaned first.
    """
    return despike(spec.acquire_dark().counts.astype(np.float64))
