"""A spectrometer on a pseudo-terminal: the device side of the protocol, for tests and demos.

In-process API (the edge daemon's ``--simulate`` mode and tests use this):

    emu = Emulator(EmulatorConfig(minerals=("Quartz", "Calcite"), seed=1))
    port = emu.start()            # starts a thread; returns the pty slave path (or the link)
    ...                           # open `port` with Spectrometer.open(port)
    emu.wait_for(lambda s: s.spectra_sent >= 3, timeout_s=5)   # optional, for tests
    emu.stop()                    # idempotent; also a context manager: `with Emulator(...)`

`EmulatorConfig.link` makes a stable symlink (e.g. /tmp/ttyRAMAN0) that is re-pointed when a
simulated disconnect recreates the pty. `emu.stats` counts what happened (frames sent,
dropped, corrupted, disconnects); `emu.ground_truth` lists what each spectrum really was, and
`EmulatorConfig.ground_truth` also writes it as JSON lines (seq, mineral, rruff_id, file).

Spectra come from RRUFF Processed spectra through `physics.simulate_counts`. The emulator
speaks binary frames, or the text line protocol with ``line_mode=True``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import IO

import numpy as np

from firmware_bridge import messages as m
from firmware_bridge.codec import Codec, FrameError
from firmware_bridge.device_session import FLUSH_TX, MAX_CATCH_UP, DeviceSession
from firmware_bridge.errors import UsageError
from firmware_bridge.library import DEFAULT_MINERALS, load_library
from firmware_bridge.physics import InstrumentModel, fluorescence_background, raman_on_pixels, simulate_counts
from raman_core.bands import reference_sample
from raman_core.rruff_format import RamanSpectrum
from raman_core.units import FULL_SCALE

__all__ = ["MAX_CATCH_UP", "Emulator", "EmulatorConfig", "EmulatorStats", "Faults", "GroundTruth"]

#: Bytes the device may hold for transmission; beyond this new spectra are dropped (a real
#: device's USB buffer is small too), which keeps a host-less emulator from growing.
MAX_TX_BUFFER = 64 * 1024
#: Clean (noise-free) per-pixel spectra kept, one per library spectrum served (11 KB each at
#: 1,360 pixels): the forward model's slow part runs once per sample, not once per frame.
CLEAN_CACHE_SIZE = 512


@dataclass(frozen=True)
class Faults:
    """Fault injection. Rates are probabilities per outgoing frame."""

    corrupt_rate: float = 0.0  # flip one byte of the frame
    drop_rate: float = 0.0  # do not send the frame at all
    garbage_rate: float = 0.0  # send a burst of random bytes before the frame
    stall_after: int | None = None  # after this many spectra, go silent for stall_s
    stall_s: float = 2.0
    disconnect_after: int | None = None  # after this many spectra, close the pty (once)
    reconnect_after_s: float = 1.0  # then create a new pty (and re-point the link)
    stale_stream: bool = False  # already streaming an "old session" before any command


@dataclass(frozen=True)
class EmulatorConfig:
    spectra_path: str | os.PathLike[str] | None = None  # None: the built-in sample tray
    minerals: tuple[str, ...] | None = DEFAULT_MINERALS  # None: every mineral in the data
    sample: str | None = None  # a reference sample (raman_core.bands) instead of minerals
    laser_nm: float = 785.0
    pixels: int = 1024
    rate_hz: float = 5.0  # stale-stream and line-mode stream rate
    seed: int = 0
    link: str | None = None
    ground_truth: str | None = None  # JSON-lines file
    line_mode: bool = False
    hold: int = 1  # consecutive spectra of the same sample
    model: InstrumentModel = field(default_factory=InstrumentModel)  # physics overrides
    faults: Faults = field(default_factory=Faults)
    serial_number: str = "EMU-0001"
    model_name: str = "RamanEdge-Emulator"
    firmware_version: str = "emu-1.0"
    integration_min_ms: int = 1
    integration_max_ms: int = 60_000


@dataclass
class EmulatorStats:
    frames_sent: int = 0
    spectra_sent: int = 0
    commands: int = 0
    frame_errors: int = 0  # bad frames received from the host
    dropped: int = 0
    corrupted: int = 0
    garbage_bursts: int = 0
    tx_overflow: int = 0
    disconnects: int = 0
    stalls: int = 0
    laser_watchdog_trips: int = 0
    streaming: bool = False
    laser_on: bool = False
    connected: bool = False


@dataclass(frozen=True)
class GroundTruth:
    seq: int
    mineral: str
    rruff_id: str
    file: str
    dark: bool = False


class Emulator:
    """See the module docstring. Not thread-safe except for start/stop/wait_for/stats."""

    def __init__(self, config: EmulatorConfig | None = None, library: list[RamanSpectrum] | None = None) -> None:
        self.config = config or EmulatorConfig()
        cfg = self.config
        if library is None:
            library = [reference_sample(cfg.sample)] if cfg.sample else load_library(cfg.spectra_path, cfg.minerals)
        self._library = library
        by_mineral: dict[str, list[RamanSpectrum]] = {}
        for spec in self._library:
            by_mineral.setdefault(spec.mineral, []).append(spec)
        self._by_mineral = dict(sorted(by_mineral.items()))
        self.model = InstrumentModel.default(
            **{
                **{k: getattr(cfg.model, k) for k in cfg.model.__dataclass_fields__},
                "laser_nm": cfg.laser_nm,
                "pixels": cfg.pixels,
                "calibration_nm": cfg.model.calibration_nm,
            }
        )
        self.stats = EmulatorStats()
        self._clean: dict[int, np.ndarray] = {}  # id(library spectrum) -> raman_on_pixels
        self._exposure_models: dict[tuple[int, int], InstrumentModel] = {}
        self.ground_truth: deque[GroundTruth] = deque(maxlen=100_000)
        self._rng = np.random.default_rng(cfg.seed)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_path = ""
        self._gt_file: IO[str] | None = None
        self._reset_device()

    # -- public API ----------------------------------------------------------------------

    @property
    def minerals(self) -> list[str]:
        return list(self._by_mineral)

    @property
    def port(self) -> str:
        """What a host should open: the link if configured, else the current pty path."""
        return self.config.link or self._slave_path

    @property
    def slave_path(self) -> str:
        return self._slave_path

    def start(self) -> str:
        if self._thread is not None:
            raise UsageError("emulator already started")
        if self.config.ground_truth:
            self._gt_file = open(self.config.ground_truth, "a", encoding="utf-8")  # noqa: SIM115
        self._open_pty()
        self._thread = threading.Thread(target=self._run, name="emulator", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close_pty()
        if self._gt_file is not None:
            self._gt_file.close()
            self._gt_file = None

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, predicate: Callable[[EmulatorStats], bool], timeout_s: float) -> bool:
        """Block until `predicate(stats)` holds (checked after every event) or timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.stats), timeout=timeout_s)

    # -- device state --------------------------------------------------------------------

    def _reset_device(self) -> None:
        """Power-on state: what a real device has after (re)boot."""
        cfg = self.config
        self._codec = Codec("line" if cfg.line_mode else "binary")
        stale = cfg.line_mode or cfg.faults.stale_stream  # a text device streams from boot
        #: The protocol state (commands, stream, laser, watchdog): device_session.py.
        self.session = DeviceSession(
            self.info(),
            integration_ms=self.model.integration_ms,
            averages=self.model.averages,
            now=time.monotonic(),
            line_mode=cfg.line_mode,
            # Boots with the laser off (safety); an old session's stream had it on.
            laser_on=stale,
            stream_period_s=1.0 / max(cfg.rate_hz, 0.01) if stale else None,
        )
        self._tx = bytearray()
        self._sample: RamanSpectrum | None = None
        self._sample_left = 0
        self._fluo = np.ones(cfg.pixels)
        self._spectra_this_link = 0
        self._stalled_until = 0.0
        self._sync_stats()

    def _sync_stats(self) -> None:
        self.stats.streaming = self.session.streaming
        self.stats.laser_on = self.session.laser_on

    def info(self) -> m.DeviceInfo:
        return m.DeviceInfo(
            model=self.config.model_name,
            serial_number=self.config.serial_number,
            firmware_version=self.config.firmware_version,
            pixel_count=self.config.pixels,
            calibration_nm=self.model.reported_calibration_nm(),
            laser_nm=float(self.config.laser_nm),
            integration_min_ms=self.config.integration_min_ms,
            integration_max_ms=self.config.integration_max_ms,
        )

    # -- pty handling --------------------------------------------------------------------

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        # Raw, or the line discipline would echo our own frames back and mangle newlines.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._slave_path = os.ttyname(slave)
        if self.config.link:
            tmp = f"{self.config.link}.tmp{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(self._slave_path, tmp)
            os.replace(tmp, self.config.link)  # atomic: a reader never sees no link
        self.stats.connected = True
        if self.config.line_mode:
            self._send(self.info())  # DIY devices print their header at boot

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self.stats.connected = False
        if self.config.link and self._stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.config.link)

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- main loop -----------------------------------------------------------------------

    def _run(self) -> None:
        reconnect_at: float | None = None
        while not self._stop.is_set():
            now = time.monotonic()
            if self._master is None:
                if reconnect_at is not None and now >= reconnect_at:
                    reconnect_at = None
                    self._reset_device()
                    self._open_pty()
                    self._notify()
                self._stop.wait(0.02)
                continue
            if now < self._stalled_until:
                self._stop.wait(min(0.05, self._stalled_until - now))
                continue
            self._poll_io(self.session.next_deadline(now, 0.05) - now)
            self._tick(time.monotonic())
            faults = self.config.faults
            if (
                faults.disconnect_after is not None
                and self.stats.disconnects == 0
                and self._spectra_this_link >= faults.disconnect_after
            ):
                self._flush_tx_blocking(0.5)
                self.stats.disconnects += 1
                self._close_pty()
                if self.config.link:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.config.link)
                reconnect_at = time.monotonic() + faults.reconnect_after_s
                self._notify()

    def _poll_io(self, timeout_s: float) -> None:
        assert self._master is not None
        wlist = [self._master] if self._tx else []
        try:
            readable, writable, _ = select.select([self._master], wlist, [], timeout_s)
        except (OSError, ValueError):
            return
        if readable:
            try:
                data = os.read(self._master, 65536)
            except (BlockingIOError, InterruptedError):
                data = b""
            except OSError:
                data = b""  # EIO: no host has the port open; nothing to read
            if data:
                self.session.heard(time.monotonic())
                self._codec.feed(data)
                while (event := self._codec.next_event()) is not None:
                    self._handle(event)
        if writable or self._tx:
            self._write_some()

    def _write_some(self) -> None:
        if not self._tx or self._master is None:
            return
        try:
            # As much as the pty takes: at 1,000 frames/s of 2.7 KB a 4 KB write per loop
            # turn would be the bottleneck.
            with memoryview(self._tx) as pending:
                n = os.write(self._master, pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        del self._tx[:n]

    def _flush_tx_blocking(self, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        while self._tx and time.monotonic() < end and self._master is not None:
            select.select([], [self._master], [], 0.02)
            self._write_some()

    def _tick(self, now: float) -> None:
        session = self.session
        if session.tick(now):
            self.stats.laser_watchdog_trips += 1
        while (exposure := session.next_exposure(now)) is not None:
            self._send_spectrum(dark=exposure.dark, streamed=exposure.streamed)
            if self._stalled_until > now:
                break  # the stall fault: the device goes silent now
        self._sync_stats()
        self._notify()

    # -- commands ------------------------------------------------------------------------

    def _handle(self, event: m.Message | FrameError) -> None:
        if isinstance(event, FrameError):
            self.stats.frame_errors += 1
            return
        self.stats.commands += 1
        for reply in self.session.receive(event, self._codec.last_rx_seq or 0, time.monotonic()):
            if reply is FLUSH_TX:
                self._tx.clear()
            else:
                self._send(reply)  # type: ignore[arg-type]
        self._sync_stats()

    # -- output --------------------------------------------------------------------------

    def _next_sample(self) -> RamanSpectrum:
        if self._sample is None or self._sample_left <= 0:
            minerals = list(self._by_mineral)
            mineral = minerals[int(self._rng.integers(len(minerals)))]
            choices = self._by_mineral[mineral]
            self._sample = choices[int(self._rng.integers(len(choices)))]
            self._sample_left = max(1, self.config.hold)
            self._fluo = fluorescence_background(self.model, self._rng)
        self._sample_left -= 1
        return self._sample

    def _exposure_model(self) -> InstrumentModel:
        key = (self.session.integration_ms, self.session.averages)
        model = self._exposure_models.get(key)
        if model is None:
            model = replace(self.model, integration_ms=key[0], averages=key[1])
            self._exposure_models[key] = model
        return model

    def _clean_signal(self, sample: RamanSpectrum) -> np.ndarray:
        """The sample's noise-free per-pixel signal (depends on the optics, not the exposure)."""
        clean = self._clean.get(id(sample))
        if clean is None:
            if len(self._clean) >= CLEAN_CACHE_SIZE:
                self._clean.pop(next(iter(self._clean)))  # oldest first
            clean = raman_on_pixels(sample.shift_cm1, sample.intensity, self.model)
            clean.setflags(write=False)
            self._clean[id(sample)] = clean
        return clean

    def _send_spectrum(self, *, dark: bool, streamed: bool) -> None:
        model = self._exposure_model()
        sample = self._next_sample() if not dark else None
        laser = self.session.laser_on and not dark
        if sample is not None and laser:
            counts = simulate_counts(
                sample.shift_cm1,
                sample.intensity,
                model,
                self._rng,
                fluorescence=self._fluo,
                raman=self._clean_signal(sample),
            )
        else:
            counts = simulate_counts(np.zeros(2), np.zeros(2), model, self._rng, dark=True)
        flags = m.SpectrumFlag.NONE
        if dark:
            flags |= m.SpectrumFlag.DARK_FRAME
        if laser:
            flags |= m.SpectrumFlag.LASER_ON
        if streamed:
            flags |= m.SpectrumFlag.STREAMED
        if counts.max() >= FULL_SCALE:
            flags |= m.SpectrumFlag.SATURATED
        seq = self.stats.spectra_sent
        frame = m.SpectrumFrame(
            seq=seq,
            timestamp_ms=int(time.monotonic() * 1000) & 0xFFFFFFFF,
            integration_ms=self.session.integration_ms,
            averages=self.session.averages,
            flags=int(flags),
            counts=counts,
        )
        if sample is not None and laser:
            gt = GroundTruth(seq, sample.mineral, sample.rruff_id, sample.file)
        else:
            gt = GroundTruth(seq, "", "", "", dark=True)
        self.ground_truth.append(gt)
        if self._gt_file is not None:
            self._gt_file.write(json.dumps(gt.__dict__) + "\n")
            self._gt_file.flush()
        self.stats.spectra_sent += 1
        self._spectra_this_link += 1
        self._send(frame, faults=True)
        faults = self.config.faults
        if (
            faults.stall_after is not None
            and self.stats.stalls == 0
            and (self.stats.spectra_sent >= faults.stall_after)
        ):
            self.stats.stalls += 1
            self._flush_tx_blocking(0.5)
            self._stalled_until = time.monotonic() + faults.stall_s

    def _send(self, msg: m.Message, *, faults: bool = False) -> None:
        data = self._codec.encode(msg)
        f = self.config.faults
        if faults:
            if f.drop_rate and self._rng.random() < f.drop_rate:
                self.stats.dropped += 1
                return
            if f.garbage_rate and self._rng.random() < f.garbage_rate:
                self.stats.garbage_bursts += 1
                n = int(self._rng.integers(1, 200))
                data = self._rng.integers(0, 256, n, dtype=np.uint8).tobytes() + data
            if f.corrupt_rate and self._rng.random() < f.corrupt_rate:
                self.stats.corrupted += 1
                buf = bytearray(data)
                pos = int(self._rng.integers(0, max(1, len(buf) - 1)))
                buf[pos] ^= 1 << int(self._rng.integers(0, 8))
                data = bytes(buf)
        if len(self._tx) + len(data) > MAX_TX_BUFFER:
            self.stats.tx_overflow += 1
            return
        self._tx += data
        self.stats.frames_sent += 1
        self._write_some()
