"""`edge` command line: parse flags, load the EdgeConfig once, call one library function.

Expected faults (the EdgeError family) become one red line on stderr and exit code 1
(2 for misuse); a traceback means a bug.
"""

from __future__ import annotations

import os

# The device analyses on one thread. Left alone, OpenBLAS starts a worker per core for every
# matrix product (the library search) and spins them between calls, taking the cores the
# serial reader, the MQTT client and the broker need: the library search took 3.07 ms with
# the default pool and 0.79 ms with one thread on this 2-core machine. Must be set before
# NumPy loads; a value already in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import importlib  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer

from edge.config import EdgeConfig, load_config
from edge.errors import UsageError
from raman_core.errors import RamanError

app = typer.Typer(
    name="edge",
    help="Raman Edge: identify minerals from Raman spectra at the instrument.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")

EXIT_FAULT = 1
EXIT_USAGE = 2

ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config file (see deploy/edge.toml).")
BrokerOpt = typer.Option(None, "--broker", help="mqtt://host:port or mqtts://host:port")
PrefixOpt = typer.Option(None, "--prefix", help="Topic prefix (default 'raman').")
ModelOpt = typer.Option(None, "--model", help="Model bundle directory (default: shipped).")


def _fail(err: RamanError) -> NoReturn:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_USAGE if type(err).__name__ == "UsageError" else EXIT_FAULT)


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except RamanError as err:  # every package's family: bridge, data files, bundle, config
        _fail(err)


def _load(config: Path | None, **overrides: Any) -> EdgeConfig:
    return _guard(lambda: load_config(config, overrides=overrides))


def _entry(module: str, func: str) -> Callable[..., Any]:
    """Import `module.func` lazily; other people's modules may not exist yet."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise  # a real missing dependency inside the module: not ours to hide
        typer.echo(f"{module}.{func}: not implemented yet", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    fn = getattr(mod, func, None)
    if fn is None:
        typer.echo(f"{module}.{func}: not implemented yet", err=True)
        raise typer.Exit(EXIT_USAGE)
    return fn


def _exit_with(rc: Any) -> None:
    if isinstance(rc, int) and rc != 0:
        raise typer.Exit(rc)


def _setup_logging(cfg: EdgeConfig) -> None:
    from edge.logging_setup import configure_logging

    configure_logging(cfg.log_level, cfg.log_format)


@app.command()
def run(
    port: str | None = typer.Option(None, "--port", help="Serial port, e.g. /dev/serial/by-id/…"),
    baud: int | None = typer.Option(None, "--baud", help="Serial baud rate."),
    broker: str | None = BrokerOpt,
    device_id: str | None = typer.Option(None, "--device-id", help="Default: hostname."),
    model: Path | None = ModelOpt,
    config: Path | None = ConfigOpt,
    count: int | None = typer.Option(None, "--count", help="Stop after N spectra."),
    drain_timeout: float | None = typer.Option(
        None, "--drain-timeout", help="Seconds to wait for the outbox to drain on exit."
    ),
    simulate: bool | None = typer.Option(None, "--simulate/--no-simulate", help="Use the spectrometer emulator."),
    rate: float | None = typer.Option(None, "--rate", help="Spectra/s in simulate mode."),
    spectra: Path | None = typer.Option(
        None, "--spectra", help="With --simulate: RRUFF folder or zip to emulate (default: built-in sample tray)."
    ),
    prefix: str | None = PrefixOpt,
    outbox: Path | None = typer.Option(None, "--outbox", help="Outbox SQLite file."),
    log_level: str | None = typer.Option(None, "--log-level", help="debug|info|warning|error"),
) -> None:
    """Acquire, classify and publish results (the daemon)."""
    cfg = _load(
        config,
        port=port,
        baud=baud,
        broker=broker,
        device_id=device_id,
        model_dir=model,
        count=count,
        drain_timeout_s=drain_timeout,
        simulate=simulate,
        rate_hz=rate,
        prefix=prefix,
        outbox_path=outbox,
        log_level=log_level,
    )
    _setup_logging(cfg)
    daemon_run = _entry("edge.daemon", "run")
    _exit_with(_guard(lambda: daemon_run(cfg, spectra=spectra)))


@app.command()
def classify(
    files: list[Path] = typer.Argument(..., help="Spectrum files to classify."),
    model: Path | None = ModelOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON result per line."),
    corrected: bool | None = typer.Option(
        None, "--corrected/--raw", help="Treat every file as baseline-corrected / raw (default: per file)."
    ),
    config: Path | None = ConfigOpt,
    library: Path | None = typer.Option(None, "--library", help="Added references (edge library add)."),
) -> None:
    """Classify spectrum files offline (no spectrometer, no broker)."""
    cfg = _load(config, model_dir=model)
    _setup_logging(cfg)
    offline_classify = _entry("edge.offline", "classify")
    run = lambda: offline_classify(cfg, files, as_json=as_json, corrected=corrected, library=library)  # noqa: E731
    _exit_with(_guard(run))


@app.command()
def check(
    config: Path | None = ConfigOpt,
    port: str | None = typer.Option(None, "--port", help="Serial port to probe."),
    broker: str | None = BrokerOpt,
    model: Path | None = ModelOpt,
    simulate: bool | None = typer.Option(None, "--simulate/--no-simulate", help="Probe the built-in emulator."),
) -> None:
    """Check the configuration, model bundle, spectrometer and broker."""
    cfg = _load(config, port=port, broker=broker, model_dir=model, simulate=simulate)
    _setup_logging(cfg)
    do_check = _entry("edge.check", "check")
    _exit_with(_guard(lambda: do_check(cfg)))


@app.command()
def calibrate(
    reference: str = typer.Option(
        ..., "--reference", help="Sample under the laser: polystyrene, cyclohexane, silicon."
    ),
    port: str | None = typer.Option(None, "--port", help="Serial port, e.g. /dev/serial/by-id/…"),
    config: Path | None = ConfigOpt,
    frames: int = typer.Option(10, "--frames", help="Spectra to average."),
    as_json: bool = typer.Option(False, "--json", help="One JSON report."),
    simulate: bool | None = typer.Option(None, "--simulate/--no-simulate", help="Measure the emulator's reference."),
    simulate_shift_error: float = typer.Option(
        0.0, "--simulate-shift-error", help="With --simulate: the emulated device's calibration error, cm-1."
    ),
) -> None:
    """Measure a reference and report the Raman-shift offset to configure (shift_offset_cm1)."""
    cfg = _load(config, port=port, simulate=simulate)
    _setup_logging(cfg)
    do_calibrate = _entry("edge.calibrate", "calibrate")
    _exit_with(
        _guard(
            lambda: do_calibrate(
                cfg, reference, frames=frames, as_json=as_json, simulate_shift_error_cm1=simulate_shift_error
            )
        )
    )


@app.command()
def watch(
    broker: str | None = BrokerOpt,
    device_id: str = typer.Option("+", "--device-id", help="Device to watch; '+' = all."),
    prefix: str | None = PrefixOpt,
    as_json: bool = typer.Option(False, "--json", help="Print raw result JSON, one per line."),
    count: int | None = typer.Option(None, "--count", help="Exit after N distinct results."),
    config: Path | None = ConfigOpt,
) -> None:
    """Print results as they arrive (de-duplicated by message id) and status changes."""
    from edge.publisher import MqttSettings
    from edge.watch import watch as do_watch

    if device_id != "+" and any(c in device_id for c in "/#+"):
        _fail(UsageError(f"--device-id {device_id!r}: a device id or '+'"))
    cfg = _load(config, broker=broker, prefix=prefix)
    _setup_logging(cfg)
    settings = MqttSettings.from_config(cfg)
    try:
        _guard(lambda: do_watch(settings, device_id, out=sys.stdout, as_json=as_json, count=count))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


from edge.library_cli import library_app  # noqa: E402  (issue 12: edge library add|list|remove)

app.add_typer(library_app, name="library")


def main() -> None:
    """Console entry point: every expected error of any package is one line and a non-zero exit."""
    from raman_core.cli_errors import run_cli

    run_cli(app, "edge")


if __name__ == "__main__":  # python -m edge.cli
    main()
