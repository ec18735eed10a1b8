"""`edge check`: diagnose a setup before (or instead of) starting the daemon.

One line per check, `OK`, `FAIL` or `SKIP`, with what was found and, on failure, a hint
that names the setting to change. The checks run in the order the daemon needs things and
do not stop at the first failure, so one run shows everything that is wrong:

    bundle     load_bundle with SHA-256 verification of every file
    runtime    ai_edge_litert or tflite_runtime importable (and its version)
    inference  the bundle's model.tflite runs on a synthetic spectrum in this runtime
    serial     the port opens and the device answers the handshake (SKIP without a port,
               unless `simulate`, which probes the built-in emulator)
    broker     TCP connect, then an MQTT CONNECT with the configured TLS/credentials
    outbox     the outbox file (or the directory that will hold it) is writable

Exit code 0 when every check that ran passed, 1 otherwise.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from edge import instrument
from edge.bundle import Bundle, load_bundle
from edge.config import EdgeConfig
from edge.errors import EdgeError

#: Seconds for each network step (TCP connect, CONNACK) and each serial command.
NET_TIMEOUT_S = 3.0
SERIAL_TIMEOUT_S = 2.0

_RUNTIME_DISTRIBUTIONS = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # "OK" | "FAIL" | "SKIP"
    detail: str
    hint: str | None = None

    def line(self) -> str:
        hint = f"; hint: {self.hint}" if self.hint else ""
        return f"{self.status:<4}  {self.name:<9}  {self.detail}{hint}"


def check(cfg: EdgeConfig, *, out: TextIO | None = None) -> int:
    """Run every check, print one line each and a summary; 0 if all that ran passed."""
    out = out or sys.stdout
    results: list[CheckResult] = []

    def emit(r: CheckResult) -> None:
        results.append(r)
        out.write(r.line() + "\n")
        out.flush()

    bundle, r = check_bundle(cfg.model_dir)
    emit(r)
    runtime, r = check_runtime()
    emit(r)
    emit(check_inference(bundle, runtime))
    emit(check_serial(cfg))
    emit(check_broker(cfg))
    emit(check_outbox(cfg.outbox_path))

    failed = [r.name for r in results if r.status == "FAIL"]
    ran = sum(r.status != "SKIP" for r in results)
    skipped = len(results) - ran
    if failed:
        out.write(f"FAILED: {len(failed)} of {ran} checks ({', '.join(failed)})\n")
        return 1
    out.write(f"all {ran} checks passed" + (f", {skipped} skipped" if skipped else "") + "\n")
    return 0


def check_bundle(model_dir: Path | None) -> tuple[Bundle | None, CheckResult]:
    try:
        b = load_bundle(model_dir, verify=True)
    except EdgeError as err:
        hint = (
            "pass --model DIR (or model_dir= in the config) pointing at an exported bundle"
            if "not found" in str(err) or "no manifest" in str(err)
            else "re-copy the bundle from the trainer's export; do not edit files inside it"
        )
        return None, CheckResult("bundle", "FAIL", str(err), hint)
    n_files = len(b.manifest.get("files", {}))
    return b, CheckResult(
        "bundle",
        "OK",
        f"{b.name} ({b.path}): {len(b.labels)} classes, model.tflite sha256 {b.sha256[:12]}, "
        f"SHA-256 of {n_files} files verified",
    )


def check_runtime() -> tuple[str | None, CheckResult]:
    from edge.classifier import load_interpreter_class

    try:
        _, name = load_interpreter_class()
    except EdgeError as err:
        return None, CheckResult("runtime", "FAIL", str(err))
    try:
        version = importlib.metadata.version(_RUNTIME_DISTRIBUTIONS.get(name, name))
    except importlib.metadata.PackageNotFoundError:
        version = "version unknown"
    forced = os.environ.get("RAMAN_TFLITE_RUNTIME")
    note = f" (forced by RAMAN_TFLITE_RUNTIME={forced})" if forced else ""
    return name, CheckResult("runtime", "OK", f"{name} {version}{note}")


def synthetic_spectrum(grid_cm1: np.ndarray) -> np.ndarray:
    """A corrected, quartz-like spectrum (bands at 128, 206, 464 cm-1) on the model grid."""
    bands = ((128.0, 0.3, 5.0), (206.0, 0.35, 8.0), (464.0, 1.0, 5.0))
    y = np.zeros_like(grid_cm1)
    for centre, height, width in bands:
        y += height * np.exp(-0.5 * ((grid_cm1 - centre) / width) ** 2)
    return y


def check_inference(bundle: Bundle | None, runtime: str | None) -> CheckResult:
    if bundle is None or runtime is None:
        return CheckResult("inference", "SKIP", "needs a loadable bundle and a runtime (see above)")
    from edge.pipeline import Analyzer

    try:
        analyzer = Analyzer(bundle)
        grid = bundle.grid_cm1
        t0 = time.perf_counter()
        a = analyzer.analyze_corrected(grid, synthetic_spectrum(grid))
        ms = (time.perf_counter() - t0) * 1e3
        if a.status != "ok" or a.values is None:
            return CheckResult("inference", "FAIL", f"synthetic spectrum was rejected: {a.reason}")
        p = analyzer.classifier.probabilities(a.values)
    except EdgeError as err:
        return CheckResult("inference", "FAIL", str(err), "re-export the bundle for this runtime version")
    total = float(np.sum(p))
    # int8 softmax outputs have 1/256 resolution; 60+ classes round to a sum near, not at, 1.
    if not np.all(np.isfinite(p)) or not 0.8 <= total <= 1.2:
        return CheckResult(
            "inference",
            "FAIL",
            f"output is not a probability vector (sum {total:.3f})",
            "the model or its output quantisation in manifest.json is wrong; re-export it",
        )
    mineral, prob = a.top[0]
    return CheckResult(
        "inference",
        "OK",
        f"{runtime} ran model.tflite on a synthetic spectrum in {ms:.1f} ms: top-1 {mineral} p={prob:.3f}",
    )


def check_serial(cfg: EdgeConfig) -> CheckResult:
    if cfg.port is None and not cfg.simulate:
        return CheckResult(
            "serial",
            "SKIP",
            "no port configured and simulate is off (pass --port /dev/serial/by-id/... to probe a spectrometer)",
        )
    from firmware_bridge.errors import BridgeError

    simulated = cfg.port is None
    port = cfg.port
    try:
        with contextlib.ExitStack() as stack:
            if simulated:
                from firmware_bridge.emulator import Emulator, EmulatorConfig

                port = instrument.start_emulator(Emulator(EmulatorConfig(seed=0)), stack)
            assert port is not None
            return _probe_serial(port, cfg.baud, simulated=simulated)
    except (BridgeError, EdgeError) as err:
        if not simulated and port is not None and not Path(port).exists() and "://" not in port:
            hint = f"{port} does not exist: is the spectrometer plugged in? list ports with ls /dev/serial/by-id/"
        elif "imeout" in str(err) or "not answer" in str(err):
            hint = f"the port opened but no device answered: wrong port, wrong baud ({cfg.baud}), or other firmware"
        elif "ermission" in str(err):
            hint = "add the service user to the 'dialout' group"
        else:
            hint = "check the port name, cable and baud (port=, baud= in the config)"
        return CheckResult("serial", "FAIL", str(err), hint)


def _probe_serial(port: str, baud: int, *, simulated: bool) -> CheckResult:
    with instrument.open_spectrometer(port, baud, timeout_s=SERIAL_TIMEOUT_S, retries=1, reconnect=False) as spec:
        info = instrument.handshake(spec, port)
    shifts = info.shifts_cm1()
    what = "built-in emulator" if simulated else port
    return CheckResult(
        "serial",
        "OK",
        f"{what}: {info.model} serial {info.serial_number} firmware {info.firmware_version}, "
        f"{info.pixel_count} pixels, laser {info.laser_nm:g} nm, "
        f"{float(np.min(shifts)):.0f}-{float(np.max(shifts)):.0f} cm-1",
    )


def check_broker(cfg: EdgeConfig) -> CheckResult:
    try:
        url = cfg.broker_url
    except EdgeError as err:
        return CheckResult("broker", "FAIL", str(err), "broker = mqtt://host:port or mqtts://host:port")
    t0 = time.perf_counter()
    try:
        with socket.create_connection((url.host, url.port), timeout=NET_TIMEOUT_S):
            pass
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        return CheckResult(
            "broker",
            "FAIL",
            f"{url}: TCP connect failed ({reason})",
            f"is the broker running and listening on {url.host}:{url.port}? (broker= in the config, --broker)",
        )
    return _mqtt_connect(cfg, str(url), t0)


def _mqtt_connect(cfg: EdgeConfig, url: str, t0: float) -> CheckResult:
    from edge.publisher import MqttSettings, make_client

    settings = MqttSettings.from_config(cfg)
    try:
        client = make_client(settings, client_id=f"raman-edge-check-{uuid.uuid4().hex[:8]}")
    except EdgeError as err:
        return CheckResult("broker", "FAIL", f"{url}: {err}", "fix tls_*/username/password_* in the config")
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        outcome["reason"] = reason
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(settings.broker.host, settings.broker.port, keepalive=int(NET_TIMEOUT_S * 4))
    except ssl.SSLError as err:
        return CheckResult(
            "broker",
            "FAIL",
            f"{url}: TLS handshake failed ({err.reason or err})",
            "tls_ca must sign the broker's certificate and the host name must match it",
        )
    except OSError as err:
        return CheckResult("broker", "FAIL", f"{url}: connect failed ({err.strerror or err})")
    client.loop_start()
    try:
        answered = done.wait(NET_TIMEOUT_S)
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()
    if not answered:
        return CheckResult(
            "broker",
            "FAIL",
            f"{url}: TCP connected but no MQTT CONNACK within {NET_TIMEOUT_S:g} s",
            "is this port an MQTT listener (mqtts:// for a TLS port)?",
        )
    reason = outcome["reason"]
    if reason.is_failure:
        return CheckResult(
            "broker",
            "FAIL",
            f"{url}: broker refused the MQTT connection ({reason})",
            "check username and password_file/password_env, and the broker's ACL",
        )
    ms = (time.perf_counter() - t0) * 1e3
    auth = f" as {cfg.username}" if cfg.username else ""
    tls = ", TLS" if settings.broker.tls else ""
    return CheckResult("broker", "OK", f"{url}: MQTT CONNECT accepted{auth}{tls} ({ms:.0f} ms)")


def check_outbox(path: Path) -> CheckResult:
    path = Path(path)
    if path.exists():
        if not path.is_file():
            return CheckResult("outbox", "FAIL", f"{path} exists and is not a file", "set outbox_path to a file path")
        if not os.access(path, os.R_OK | os.W_OK):
            return CheckResult("outbox", "FAIL", f"{path}: not writable by this user", "chown it to the service user")
    # The outbox creates missing parent directories: test the deepest one that exists.
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return CheckResult("outbox", "FAIL", f"{existing} (parent of {path}) is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".raman-edge-check-"):
            pass
    except OSError as err:
        return CheckResult(
            "outbox",
            "FAIL",
            f"{path}: cannot create files in {existing} ({err.strerror or err})",
            "set outbox_path to a writable location (systemd: StateDirectory=)",
        )
    free_mb = _free_mb(existing)
    state = "exists" if path.exists() else f"will be created; {existing} is writable"
    return CheckResult("outbox", "OK", f"{path}: writable ({state}), {free_mb:,.0f} MB free")


def _free_mb(path: Path) -> float:
    return shutil.disk_usage(path).free / 1e6
