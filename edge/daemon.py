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
import math
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

from edge import instrument
from edge.bundle import Bundle, load_bundle
from edge.config import EdgeConfig
from edge.errors import EdgeError, InputError, OutboxFullError, UsageError
from edge.payload import findings
from edge.pipeline import Analysis, Analyzer
from edge.result import Instrument, Latency, ModelRef, Result
from raman_core.units import FULL_SCALE

log = logging.getLogger("edge.daemon")

EXIT_QUEUED = 3


class Job:
    """Work for the acquisition loop from a request (`calibrate`, `acquire`): the request thread
    submits it and waits; the loop runs it between two spectra and finishes it."""

    def __init__(self, kind: str, args: dict[str, Any]) -> None:
        self.kind = kind
        self.args = args
        self._done = threading.Event()
        self._result: dict[str, Any] | None = None
        self._error: str | None = None

    def finish(self, result: dict[str, Any] | None = None, error: str | None = None) -> None:
        self._result, self._error = result, error
        self._done.set()

    def wait(self, timeout_s: float) -> dict[str, Any]:
        from edge.errors import UsageError

        if not self._done.wait(timeout_s):
            raise UsageError(f"{self.kind}: no answer from the acquisition loop within {timeout_s:.0f} s")
        if self._error is not None:
            raise UsageError(self._error)
        return self._result or {}


class Controls:
    """Acquisition settings changed by a `set` request, and jobs, handed from the request thread
    to the loop.

    The loop applies them between two spectra (it leaves the stream, reconfigures, streams
    again), never mid-exposure; the request thread only stores them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._jobs: list[Job] = []

    def put(self, changes: dict[str, Any]) -> None:
        with self._lock:
            self._pending.update(changes)

    def submit(self, job: Job) -> Job:
        with self._lock:
            self._jobs.append(job)
        return job

    def pending(self) -> bool:
        with self._lock:
            return bool(self._pending) or bool(self._jobs)

    def take(self) -> dict[str, Any]:
        with self._lock:
            out, self._pending = self._pending, {}
            return out

    def take_jobs(self) -> list[Job]:
        with self._lock:
            out, self._jobs = self._jobs, []
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
    averages: int | None = None,
    auto_exposure: bool = False,
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
            averages=averages,
            auto_exposure=auto_exposure,
        ),
        model=ModelRef(name=bundle.name, sha256=bundle.sha256),
        **findings(analysis),
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


def make_emulator(spectra: str | Path | None = None) -> Any:
    """The emulator for --simulate (not started): the built-in sample tray, or the RRUFF
    folder/zip `spectra`. A path that does not exist or holds no spectra is refused here, as
    firmware_bridge's UsageError (one line at the CLI), before anything else is set up."""
    from firmware_bridge.emulator import Emulator, EmulatorConfig

    return Emulator(EmulatorConfig(spectra_path=spectra, seed=int(time.time()) % 100_000))


def _prepare(spec: Any, cfg: EdgeConfig, analyzer: Analyzer, port: str) -> tuple[Any, Any, Any, int, int]:
    """Handshake (flushes a stale stream), configure, dark frame; returns what the loop needs."""
    from firmware_bridge.errors import BridgeError

    info, exposure = instrument.set_up(spec, cfg, port)
    shifts = analyzer.shifts_for(info.calibration_nm, info.laser_nm, info.pixel_count)
    dark = None
    try:
        dark, n_dark_spikes = instrument.take_dark(spec)
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
            "integration_ms": exposure.integration_ms,
            "averages": exposure.averages,
        },
    )
    return info, shifts, dark, exposure.integration_ms, exposure.period_ms


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
    *,
    auto_exposure: bool = False,
) -> Result | None:
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
        shift_offset_cm1=analyzer.shift_offset_cm1,
        averages=getattr(event, "averages", None),
        auto_exposure=auto_exposure,
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
        return None
    else:
        if metrics is not None:
            metrics.observe_result(result.status, result.unknown, result.latency_ms)
        print(describe(result), file=out, flush=True)
        if cfg.publish_spectra and analysis.values is not None:
            publisher.publish_spectrum(spectrum_payload(result, analysis, bundle))
        return result


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
        integ = instrument.simulated_integration_ms(integ, period)
    else:
        if "rate_hz" in change:
            raise UsageError("rate_hz applies to --simulate only (a real device streams back to back)")
        period = integ * avg
    return integ, avg, period


#: How often the loop looks at `library_dir` for changes (two stat calls).
LIBRARY_POLL_S = 2.0
#: A single `acquire` request may expose for at most this long in total.
MAX_ACQUIRE_REQUEST_MS = 600_000
#: Spectra after model/activate during which a failure of the new model rolls back to the old one.
ACTIVATE_PROBATION_SPECTRA = 20
#: Probes per auto-exposed spectrum at most (a saturated probe is retried 8x shorter).
MAX_PROBES = 4
#: The device turns its laser off when it hears nothing from the host for its watchdog time
#: (docs/protocol.md, 5 s by default). A single exposure that long is silent on the host side,
#: so before one the daemon re-arms the laser with a watchdog this much longer than the exposure.
WATCHDOG_MARGIN_S = 5


def _laser_was_on(spec: Any, frame: Any) -> bool:
    """False when a binary device says the laser was off during the exposure (watchdog tripped)."""
    from firmware_bridge.messages import SpectrumFlag

    if getattr(spec, "_line", False):  # text-mode devices have no laser flag
        return True
    return bool(frame.flags & SpectrumFlag.LASER_ON)


class Acquisition:
    """The acquisition loop's state and steps: stream or auto-expose, run jobs, watch the library.

    Everything here runs on the daemon's main thread; the request thread only reaches it
    through `Controls` (settings, jobs) and reads `live` for `status`.
    """

    def __init__(
        self,
        cfg: EdgeConfig,
        spec: Any,
        port: str,
        analyzer: Analyzer,
        bundle: Bundle,
        publisher: Any,
        stats: RunStats,
        live: dict[str, Any],
        controls: Controls,
        out: Any,
        metrics: Any,
        health_sink: Any,
        library: Any,
    ) -> None:
        self.cfg, self.spec, self.port = cfg, spec, port
        self.analyzer, self.bundle, self.publisher = analyzer, bundle, publisher
        self.stats, self.live, self.controls, self.out, self.metrics = stats, live, controls, out, metrics
        self.health_sink = health_sink
        self.library = library
        self.startup_bundle = bundle
        # After model/activate: (analyzer, bundle, library watch) to go back to, spectra left on probation
        self.probation: tuple[Any, Any, Any] | None = None
        self.probation_left = 0
        self.auto_exposure = cfg.auto_exposure
        self.last_plan: Any = None
        self.watchdog_s = 0  # laser watchdog armed by this loop (0: the device's default)
        self.next_library_poll = 0.0
        interval = cfg.calibration_check_interval_s
        self.next_check = time.monotonic() if interval > 0 else None

    # -- setup -------------------------------------------------------------------------------

    def prepare(self) -> None:
        self.info, self.shifts, self.dark, self.integration_ms, self.period_ms = _prepare(
            self.spec, self.cfg, self.analyzer, self.port
        )
        # _prepare configured the device from the config: a `set` no longer holds.
        self.averages = self.cfg.averages
        self.watchdog_s = 0
        self.live.update(
            integration_ms=self.integration_ms,
            averages=self.averages,
            info=self.info,
            auto_exposure=self.auto_exposure,
        )

    def finished(self) -> bool:
        return self.cfg.count is not None and self.stats.spectra >= self.cfg.count

    # -- between spectra -----------------------------------------------------------------------

    def housekeeping(self) -> None:
        """Apply `set` changes, run jobs, re-read the library, run a due calibration check."""
        from firmware_bridge.errors import BridgeError

        change = self.controls.take()
        if change:
            if "auto_exposure" in change:
                self.auto_exposure = bool(change.pop("auto_exposure"))
                log.info("auto-exposure " + ("on" if self.auto_exposure else "off"))
            if change:
                try:
                    self.integration_ms, self.averages, self.period_ms = _apply_settings(
                        self.spec, self.cfg, self.info, change, self.integration_ms, self.averages, self.period_ms
                    )
                except (BridgeError, EdgeError) as err:
                    log.warning("set: could not apply", extra={"error": str(err), "changes": change})
            elif not self.auto_exposure:
                # Back to the fixed settings the auto-exposure overwrote on the device.
                self.spec.configure(integration_ms=self.integration_ms, averages=self.averages)
            self.live.update(
                integration_ms=self.integration_ms, averages=self.averages, auto_exposure=self.auto_exposure
            )
        for job in self.controls.take_jobs():
            self._run_job(job)
        self.poll_library()
        if self.next_check is not None and time.monotonic() >= self.next_check:
            self.next_check = time.monotonic() + self.cfg.calibration_check_interval_s
            assert self.cfg.calibration_reference is not None
            try:
                self.check_calibration(self.cfg.calibration_reference)
            except EdgeError as err:
                log.warning("calibration check failed", extra={"error": str(err)})

    def poll_library(self, force: bool = False) -> None:
        if self.library is None or (not force and time.monotonic() < self.next_library_poll):
            return
        self.next_library_poll = time.monotonic() + LIBRARY_POLL_S
        changed, lib = self.library.poll()
        if changed:
            self.analyzer.set_library(lib)
        self.live["library"] = self.library.status()

    def break_stream(self) -> bool:
        """Leave the stream for pending work (settings, jobs, a due check)."""
        return self.controls.pending() or (self.next_check is not None and time.monotonic() >= self.next_check)

    def _run_job(self, job: Job) -> None:
        from firmware_bridge.errors import BridgeError

        try:
            if job.kind == "calibrate":
                job.finish(self.check_calibration(job.args["reference"]))
            elif job.kind == "acquire":
                job.finish(self.acquire_request(job.args))
            elif job.kind == "model/activate":
                job.finish(self.activate(job.args["name"]))
            else:
                job.finish(error=f"unknown job {job.kind!r}")
        except (BridgeError, EdgeError) as err:
            job.finish(error=str(err))
            if isinstance(err, BridgeError):
                raise
        except Exception as err:  # noqa: BLE001 - a bug in one job must not end acquisition
            log.exception("request job failed", extra={"job": job.kind})
            job.finish(error=f"{job.kind} failed: {type(err).__name__}: {err}")

    # -- spectra -------------------------------------------------------------------------------

    def handle(self, event: Any, *, auto: bool = False) -> Result | None:
        if self.probation is None:
            return self._handle(event, auto=auto)
        try:
            result = self._handle(event, auto=auto)
        except Exception as err:  # noqa: BLE001 - a newly activated model that fails is rolled back
            self.rollback(f"{type(err).__name__}: {err}")
            return None
        self.probation_left -= 1
        if self.probation_left <= 0:
            self.probation = None
            log.info("model/activate: probation passed", extra={"model": self.bundle.name})
        return result

    def _handle(self, event: Any, *, auto: bool = False) -> Result | None:
        codec_ms = self.spec.transport.decode_ms(event)
        return _handle_frame(
            event,
            codec_ms,
            self.info,
            self.shifts,
            self.dark,
            self.analyzer,
            self.bundle,
            self.cfg,
            self.publisher,
            self.stats,
            self.out,
            self.metrics,
            auto_exposure=auto,
        )

    def arm_watchdog(self, exposure_ms: float) -> None:
        from firmware_bridge.messages import DEFAULT_WATCHDOG_S

        need_s = int(math.ceil(exposure_ms / 1000.0)) + WATCHDOG_MARGIN_S
        if need_s > max(self.watchdog_s, DEFAULT_WATCHDOG_S):
            self.spec.laser(True, watchdog_s=min(need_s, 65535))
            self.watchdog_s = need_s

    def acquire_frames(self, n: int, exposure_ms: float) -> list[Any]:
        """`n` spectra at the configured exposure; the laser watchdog is re-armed first when one
        exposure would outlast it, and the laser switched on again if it tripped anyway."""
        self.arm_watchdog(exposure_ms)
        frames = self.spec.acquire(n)
        if frames and not all(_laser_was_on(self.spec, f) for f in frames):
            log.warning("the laser was off during an exposure (watchdog?); switching it on and retrying")
            self.spec.laser(True, watchdog_s=max(self.watchdog_s, 0))
            frames = self.spec.acquire(n)
        return frames

    def exposure_limits(self) -> Any:
        from edge.exposure import ExposureLimits

        return ExposureLimits(
            integration_min_ms=self.info.integration_min_ms,
            integration_max_ms=self.info.integration_max_ms,
            averages_max=self.info.averages_max,
            max_acquisition_ms=max(self.cfg.max_acquisition_ms, self.info.integration_min_ms),
        )

    def _target(self) -> Any:
        from edge.exposure import ExposureTarget

        return ExposureTarget(
            target_snr=self.cfg.auto_exposure_target_snr, max_peak_fraction=self.cfg.auto_exposure_max_peak_fraction
        )

    def _measure(self, frame: Any) -> Any:
        from edge.exposure import measure_probe, probe_snr

        counts = np.asarray(frame.counts)
        saturated = bool(frame.saturated) or int(counts.max()) >= FULL_SCALE
        snr = float("nan") if saturated else probe_snr(counts, self.dark)
        return measure_probe(counts, self.dark, frame.integration_ms, frame.averages, snr, saturated_flag=saturated)

    def plan_auto(self, first: Any = None, spent: int = 0) -> Any:
        """Probe (re-probing shorter while saturated) and plan; the device is left configured
        for the planned spectrum. `first`: a frame already taken that serves as the first probe."""
        from edge.exposure import Plan, next_probe_ms, plan_exposure

        limits, target = self.exposure_limits(), self._target()
        t = next_probe_ms(self.last_plan, target, limits)
        plan: Plan | None = None
        for _ in range(MAX_PROBES):
            if first is not None:
                probe, first = self._measure(first), None
            else:
                self.spec.configure(integration_ms=t, averages=1)
                probe = self._measure(self.acquire_frames(1, t)[0])
                spent += t
            plan = plan_exposure(probe, limits, target, spent_ms=spent)
            if plan.kind == "acquire":
                break
            t = plan.integration_ms
        assert plan is not None
        if plan.kind != "acquire":
            plan = Plan("acquire", t, 1, None, "saturated")
        self.last_plan = plan
        self.spec.configure(integration_ms=plan.integration_ms, averages=plan.averages)
        self.live["last_exposure"] = {
            "integration_ms": plan.integration_ms,
            "averages": plan.averages,
            "probe_ms": spent,
            "predicted_snr": plan.predicted_snr,
            "limited_by": plan.limited_by,
        }
        return plan

    def auto_exposed_spectrum(self) -> Result | None:
        from edge.exposure import confirms

        t0 = time.monotonic()
        plan = self.plan_auto()
        frame = self.acquire_frames(1, plan.total_ms)[0]
        spent = self.live["last_exposure"]["probe_ms"] + plan.total_ms
        if spent < self.cfg.max_acquisition_ms and not confirms(plan, self._measure(frame)):
            # Saturated, or far below the predicted SNR: the sample changed after the probe.
            # The spectrum itself is the new probe; one more try within what is left of the budget.
            plan = self.plan_auto(first=frame, spent=spent)
            frame = self.acquire_frames(1, plan.total_ms)[0]
        result = self.handle(frame, auto=True)
        if self.cfg.simulate:  # keep to rate_hz like the stream does
            rest = 1.0 / self.cfg.rate_hz - (time.monotonic() - t0)
            if rest > 0:
                time.sleep(min(rest, 1.0))
        return result

    def acquire_request(self, args: dict[str, Any]) -> dict[str, Any]:
        """`acquire`: `count` spectra now, at the given settings (else the current ones, or
        auto-exposure when it is on and neither is given); the fixed settings come back after."""
        count = int(args.get("count", 1))
        auto = self.auto_exposure and "integration_ms" not in args and "averages" not in args
        results: list[Result] = []
        if auto:
            for _ in range(count):
                r = self.auto_exposed_spectrum()
                if r is not None:
                    results.append(r)
            integ, avg = None, None
        else:
            integ, avg, _ = settings_for(self.cfg, self.info, args, self.integration_ms, self.averages, self.period_ms)
            self.spec.configure(integration_ms=integ, averages=avg)
            try:
                for frame in self.acquire_frames(count, integ * avg):
                    r = self.handle(frame)
                    if r is not None:
                        results.append(r)
            finally:
                if not self.auto_exposure:
                    self.spec.configure(integration_ms=self.integration_ms, averages=self.averages)
        return {
            "count": len(results),
            "seqs": [r.seq for r in results],
            "ids": [r.id for r in results],
            "status": {
                "ok": sum(r.status == "ok" for r in results),
                "rejected": sum(r.status != "ok" for r in results),
            },
            "integration_ms": integ,
            "averages": avg,
            "auto_exposure": auto,
        }

    # -- model/activate ------------------------------------------------------------------------

    def activate(self, name: str) -> dict[str, Any]:
        """Verify, self-test and switch to an installed bundle; the running one stays on failure."""
        from edge.activation import installed_bundles, self_test
        from edge.library_watch import LibraryWatch

        installed = installed_bundles(self.cfg.models_path, self.bundle, self.startup_bundle)
        if name not in installed:
            raise UsageError(
                f"no bundle {name!r} installed (installed: {', '.join(installed)}; "
                f"bundles go in models_dir {self.cfg.models_path}/<name>)"
            )
        prev = self.bundle
        if installed[name].resolve() == prev.path.resolve():
            return {"active": prev.name, "sha256": prev.sha256, "changed": False, "previous": prev.name}
        try:
            bundle = load_bundle(installed[name])  # every file's SHA-256 against the manifest
        except EdgeError as err:
            raise UsageError(f"model/activate {name}: verification failed ({err}); still on {prev.name}") from None
        try:
            analyzer = Analyzer(bundle, limits=self.cfg.quality_limits, shift_offset_cm1=self.analyzer.shift_offset_cm1)
            watch = LibraryWatch(bundle, self.cfg.library_path)
            watch.poll()
            _, added = watch.poll()
            analyzer.set_library(added if watch.status().state == "loaded" else None)
            test = self_test(analyzer)
        except Exception as err:  # noqa: BLE001 - whatever breaks, the running model stays
            raise UsageError(f"model/activate {name}: cannot load the model ({err}); still on {prev.name}") from None
        if not test.passed:
            log.warning("model/activate: self-test failed; not switched", extra={"model": name, "error": test.error})
            raise UsageError(
                f"model/activate {name}: self-test failed ({test.error}); rolled back, still on {prev.name}"
            )
        self.probation = (self.analyzer, self.bundle, self.library)
        self.probation_left = ACTIVATE_PROBATION_SPECTRA
        self._use(analyzer, bundle, watch)
        log.info("model activated", extra={"model": bundle.name, "sha256": bundle.sha256[:12], "previous": prev.name})
        return {
            "active": bundle.name,
            "sha256": bundle.sha256,
            "changed": True,
            "previous": prev.name,
            "self_test": {"spectra": test.spectra, "known": test.known, "correct": test.correct},
            "library": watch.status().using,
            "probation_spectra": ACTIVATE_PROBATION_SPECTRA,
        }

    def rollback(self, why: str) -> None:
        assert self.probation is not None
        analyzer, bundle, watch = self.probation
        log.error(
            "model/activate: the new model failed on a spectrum; rolled back",
            extra={"error": why, "model": self.bundle.name, "back_to": bundle.name},
        )
        self.live["last_rollback"] = {"model": self.bundle.name, "back_to": bundle.name, "error": why}
        self.probation = None
        self._use(analyzer, bundle, watch)

    def _use(self, analyzer: Analyzer, bundle: Bundle, watch: Any) -> None:
        self.analyzer, self.bundle, self.library = analyzer, bundle, watch
        self.shifts = analyzer.shifts_for(self.info.calibration_nm, self.info.laser_nm, self.info.pixel_count)
        self.live.update(bundle=bundle, library_watch=watch, library=watch.status())

    # -- calibration health -------------------------------------------------------------------

    def check_calibration(self, reference: str) -> dict[str, Any]:
        """Measure `reference` now, publish the retained health message, apply the offset only
        with `calibration_apply`; returns the health payload."""
        from edge.calibrate import measure_reference
        from edge.calibration import CalibrationError
        from edge.health import assess

        check, error = None, None
        try:
            if self.auto_exposure:
                self.plan_auto()
            plan = self.last_plan if self.auto_exposure else None
            self.arm_watchdog(plan.total_ms if plan is not None else self.integration_ms * self.averages)
            try:
                check = measure_reference(self.spec, self.info, reference, self.cfg.calibration_frames, dark=self.dark)
            finally:
                if not self.auto_exposure:
                    self.spec.configure(integration_ms=self.integration_ms, averages=self.averages)
        except CalibrationError as err:
            error = str(err)
        health = assess(
            check,
            device_id=self.cfg.device_id,
            reference=reference,
            checked_at=datetime.now(timezone.utc),
            offset_in_use_cm1=self.analyzer.shift_offset_cm1,
            limit_cm1=self.cfg.calibration_drift_limit_cm1,
            apply=self.cfg.calibration_apply,
            error=error,
        )
        if health.applied and check is not None:
            log.warning(
                "calibration drift: applying the measured shift offset (calibration_apply = true)",
                extra={"old_cm1": self.analyzer.shift_offset_cm1, "new_cm1": check.offset_cm1},
            )
            self.analyzer.shift_offset_cm1 = float(check.offset_cm1)
            self.shifts = self.analyzer.shifts_for(self.info.calibration_nm, self.info.laser_nm, self.info.pixel_count)
        elif health.status != "ok":
            log.warning(
                "calibration health",
                extra={"status": health.status, "drift_cm1": health.drift_cm1, "error": health.error},
            )
        payload = health.to_dict()
        self.live["health"] = payload
        self.health_sink(health.to_json())
        if error is not None:
            raise UsageError(f"calibrate: {error}")
        return payload

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        from firmware_bridge.errors import BridgeError
        from firmware_bridge.transport import LinkDown, LinkUp

        backoff_s = 1.0
        while not stop.is_set() and not self.finished():
            try:
                self.housekeeping()
                if self.finished() or stop.is_set():
                    break
                if self.auto_exposure:
                    self.auto_exposed_spectrum()
                    backoff_s = 1.0
                    continue
                for event in self.spec.stream(self.period_ms):
                    if stop.is_set():
                        break
                    if isinstance(event, LinkDown):
                        self.stats.link_down += 1
                        if self.metrics is not None:
                            self.metrics.set_link(False)
                        log.warning("spectrometer link lost; waiting for it to come back", extra={"port": self.port})
                        continue
                    if isinstance(event, LinkUp):
                        log.info("spectrometer link restored", extra={"port": self.port})
                        if self.metrics is not None:
                            self.metrics.set_link(True)
                        # A replugged device may have been reconfigured: take its calibration again.
                        if self.spec.info is not None:
                            self.info = self.spec.info
                            self.shifts = self.analyzer.shifts_for(
                                self.info.calibration_nm, self.info.laser_nm, self.info.pixel_count
                            )
                        continue
                    backoff_s = 1.0
                    self.handle(event)
                    if self.finished():
                        break
                    self.poll_library()
                    if self.break_stream():
                        break  # leave the stream to apply a `set` request or run a job
            except BridgeError as err:
                # Expected device trouble (NACK, timeout, unplugged mid-command): log one line,
                # back off, and redo the handshake; the daemon never dies of a device fault.
                log.warning("spectrometer error; retrying", extra={"error": str(err), "retry_in_s": backoff_s})
                if stop.wait(backoff_s):
                    break
                backoff_s = min(backoff_s * 2, 30.0)
                try:
                    self.prepare()
                except (BridgeError, InputError) as again:
                    log.warning("spectrometer still not ready", extra={"error": str(again)})
        for job in self.controls.take_jobs():
            job.finish(error="the daemon is stopping")


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

    from edge.calibration import REFERENCE_LINES_CM1
    from edge.errors import UsageError
    from edge.publisher import MqttSettings
    from edge.request_server import RequestServer

    def status() -> dict[str, Any]:
        # What `edge check` reports, but live: the device, the model, the broker, the queues.
        held = publisher.history.held() if publisher.history is not None else None
        lib = live.get("library")
        return {
            "device_id": cfg.device_id,
            "spectrometer": live["spectrometer"],
            "acquisition": {
                "integration_ms": live["integration_ms"],
                "averages": live["averages"],
                "rate_hz": cfg.rate_hz if cfg.simulate else None,
                "auto_exposure": live.get("auto_exposure", cfg.auto_exposure),
                "last_auto_exposure": live.get("last_exposure"),
                "max_acquisition_ms": cfg.max_acquisition_ms,
            },
            "model": {
                "name": live["bundle"].name,
                "sha256": live["bundle"].sha256,
                "classes": len(live["bundle"].labels),
                "path": str(live["bundle"].path),
                "last_rollback": live.get("last_rollback"),
            },
            "library": asdict(lib) if lib is not None else None,
            "health": live.get("health"),
            "publisher": asdict(publisher.stats()),
            "history": asdict(held) if held is not None else None,
            "run": asdict(stats),
            "allow_requests": list(cfg.allow_requests),
        }

    def ready() -> None:
        if live["integration_ms"] is None:
            raise UsageError("the spectrometer is not ready yet; try again")

    def apply_set(args: dict[str, Any]) -> dict[str, Any]:
        # Checked against the device's limits now (so the response can refuse), applied by
        # the acquisition loop before its next spectrum.
        ready()
        integ, avg, period = settings_for(
            cfg, live["info"], args, live["integration_ms"], live["averages"], round(1000.0 / cfg.rate_hz)
        )
        controls.put({k: v for k, v in args.items()})
        auto = args.get("auto_exposure", live.get("auto_exposure", cfg.auto_exposure))
        return {
            "integration_ms": integ,
            "averages": avg,
            "period_ms": period,
            "auto_exposure": auto,
            "applied": "from the next spectrum",
        }

    def calibrate(args: dict[str, Any]) -> dict[str, Any]:
        ready()
        ref = args["reference"]
        if ref not in REFERENCE_LINES_CM1:
            raise UsageError(f"unknown reference {ref!r} (known: {', '.join(sorted(REFERENCE_LINES_CM1))})")
        budget_s = (
            30.0 + cfg.calibration_frames * max(cfg.max_acquisition_ms, live["integration_ms"] * live["averages"]) / 1e3
        )
        return controls.submit(Job("calibrate", args)).wait(budget_s)

    def acquire(args: dict[str, Any]) -> dict[str, Any]:
        ready()
        count = int(args.get("count", 1))
        integ, avg, _ = settings_for(cfg, live["info"], args, live["integration_ms"], live["averages"], 1000)
        auto = live.get("auto_exposure") and "integration_ms" not in args and "averages" not in args
        per_ms = cfg.max_acquisition_ms if auto else integ * avg
        if count * per_ms > MAX_ACQUIRE_REQUEST_MS:
            raise UsageError(
                f"acquire would expose for up to {count * per_ms / 1e3:.0f} s "
                f"(limit {MAX_ACQUIRE_REQUEST_MS / 1e3:.0f} s per request); ask for fewer spectra"
            )
        return controls.submit(Job("acquire", args)).wait(30.0 + 2.0 * count * per_ms / 1e3)

    def library_add(args: dict[str, Any]) -> dict[str, Any]:
        from edge.library_watch import add_reference

        watch = live.get("library_watch")
        if watch is None:
            raise UsageError("this device has no library directory")
        lib = add_reference(
            live["bundle"],
            watch.directory,
            args["mineral"],
            args["shift_cm1"],
            args["intensity"],
            corrected=bool(args.get("corrected", False)),
            reference_id=args.get("reference_id"),
        )
        return {
            "mineral": args["mineral"],
            "references": len(lib),
            "directory": str(watch.directory),
            "applied": f"within {LIBRARY_POLL_S:g} s (the daemon re-reads the directory)",
        }

    def model_activate(args: dict[str, Any]) -> dict[str, Any]:
        ready()
        return controls.submit(Job("model/activate", args)).wait(120.0)

    server = RequestServer(
        MqttSettings.from_config(cfg),
        allowed=cfg.allow_requests,
        history=publisher.history,
        status=status,
        rate_per_s=cfg.request_rate_per_s,
        burst=cfg.request_burst,
        handlers={
            "set": apply_set,
            "calibrate": calibrate,
            "acquire": acquire,
            "library/add": library_add,
            "model/activate": model_activate,
        },
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


def _health_sink(cfg: EdgeConfig, server: Any, publisher: Any) -> Any:
    """Publishes the retained health message (on the request connection when there is one)."""
    topic = f"{cfg.prefix}/{cfg.device_id}/health"
    if server is not None:
        return lambda payload: server.publish(topic, payload, retain=True)
    return lambda payload: publisher._client.publish(topic, payload, qos=1, retain=True)  # noqa: SLF001


def run(
    cfg: EdgeConfig, *, stop: threading.Event | None = None, out: Any = None, spectra: str | Path | None = None
) -> int:
    """Run the daemon with a loaded config; returns the process exit code.

    `spectra`: with --simulate, the RRUFF folder or zip the emulator serves (default: the
    built-in sample tray). Result lines go to `out` (stdout) through edge.console.ThrottledLines."""
    from edge.console import ThrottledLines

    console = ThrottledLines(out or sys.stdout)
    try:
        return _run(cfg, stop=stop, out=console, spectra=spectra)
    finally:
        console.flush_now()


def _run(cfg: EdgeConfig, *, stop: threading.Event | None, out: Any, spectra: str | Path | None) -> int:
    from edge.library_watch import LibraryWatch
    from edge.publisher import Publisher

    stop = stop or threading.Event()
    if not cfg.simulate and not cfg.port:
        raise InputError("no spectrometer: give --port PORT (e.g. /dev/serial/by-id/...) or --simulate")
    if spectra is not None and not cfg.simulate:
        raise UsageError("--spectra gives the emulator its spectra: it needs --simulate")
    emulator = make_emulator(spectra) if cfg.simulate else None
    bundle = load_bundle(cfg.model_dir)
    analyzer = Analyzer(bundle, limits=cfg.quality_limits, shift_offset_cm1=cfg.shift_offset_cm1)
    library = LibraryWatch(bundle, cfg.library_path)
    library.poll()
    changed, added = library.poll()  # twice: a damaged directory is refused only on a second look
    analyzer.set_library(added if library.status().state == "loaded" else None)
    if library.status().state == "refused":
        print(f"edge: {library.status().error}; running on the bundle's own library", file=out, flush=True)
    log.info(
        "model loaded",
        extra={
            "model": bundle.name,
            "sha256": bundle.sha256[:12],
            "classes": len(bundle.labels),
            "runtime": analyzer.classifier.runtime,
            "library": library.status().using,
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
        live: dict[str, Any] = {
            "spectrometer": None,
            "integration_ms": None,
            "averages": cfg.averages,
            "info": None,
            "auto_exposure": cfg.auto_exposure,
            "library": library.status(),
            "library_watch": library,
            "bundle": bundle,
        }
        controls = Controls()
        server = None
        if cfg.allow_requests:
            server = _start_request_server(cfg, publisher, bundle, stats, live, stack, controls)
        metrics = _start_metrics(cfg, publisher, stack, out) if cfg.metrics_port else None
        backlog = publisher.pending()
        if backlog:
            log.info("resuming: results from an earlier run are queued", extra={"pending": backlog})
        if emulator is not None:
            port = instrument.start_emulator(emulator, stack)
            log.info(
                "simulating a spectrometer",
                extra={"port": port, "spectra": str(spectra) if spectra else "sample tray"},
            )
        else:
            port = str(cfg.port)
        spec = instrument.open_spectrometer(port, cfg.baud)
        stack.callback(spec.close)
        loop = Acquisition(
            cfg,
            spec,
            port,
            analyzer,
            bundle,
            publisher,
            stats,
            live,
            controls,
            out,
            metrics,
            _health_sink(cfg, server, publisher),
            library,
        )
        loop.prepare()
        info = loop.info
        live["spectrometer"] = {
            "model": info.model,
            "serial": info.serial_number,
            "pixels": info.pixel_count,
            "laser_nm": info.laser_nm,
            "port": port,
        }
        if metrics is not None:
            metrics.set_link(True)
        print(
            f"edge: {info.model} {info.serial_number} ({info.pixel_count} px, {info.laser_nm:g} nm) -> "
            f"{cfg.broker} as {cfg.device_id}; model {bundle.name} ({len(bundle.labels)} minerals)"
            + ("; auto-exposure" if cfg.auto_exposure else ""),
            file=out,
            flush=True,
        )
        loop.run(stop)
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
