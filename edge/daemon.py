"""`edge run`: spectrometer -> analysis -> outbox -> MQTT, until stopped or `--count` is met.

The loop is deliberately single-threaded on the acquisition side (one serial reader, one
interpreter); the publisher drains the outbox on its own thread, so a slow or absent broker
never stalls acquisition, and a result is on disk before anything is sent.

Exit codes: 0 when every result was acknowledged by the broker (or the daemon was stopped
by a signal with an empty outbox), 3 when results are still queued at exit (they stay in the
outbox and are sent by the next run), 1 for setup errors (printed as one line by the CLI).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import Bundle, load_bundle
from edge.config import EdgeConfig
from edge.errors import EdgeError, InputError, OutboxFullError
from edge.pipeline import Analysis, Analyzer
from edge.preprocess import despike
from edge.result import Candidate, Instrument, Latency, Match, MixtureComponent, ModelRef, Peak, Quality, Result

log = logging.getLogger("edge.daemon")

EXIT_QUEUED = 3

#: The emulator's virtual detector is calibrated for ~100 ms exposures (longer ones saturate
#: its brightest minerals), so --simulate caps the integration time there.
SIMULATE_MAX_INTEGRATION_MS = 100


class Controls:
    """Acquisition settings changed by a `set` request, handed from the request thread to the loop.

    The loop applies them between two spectra (it leaves the stream, reconfigures, streams
    again), never mid-exposure; the request thread only stores them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {}

    def put(self, changes: dict[str, Any]) -> None:
        with self._lock:
            self._pending.update(changes)

    def pending(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def take(self) -> dict[str, Any]:
        with self._lock:
            out, self._pending = self._pending, {}
            return out


@dataclass
class RunStats:
    spectra: int = 0
    ok: int = 0
    rejected: int = 0
    unknown: int = 0
    outbox_full: int = 0
    link_down: int = 0


def build_result(
    analysis: Analysis,
    *,
    bundle: Bundle,
    device_id: str,
    acquired_at: datetime,
    serial: str,
    laser_nm: float,
    integration_ms: float,
    frame_seq: int | None,
    decode_ms: float | None = None,
    shift_offset_cm1: float = 0.0,
) -> Result:
    lat = analysis.latency_ms
    stages = [decode_ms, lat.get("preprocess"), lat.get("classify"), lat.get("deconv")]
    return Result(
        device_id=device_id,
        acquired_at=acquired_at,
        instrument=Instrument(
            serial=serial,
            laser_nm=float(laser_nm),
            integration_ms=float(integration_ms),
            frame_seq=frame_seq,
            shift_offset_cm1=shift_offset_cm1,
        ),
        model=ModelRef(name=bundle.name, sha256=bundle.sha256),
        status="ok" if analysis.status == "ok" else "rejected",
        reason=analysis.reason,
        top=tuple(Candidate(mineral=m, p=min(1.0, max(0.0, float(p)))) for m, p in analysis.top),
        unknown=analysis.unknown,
        match=None if analysis.match is None else Match(mineral=analysis.match.mineral, rruff_id=analysis.match.rruff_id, similarity=analysis.match.similarity),  # noqa: E501
        mixture=None if analysis.mixture is None else tuple(MixtureComponent(mineral=m, fraction=f) for m, f in analysis.mixture),  # noqa: E501
        peaks=tuple(Peak(shift_cm1=p.shift_cm1, relevance=p.relevance, intensity=p.intensity) for p in analysis.peaks),
        quality=Quality(
            snr=analysis.snr,
            coverage=analysis.coverage,
            n_spikes=analysis.n_spikes,
            saturated=analysis.saturated,
            fluorescence_ratio=analysis.fluorescence_ratio,
        ),
        latency_ms=Latency(
            decode=decode_ms,
            preprocess=lat.get("preprocess"),
            classify=lat.get("classify"),
            deconv=lat.get("deconv"),
            total=round(sum(s for s in stages if s is not None), 3),
        ),
    )


#: Every SPECTRUM_DECIMATION-th grid point goes out on the spectrum topic (2 cm-1 at 1 cm-1).
SPECTRUM_DECIMATION = 2


def spectrum_payload(result: Result, analysis: Analysis, bundle: Bundle) -> dict[str, Any]:
    """The preprocessed model input, downsampled, joined to its result by `id`."""
    assert analysis.values is not None
    values = analysis.values[::SPECTRUM_DECIMATION]
    return {
        "schema": "raman-edge/spectrum/1",
        "id": result.id,
        "seq": result.seq,
        "start_cm1": float(bundle.grid_cm1[0]),
        "step_cm1": float(bundle.grid_cm1[1] - bundle.grid_cm1[0]) * SPECTRUM_DECIMATION,
        "values": [round(float(v), 4) for v in values],
    }


def describe(result: Result) -> str:
    """One terminal line per result (what a person watching the daemon wants to see)."""
    head = f"#{result.seq:<5} frame {result.instrument.frame_seq}"
    if result.status != "ok":
        return f"{head} REJECTED {result.reason}"
    best = ", ".join(f"{c.mineral} {c.p:.2f}" for c in result.top)
    peaks = " ".join(f"{p.shift_cm1:.0f}" for p in result.peaks[:4])
    flag = " (unknown: below confidence threshold)" if result.unknown else ""
    return f"{head} {best}{flag} | peaks cm-1: {peaks}"


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM end acquisition gracefully (drain, then exit) instead of killing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set():  # second signal: the user really wants out
            raise KeyboardInterrupt
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _start_emulator(cfg: EdgeConfig, stack: ExitStack) -> str:
    from firmware_bridge.emulator import Emulator, EmulatorConfig

    emu_cfg = EmulatorConfig(seed=int(time.time()) % 100_000)
    emu = Emulator(emu_cfg)
    port = emu.start()
    stack.callback(emu.stop)
    log.info("simulating a spectrometer", extra={"port": port, "minerals": len(emu_cfg.minerals or ())})
    return port


def _prepare(spec: Any, cfg: EdgeConfig, analyzer: Analyzer, port: str) -> tuple[Any, Any, Any, int, int]:
    """Handshake (flushes a stale stream), configure, dark frame; returns what the loop needs."""
    from firmware_bridge.errors import BridgeError

    try:
        info = spec.handshake()
    except BridgeError as err:
        raise InputError(f"spectrometer at {port} does not answer: {err}") from err
    if cfg.simulate:
        period_ms = max(1, round(1000.0 / cfg.rate_hz))
        integration_ms = min(cfg.integration_ms, SIMULATE_MAX_INTEGRATION_MS, period_ms)
    else:
        integration_ms = cfg.integration_ms
    integration_ms = min(max(integration_ms, info.integration_min_ms), info.integration_max_ms)
    if not cfg.simulate:
        period_ms = integration_ms * cfg.averages  # back-to-back exposures
    spec.configure(integration_ms=integration_ms, averages=cfg.averages)
    shifts = analyzer.shifts_for(info.calibration_nm, info.laser_nm, info.pixel_count)
    dark = None
    try:
        # A cosmic ray in the one dark frame would become a negative spike in every spectrum
        # after subtraction (and despike only removes positive spikes), so clean it first.
        dark, n_dark_spikes = despike(spec.acquire_dark().counts.astype(np.float64))
        if n_dark_spikes:
            log.info("cosmic-ray pixels removed from the dark frame", extra={"pixels": n_dark_spikes})
    except BridgeError as err:
        log.warning("no dark frame; continuing without dark subtraction", extra={"error": str(err)})
    log.info(
        "spectrometer ready",
        extra={
            "model": info.model,
            "serial": info.serial_number,
            "pixels": info.pixel_count,
            "laser_nm": info.laser_nm,
            "integration_ms": integration_ms,
            "averages": cfg.averages,
        },
    )
    return info, shifts, dark, integration_ms, period_ms


def _handle_frame(
    event: Any,
    codec_ms: float | None,
    info: Any,
    shifts: Any,
    dark: Any,
    analyzer: Analyzer,
    bundle: Bundle,
    cfg: EdgeConfig,
    publisher: Any,
    stats: RunStats,
    out: Any,
    metrics: Any = None,
) -> None:
    acquired_at = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    counts = np.asarray(event.counts)
    # Deframing, CRC and parsing ran in the serial reader thread (codec_ms); add them here so
    # `decode` is the whole bytes-to-array cost.
    decode_ms = (time.perf_counter() - t0) * 1e3 + (codec_ms or 0.0)
    analysis = analyzer.analyze_counts(
        counts,
        shifts,
        dark=dark if dark is not None and dark.size == counts.size else None,
        saturated_flag=event.saturated,
    )
    result = build_result(
        analysis,
        bundle=bundle,
        device_id=cfg.device_id,
        acquired_at=acquired_at,
        serial=info.serial_number,
        laser_nm=info.laser_nm,
        integration_ms=event.integration_ms,
        frame_seq=event.seq,
        decode_ms=round(decode_ms, 3),
        shift_offset_cm1=cfg.shift_offset_cm1,
    )
    stats.spectra += 1
    stats.ok += result.status == "ok"
    stats.rejected += result.status == "rejected"
    stats.unknown += result.unknown
    try:
        result = publisher.enqueue(result)
    except OutboxFullError as err:
        stats.outbox_full += 1
        if metrics is not None:
            metrics.spectra.labels(status="outbox_full").inc()
        # Not stored: print it whole so it is at least on the terminal/journal.
        print(f"edge: outbox full, result not stored ({err}): {result.to_json()}", file=out, flush=True)
    else:
        if metrics is not None:
            metrics.observe_result(result.status, result.unknown, result.latency_ms)
        print(describe(result), file=out, flush=True)
        if cfg.publish_spectra and analysis.values is not None:
            publisher.publish_spectrum(spectrum_payload(result, analysis, bundle))


def settings_for(
    cfg: EdgeConfig, info: Any, change: dict[str, Any], integration_ms: int, averages: int, period_ms: int
) -> tuple[int, int, int]:
    """New (integration_ms, averages, period_ms) for a `set` request, within the device's limits."""
    from edge.errors import UsageError

    integ = int(change.get("integration_ms", integration_ms))
    if info is not None and not info.integration_min_ms <= integ <= info.integration_max_ms:
        raise UsageError(
            f"integration_ms {integ} outside the device's {info.integration_min_ms}-{info.integration_max_ms} ms"
        )
    avg = int(change.get("averages", averages))
    if info is not None and avg > info.averages_max:
        raise UsageError(f"averages {avg} above the device's maximum {info.averages_max}")
    if cfg.simulate:
        period = max(1, round(1000.0 / change["rate_hz"])) if "rate_hz" in change else period_ms
        integ = min(integ, SIMULATE_MAX_INTEGRATION_MS, period)
    else:
        if "rate_hz" in change:
            raise UsageError("rate_hz applies to --simulate only (a real device streams back to back)")
        period = integ * avg
    return integ, avg, period


def _apply_settings(
    spec: Any, cfg: EdgeConfig, info: Any, change: dict[str, Any], integration_ms: int, averages: int, period_ms: int
) -> tuple[int, int, int]:
    integ, avg, period = settings_for(cfg, info, change, integration_ms, averages, period_ms)
    spec.configure(integration_ms=integ, averages=avg)
    log.info("settings changed by request", extra={"integration_ms": integ, "averages": avg, "period_ms": period})
    return integ, avg, period


def _start_request_server(
    cfg: EdgeConfig,
    publisher: Any,
    bundle: Bundle,
    stats: RunStats,
    live: dict[str, Any],
    stack: ExitStack,
    controls: Controls,
) -> Any:
    from dataclasses import asdict

    from edge.errors import UsageError
    from edge.publisher import MqttSettings
    from edge.request_server import RequestServer

    def status() -> dict[str, Any]:
        # What `edge check` reports, but live: the device, the model, the broker, the queues.
        held = publisher.history.held() if publisher.history is not None else None
        return {
            "device_id": cfg.device_id,
            "spectrometer": live["spectrometer"],
            "acquisition": {
                "integration_ms": live["integration_ms"],
                "averages": live["averages"],
                "rate_hz": cfg.rate_hz if cfg.simulate else None,
            },
            "model": {"name": bundle.name, "sha256": bundle.sha256, "classes": len(bundle.labels)},
            "publisher": asdict(publisher.stats()),
            "history": asdict(held) if held is not None else None,
            "run": asdict(stats),
            "allow_requests": list(cfg.allow_requests),
        }

    def apply_set(args: dict[str, Any]) -> dict[str, Any]:
        # Checked against the device's limits now (so the response can refuse), applied by
        # the acquisition loop before its next spectrum.
        if "auto_exposure" in args:
            raise UsageError("auto_exposure is not implemented in this version")
        if live["integration_ms"] is None:
            raise UsageError("the spectrometer is not ready yet; try again")
        integ, avg, period = settings_for(
            cfg, live["info"], args, live["integration_ms"], live["averages"], round(1000.0 / cfg.rate_hz)
        )
        controls.put({k: v for k, v in args.items()})
        return {"integration_ms": integ, "averages": avg, "period_ms": period, "applied": "from the next spectrum"}

    server = RequestServer(
        MqttSettings.from_config(cfg),
        allowed=cfg.allow_requests,
        history=publisher.history,
        status=status,
        rate_per_s=cfg.request_rate_per_s,
        burst=cfg.request_burst,
        handlers={"set": apply_set},
    ).start()
    stack.callback(server.close)
    return server


def _start_metrics(cfg: EdgeConfig, publisher: Any, stack: ExitStack, out: Any) -> Any:
    from edge.metrics import Metrics

    metrics = Metrics()
    metrics.bind("raman_edge_outbox_pending", publisher.pending)
    metrics.bind("raman_edge_broker_connected", lambda: 1.0 if publisher.connected else 0.0)
    if publisher.history is not None:
        metrics.bind("raman_edge_history_rows", lambda: publisher.history.held().rows)
    bound = metrics.serve(cfg.metrics_host, cfg.metrics_port)
    stack.callback(metrics.close)
    log.info("metrics served", extra={"url": f"http://{cfg.metrics_host}:{bound}/metrics"})
    return metrics


def run(cfg: EdgeConfig, *, stop: threading.Event | None = None, out: Any = None) -> int:
    """Run the daemon with a loaded config; returns the process exit code."""
    from edge.publisher import Publisher
    from firmware_bridge.client import Spectrometer
    from firmware_bridge.errors import BridgeError
    from firmware_bridge.transport import LinkDown, LinkUp

    out = out or sys.stdout
    stop = stop or threading.Event()
    if not cfg.simulate and not cfg.port:
        raise InputError("no spectrometer: give --port PORT (e.g. /dev/serial/by-id/...) or --simulate")
    bundle = load_bundle(cfg.model_dir)
    analyzer = Analyzer(bundle, limits=cfg.quality_limits, shift_offset_cm1=cfg.shift_offset_cm1)
    log.info(
        "model loaded",
        extra={
            "model": bundle.name,
            "sha256": bundle.sha256[:12],
            "classes": len(bundle.labels),
            "runtime": analyzer.classifier.runtime,
        },
    )
    stats = RunStats()
    with ExitStack() as stack, _stop_on_signals(stop):
        publisher = Publisher.from_config(cfg)
        publisher.start()
        closed = False

        def close_publisher() -> bool:
            nonlocal closed
            if closed:
                return publisher.pending() == 0
            closed = True
            return publisher.close(drain_timeout_s=cfg.drain_timeout_s)

        stack.callback(close_publisher)
        live: dict[str, Any] = {"spectrometer": None, "integration_ms": None, "averages": cfg.averages, "info": None}
        controls = Controls()
        if cfg.allow_requests:
            _start_request_server(cfg, publisher, bundle, stats, live, stack, controls)
        metrics = _start_metrics(cfg, publisher, stack, out) if cfg.metrics_port else None
        backlog = publisher.pending()
        if backlog:
            log.info("resuming: results from an earlier run are queued", extra={"pending": backlog})
        port = _start_emulator(cfg, stack) if cfg.simulate else str(cfg.port)
        try:
            spec = Spectrometer.open(port, baud=cfg.baud)
        except BridgeError as err:
            raise InputError(f"cannot open spectrometer at {port}: {err}") from err
        stack.callback(spec.close)
        info, shifts, dark, integration_ms, period_ms = _prepare(spec, cfg, analyzer, port)
        live["spectrometer"] = {
            "model": info.model,
            "serial": info.serial_number,
            "pixels": info.pixel_count,
            "laser_nm": info.laser_nm,
            "port": port,
        }
        live["integration_ms"] = integration_ms
        live["info"] = info
        averages = cfg.averages
        if metrics is not None:
            metrics.set_link(True)
        print(
            f"edge: {info.model} {info.serial_number} ({info.pixel_count} px, {info.laser_nm:g} nm) -> "
            f"{cfg.broker} as {cfg.device_id}; model {bundle.name} ({len(bundle.labels)} minerals)",
            file=out,
            flush=True,
        )
        backoff_s = 1.0
        while not stop.is_set() and (cfg.count is None or stats.spectra < cfg.count):
            change = controls.take()
            if change:
                try:
                    integration_ms, averages, period_ms = _apply_settings(
                        spec, cfg, info, change, integration_ms, averages, period_ms
                    )
                except (BridgeError, EdgeError) as err:
                    log.warning("set: could not apply", extra={"error": str(err), "changes": change})
                live["integration_ms"], live["averages"] = integration_ms, averages
            try:
                for event in spec.stream(period_ms):
                    if stop.is_set():
                        break
                    if isinstance(event, LinkDown):
                        stats.link_down += 1
                        if metrics is not None:
                            metrics.set_link(False)
                        log.warning("spectrometer link lost; waiting for it to come back", extra={"port": port})
                        continue
                    if isinstance(event, LinkUp):
                        log.info("spectrometer link restored", extra={"port": port})
                        if metrics is not None:
                            metrics.set_link(True)
                        # A replugged device may have been reconfigured: take its calibration again.
                        if spec.info is not None:
                            info = spec.info
                            shifts = analyzer.shifts_for(info.calibration_nm, info.laser_nm, info.pixel_count)
                        continue
                    backoff_s = 1.0
                    codec_ms = spec.transport.decode_ms(event)
                    _handle_frame(
                        event, codec_ms, info, shifts, dark, analyzer, bundle, cfg, publisher, stats, out, metrics
                    )
                    if cfg.count is not None and stats.spectra >= cfg.count:
                        break
                    if controls.pending():
                        break  # leave the stream to apply a `set` request
            except BridgeError as err:
                # Expected device trouble (NACK, timeout, unplugged mid-command): log one line,
                # back off, and redo the handshake; the daemon never dies of a device fault.
                log.warning("spectrometer error; retrying", extra={"error": str(err), "retry_in_s": backoff_s})
                if stop.wait(backoff_s):
                    break
                backoff_s = min(backoff_s * 2, 30.0)
                try:
                    info, shifts, dark, integration_ms, period_ms = _prepare(spec, cfg, analyzer, port)
                    # _prepare configured the device from the config: a `set` no longer holds.
                    averages = cfg.averages
                    live["integration_ms"], live["averages"], live["info"] = integration_ms, averages, info
                except (BridgeError, InputError) as again:
                    log.warning("spectrometer still not ready", extra={"error": str(again)})
        spec.close()
        drained = close_publisher()
        remaining = publisher.pending()
    log.info("stopped", extra=stats.__dict__ | {"queued": remaining})
    summary = (
        f"edge: {stats.spectra} spectra ({stats.ok} classified, {stats.rejected} rejected, {stats.unknown} unknown); "
    )
    if drained and remaining == 0:
        print(summary + "all results acknowledged by the broker", file=out, flush=True)
        return 0
    print(
        summary + f"{remaining} results still queued in {Path(cfg.outbox_path)} (broker {cfg.broker} did not "
        f"acknowledge them within {cfg.drain_timeout_s:g} s); they are sent on the next run",
        file=out,
        flush=True,
    )
    return EXIT_QUEUED


__all__ = ["run", "build_result", "describe", "EdgeError"]
