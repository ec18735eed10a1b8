"""`firmware_bridge` command line: `probe` a device, `simulate` one on a pty.

Thin on purpose: parse flags, call the library, map BridgeError (and the edge/trainer input
errors the RRUFF loader may raise) to one line on stderr and exit code 1.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from firmware_bridge.errors import BridgeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"firmware_bridge: {message}", err=True)
    return typer.Exit(1)


@app.command()
def probe(
    port: Annotated[str, typer.Option("--port", "-p", help="Device path or pyserial URL.")],
    baud: Annotated[int, typer.Option(help="Baud rate (ignored by USB CDC devices).")] = 115200,
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="Per-command timeout.")] = 2.0,
    mode: Annotated[str, typer.Option(help="auto, binary or line.")] = "auto",
) -> None:
    """Print what the device says about itself (run this first after plugging it in)."""
    from firmware_bridge.client import Spectrometer

    if mode not in ("auto", "binary", "line"):
        raise _fail(f"--mode must be auto, binary or line, not {mode!r}")
    if "://" not in port and not Path(port).exists():
        raise _fail(f"{port} does not exist (is the device plugged in? try ls /dev/serial/by-id)")
    try:
        spec = Spectrometer.open(port, baud=baud, timeout_s=timeout_s, retries=1, mode=mode, reconnect=False)  # type: ignore[arg-type]
    except BridgeError as err:
        raise _fail(str(err)) from None
    try:
        info = spec.handshake()
    except BridgeError as err:
        raise _fail(f"{port}: device does not answer ({err})") from None
    finally:
        spec.close()
    shifts = info.shifts_cm1()
    cal = ", ".join(f"{c:.6g}" for c in info.calibration_nm)
    typer.echo(f"port:        {port} ({spec.transport.codec.mode} protocol)")
    typer.echo(f"model:       {info.model}")
    typer.echo(f"serial:      {info.serial_number}")
    typer.echo(f"firmware:    {info.firmware_version}")
    typer.echo(f"pixels:      {info.pixel_count}")
    typer.echo(f"laser:       {info.laser_nm:g} nm")
    typer.echo(f"calibration: [{cal}] (nm, c0 first)")
    typer.echo(f"range:       {shifts.min():.0f}-{shifts.max():.0f} cm-1")
    typer.echo(f"integration: {info.integration_min_ms}-{info.integration_max_ms} ms")


@app.command()
def simulate(
    link: Annotated[str | None, typer.Option(help="Stable symlink to the pty, e.g. /tmp/ttyRAMAN0.")] = None,
    spectra: Annotated[Path | None, typer.Option(help="RRUFF folder or zip (default: built-in sample tray).")] = None,
    laser_nm: Annotated[float, typer.Option("--laser-nm")] = 785.0,
    pixels: Annotated[int, typer.Option()] = 1024,
    rate: Annotated[float, typer.Option(help="Stale-stream / line-mode rate, Hz.")] = 5.0,
    seed: Annotated[int, typer.Option()] = 0,
    minerals: Annotated[str | None, typer.Option(help="Comma list; default: ~20 common minerals; 'all'.")] = None,
    sample: Annotated[
        str | None, typer.Option(help="A reference sample instead of minerals: polystyrene, cyclohexane, silicon.")
    ] = None,
    ground_truth: Annotated[Path | None, typer.Option("--ground-truth", help="JSON-lines log.")] = None,
    line_mode: Annotated[bool, typer.Option("--line-mode", help="Serve the text protocol.")] = False,
    hold: Annotated[int, typer.Option(help="Consecutive spectra per sample.")] = 1,
    fluorescence_ratio: Annotated[float, typer.Option("--fluorescence-ratio")] = 3.0,
    shift_error_cm1: Annotated[float, typer.Option("--shift-error-cm1")] = 0.0,
    cosmic_rate: Annotated[float, typer.Option("--cosmic-rate")] = 0.2,
    signal_e_per_ms: Annotated[float, typer.Option("--signal-e-per-ms")] = 60.0,
    corrupt_rate: Annotated[float, typer.Option("--corrupt-rate")] = 0.0,
    drop_rate: Annotated[float, typer.Option("--drop-rate")] = 0.0,
    garbage_rate: Annotated[float, typer.Option("--garbage-rate")] = 0.0,
    stall_after: Annotated[int | None, typer.Option("--stall-after")] = None,
    stall_s: Annotated[float, typer.Option("--stall-s")] = 2.0,
    disconnect_after: Annotated[int | None, typer.Option("--disconnect-after")] = None,
    reconnect_after_s: Annotated[float, typer.Option("--reconnect-after-s")] = 1.0,
    stale_stream: Annotated[bool, typer.Option("--stale-stream")] = False,
) -> None:
    """Emulate a spectrometer on a pseudo-terminal until Ctrl-C."""
    from firmware_bridge.emulator import Emulator, EmulatorConfig, Faults
    from firmware_bridge.library import DEFAULT_MINERALS
    from firmware_bridge.physics import InstrumentModel

    if minerals is None:
        chosen: tuple[str, ...] | None = DEFAULT_MINERALS
    elif minerals.strip().lower() == "all":
        chosen = None
    else:
        chosen = tuple(x.strip() for x in minerals.split(",") if x.strip())
    for name, rate_value in (("corrupt", corrupt_rate), ("drop", drop_rate), ("garbage", garbage_rate)):
        if not 0.0 <= rate_value <= 1.0:
            raise _fail(f"--{name}-rate must be between 0 and 1")
    config = EmulatorConfig(
        spectra_path=spectra,
        minerals=chosen,
        sample=sample,
        laser_nm=laser_nm,
        pixels=pixels,
        rate_hz=rate,
        seed=seed,
        link=link,
        ground_truth=str(ground_truth) if ground_truth else None,
        line_mode=line_mode,
        hold=hold,
        model=InstrumentModel(
            fluorescence_ratio=fluorescence_ratio,
            shift_error_cm1=shift_error_cm1,
            cosmic_rate=cosmic_rate,
            signal_e_per_ms=signal_e_per_ms,
        ),
        faults=Faults(
            corrupt_rate=corrupt_rate,
            drop_rate=drop_rate,
            garbage_rate=garbage_rate,
            stall_after=stall_after,
            stall_s=stall_s,
            disconnect_after=disconnect_after,
            reconnect_after_s=reconnect_after_s,
            stale_stream=stale_stream,
        ),
    )
    try:
        emu = Emulator(config)
        emu.start()
    except (BridgeError, ValueError, OSError) as err:
        raise _fail(str(err)) from None
    typer.echo(f"pty: {emu.slave_path}")
    if link:
        typer.echo(f"link: {link}")
    typer.echo(
        f"serving {len(emu.minerals)} minerals ({', '.join(emu.minerals[:8])}"
        f"{', ...' if len(emu.minerals) > 8 else ''}); "
        f"{'line' if line_mode else 'binary'} protocol; Ctrl-C to stop"
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
        s = emu.stats
        typer.echo(
            f"sent {s.spectra_sent} spectra, {s.frames_sent} frames; dropped {s.dropped}, "
            f"corrupted {s.corrupted}, disconnects {s.disconnects}, tx_overflow {s.tx_overflow}",
            err=True,
        )
    sys.exit(0)


def main() -> None:
    """Console entry point: every expected error is one line and a non-zero exit."""
    from raman_core.cli_errors import run_cli

    run_cli(app, "firmware_bridge")
