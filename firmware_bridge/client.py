"""Host-side spectrometer client: the API the edge daemon calls.

    from firmware_bridge.client import Spectrometer
    from firmware_bridge.transport import LinkDown, LinkUp

    spec = Spectrometer.open("/dev/ttyACM0", baud=115200, timeout_s=2.0)  # or a pty, loop://
    info = spec.handshake()                  # FLUSH (drops a stale stream), then GET_INFO
    spec.configure(integration_ms=100, averages=4)
    dark = spec.acquire_dark()               # SpectrumFrame with is_dark == True
    frames = spec.acquire(3)                 # list[SpectrumFrame]
    for item in spec.stream(period_ms=500):  # SpectrumFrame | LinkDown | LinkUp
        if isinstance(item, LinkDown):
            ...                              # device unplugged; the client keeps reopening
        elif isinstance(item, LinkUp):
            ...                              # back: handshake + configure were redone
        else:
            handle(item, spec.info)          # counts -> spec.info.shifts_cm1()
    spec.close()

`acquire`, `acquire_dark` and `stream` send LASER on (with the device watchdog) before an
exposure that needs it; while streaming the client pings every `keepalive_s` so the watchdog
does not trip. Commands wait `timeout_s` for their ACK and are retried `retries` times when
that is safe (not ACQUIRE/DARK, which would expose twice). `stats` counts corrupt frames,
dropped spectrum seqs, stale frames discarded, timeouts, retries and reconnects.

Line-mode (text) devices: the codec detects them (or pass mode="line"); the same calls work,
mapped onto INFO/INT/AVG/START/STOP lines; a text device has no dark or laser control, so
`acquire_dark` raises DeviceError there.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from firmware_bridge import messages as m
from firmware_bridge.codec import Codec, FrameError, Mode
from firmware_bridge.errors import DeviceError, UsageError
from firmware_bridge.transport import LinkDown, LinkUp, Transport, TransportEvent

#: Commands that can be repeated safely when their ACK was lost.
_IDEMPOTENT = (
    m.Ping,
    m.GetInfo,
    m.SetIntegration,
    m.SetAverages,
    m.StreamStart,
    m.StreamStop,
    m.Laser,
    m.Abort,
    m.Flush,
)

#: Spectra kept while waiting for something else (e.g. arriving before an ACK).
_MAX_BACKLOG = 64


@dataclass
class ClientStats:
    spectra: int = 0
    corrupt_frames: int = 0  # FrameError events (bad CRC, garbage, ...)
    dropped_seqs: int = 0  # gaps in the device's spectrum seq
    stale_discarded: int = 0  # frames thrown away by handshake (old session's stream)
    timeouts: int = 0
    retries: int = 0
    nacks: int = 0
    link_downs: int = 0
    reconnects: int = 0


class Spectrometer:
    """See the module docstring."""

    def __init__(
        self,
        transport: Transport,
        *,
        timeout_s: float = 2.0,
        retries: int = 2,
        keepalive_s: float = 1.0,
    ) -> None:
        self.transport = transport
        self.timeout_s = timeout_s
        self.retries = retries
        self.keepalive_s = keepalive_s
        self.info: m.DeviceInfo | None = None
        self.stats = ClientStats()
        self._integration_ms: int | None = None
        self._averages: int | None = None
        self._last_seq: int | None = None
        self._backlog: deque[m.SpectrumFrame] = deque(maxlen=_MAX_BACKLOG)
        self._laser_on = False
        self._down = False

    @classmethod
    def open(
        cls,
        port_or_url: str,
        *,
        baud: int = 115200,
        timeout_s: float = 2.0,
        retries: int = 2,
        mode: Mode = "auto",
        reconnect: bool = True,
    ) -> Spectrometer:
        """Open a port path or pyserial URL; raises DeviceError when it cannot be opened."""
        transport = Transport(port_or_url, baud=baud, codec=Codec(mode), reconnect=reconnect)
        transport.start()
        return cls(transport, timeout_s=timeout_s, retries=retries)

    def close(self) -> None:
        if self.transport.connected and self.info is not None and not self._line:
            try:
                self._send(m.StreamStop())
                if self._laser_on:
                    self._send(m.Laser(False))
            except DeviceError:
                pass
        self.transport.close()

    def __enter__(self) -> Spectrometer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _line(self) -> bool:
        return self.transport.codec.mode == "line"

    # -- commands ------------------------------------------------------------------------

    def handshake(self) -> m.DeviceInfo:
        """Stop whatever the device is doing, drop stale data, read INFO."""
        self.transport.discard_input()
        self._backlog.clear()
        if not self._line:
            try:
                self._command(m.Flush(), discard=True)
            except DeviceError:
                if not self._line:  # the codec may have discovered a text device meanwhile
                    raise
        info = self._line_info() if self._line else self._request_info()
        self.info = info
        self._last_seq = None
        self._laser_on = False
        return info

    def configure(self, *, integration_ms: int | None = None, averages: int | None = None) -> None:
        """Set integration time and/or averaging (remembered and re-applied on reconnect)."""
        info = self._require_info()
        if integration_ms is not None:
            if not info.integration_min_ms <= integration_ms <= info.integration_max_ms:
                raise UsageError(
                    f"integration_ms={integration_ms} outside the device's "
                    f"{info.integration_min_ms}-{info.integration_max_ms} ms"
                )
            self._command(m.SetIntegration(integration_ms))
            self._integration_ms = integration_ms
        if averages is not None:
            if not 1 <= averages <= info.averages_max:
                raise UsageError(f"averages={averages} outside 1-{info.averages_max}")
            self._command(m.SetAverages(averages))
            self._averages = averages

    def laser(self, on: bool, *, power_pct: int = 100, watchdog_s: int = 0) -> None:
        self._require_info()
        if self._line:
            return  # text devices have no laser control
        self._command(m.Laser(on, power_pct, watchdog_s))
        self._laser_on = on

    def ping(self) -> None:
        self._command(m.Ping())

    def acquire(self, n: int = 1) -> list[m.SpectrumFrame]:
        """Acquire `n` spectra (laser on); missing ones (lost frames) are re-acquired."""
        self._require_info()
        if n < 1:
            raise UsageError("acquire needs n >= 1")
        if self._line:
            return self._line_take(n)
        self._ensure_laser()
        out: list[m.SpectrumFrame] = []
        for attempt in range(self.retries + 1):
            want = n - len(out)
            self._command(m.Acquire(want))
            out += self._collect(want, dark=False, timeout_s=self._exposure_timeout(want))
            if len(out) >= n:
                return out
            self.stats.retries += attempt < self.retries
        raise DeviceError(f"acquire: got {len(out)} of {n} spectra")

    def acquire_dark(self) -> m.SpectrumFrame:
        """One dark frame (the device closes the laser for it)."""
        self._require_info()
        if self._line:
            raise DeviceError("this text-mode device cannot take dark frames")
        for attempt in range(self.retries + 1):
            self._command(m.Dark())
            got = self._collect(1, dark=True, timeout_s=self._exposure_timeout(1))
            if got:
                return got[0]
            self.stats.retries += attempt < self.retries
        raise DeviceError("no dark frame received")

    def stream(self, period_ms: int, *, max_frames: int | None = None) -> Iterator[m.SpectrumFrame | LinkDown | LinkUp]:
        """Stream spectra every `period_ms`; yields link events too, and survives replug.

        Stops the device stream when the iterator is closed or `max_frames` were yielded.
        """
        self._require_info()
        count = 0
        self._start_stream(period_ms)
        last_ping = last_frame = time.monotonic()
        idle_limit = max(3 * period_ms / 1000.0, 3 * self._exposure_s(), self.timeout_s)
        try:
            while max_frames is None or count < max_frames:
                while self._backlog:
                    frame = self._backlog.popleft()
                    yield frame
                    count += 1
                now = time.monotonic()
                if not self._line and not self._down and now - last_ping > self.keepalive_s:
                    last_ping = now
                    self._send_quiet(m.Ping())  # feeds the laser watchdog; ACK ignored
                event = self._next(0.1)
                if isinstance(event, m.SpectrumFrame):
                    if event.is_dark:
                        continue
                    last_frame = time.monotonic()
                    yield event
                    count += 1
                elif isinstance(event, LinkDown):
                    yield event
                elif isinstance(event, LinkUp):
                    if self._recover(period_ms):
                        last_frame = time.monotonic()
                        yield event
                elif event is None and not self._down and time.monotonic() - last_frame > idle_limit:
                    # Silent device (stalled, or rebooted without us noticing): kick it.
                    self.stats.timeouts += 1
                    last_frame = time.monotonic()
                    with contextlib.suppress(DeviceError):
                        self._start_stream(period_ms)
        finally:
            if not self._line and not self._down:
                with contextlib.suppress(DeviceError):
                    self._command(m.StreamStop(), discard=True)

    # -- internals -----------------------------------------------------------------------

    def _require_info(self) -> m.DeviceInfo:
        if self.info is None:
            raise UsageError("call handshake() before using the spectrometer")
        return self.info

    def _exposure_s(self) -> float:
        return (self._integration_ms or 100) * (self._averages or 1) / 1000.0

    def _exposure_timeout(self, n: int) -> float:
        return self.timeout_s + n * self._exposure_s() * 1.5

    def _ensure_laser(self) -> None:
        if not self._laser_on:
            self.laser(True)

    def _start_stream(self, period_ms: int) -> None:
        if self._line:
            self._send_quiet(m.StreamStart(period_ms))
            return
        self._ensure_laser()
        self._command(m.StreamStart(period_ms))

    def _recover(self, period_ms: int | None) -> bool:
        """After LinkUp: handshake and re-apply settings; False if the device is not ready."""
        self.stats.reconnects += 1
        try:
            self.handshake()
            self.configure(integration_ms=self._integration_ms, averages=self._averages)
            if period_ms is not None:
                self._start_stream(period_ms)
        except DeviceError:
            return False
        return True

    def _send(self, msg: m.Message) -> int:
        codec = self.transport.codec
        seq = codec.next_tx_seq
        self.transport.send(codec.encode(msg))
        return seq

    def _send_quiet(self, msg: m.Message) -> None:
        with contextlib.suppress(DeviceError):
            self._send(msg)

    def _next(self, timeout_s: float) -> TransportEvent | None:
        """Next event with bookkeeping; FrameErrors are counted and skipped."""
        end = time.monotonic() + timeout_s
        while True:
            remaining = end - time.monotonic()
            event = self.transport.get(max(0.0, remaining))
            if event is None:
                return None
            if isinstance(event, FrameError):
                self.stats.corrupt_frames += 1
                continue
            if isinstance(event, LinkDown):
                self._down = True
                self.stats.link_downs += 1
            elif isinstance(event, LinkUp):
                self._down = False
            elif isinstance(event, m.SpectrumFrame):
                self._track(event)
            return event

    def _track(self, frame: m.SpectrumFrame) -> None:
        self.stats.spectra += 1
        if self._last_seq is not None and frame.seq > self._last_seq:
            self.stats.dropped_seqs += frame.seq - self._last_seq - 1
        self._last_seq = frame.seq

    def _command(self, msg: m.Message, *, discard: bool = False) -> None:
        """Send and wait for the matching ACK; NACK -> DeviceError. `discard` drops spectra
        seen meanwhile (stale data) instead of keeping them for the next acquire."""
        if self._line:
            self._send_quiet(msg)
            return
        attempts = self.retries + 1 if isinstance(msg, _IDEMPOTENT) else 1
        op = m.encode_payload(msg)[0]
        for attempt in range(attempts):
            if self._down:
                raise DeviceError(f"{self.transport.port} is disconnected")
            seq = self._send(msg)
            end = time.monotonic() + self.timeout_s
            while (remaining := end - time.monotonic()) > 0:
                event = self._next(remaining)
                if isinstance(event, m.Ack) and event.acked_seq == seq:
                    return
                if isinstance(event, m.Nack) and event.acked_seq == seq:
                    self.stats.nacks += 1
                    raise DeviceError(f"device refused {op.name}: {_nack_name(event.code)}")
                if isinstance(event, LinkDown):
                    raise DeviceError(f"{self.transport.port} disconnected ({event.reason})")
                if isinstance(event, m.SpectrumFrame):
                    if discard:
                        self.stats.stale_discarded += 1
                    else:
                        self._backlog.append(event)
                if isinstance(event, m.DeviceInfo):
                    self.info = event
                if self._line:  # the codec just found out this is a text device
                    return
            self.stats.timeouts += 1
            if attempt + 1 < attempts:
                self.stats.retries += 1
        raise DeviceError(f"no answer to {op.name} within {self.timeout_s:g} s")

    def _request_info(self) -> m.DeviceInfo:
        for attempt in range(self.retries + 1):
            self._send(m.GetInfo())
            end = time.monotonic() + self.timeout_s
            while (remaining := end - time.monotonic()) > 0:
                event = self._next(remaining)
                if isinstance(event, m.DeviceInfo):
                    return event
                if isinstance(event, LinkDown):
                    raise DeviceError(f"{self.transport.port} disconnected ({event.reason})")
                if isinstance(event, m.SpectrumFrame):
                    self.stats.stale_discarded += 1
            self.stats.timeouts += 1
            if attempt < self.retries:
                self.stats.retries += 1
        raise DeviceError(f"no INFO from {self.transport.port} within {self.timeout_s:g} s")

    def _line_info(self) -> m.DeviceInfo:
        if self.info is not None:  # seen during the binary attempt
            return self.info
        for _ in range(self.retries + 1):
            self._send_quiet(m.GetInfo())
            end = time.monotonic() + self.timeout_s
            while (remaining := end - time.monotonic()) > 0:
                event = self._next(remaining)
                if isinstance(event, m.DeviceInfo):
                    return event
        raise DeviceError(f"no #INFO line from {self.transport.port} within {self.timeout_s:g} s")

    def _line_take(self, n: int) -> list[m.SpectrumFrame]:
        self._send_quiet(m.StreamStart(max(1, int(self._exposure_s() * 1000))))
        return self._collect(n, dark=False, timeout_s=self._exposure_timeout(n) + self.timeout_s)

    def _collect(self, n: int, *, dark: bool, timeout_s: float) -> list[m.SpectrumFrame]:
        out: list[m.SpectrumFrame] = []
        while self._backlog and len(out) < n:
            frame = self._backlog.popleft()
            if frame.is_dark == dark:
                out.append(frame)
        end = time.monotonic() + timeout_s
        while len(out) < n and (remaining := end - time.monotonic()) > 0:
            event = self._next(remaining)
            if isinstance(event, m.SpectrumFrame) and event.is_dark == dark:
                out.append(event)
            elif isinstance(event, LinkDown):
                raise DeviceError(f"{self.transport.port} disconnected ({event.reason})")
        if len(out) < n:
            self.stats.timeouts += 1
        return out


def _nack_name(code: int) -> str:
    try:
        return m.NackCode(code).name
    except ValueError:
        return f"code {code}"
