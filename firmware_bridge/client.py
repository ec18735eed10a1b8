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

Layers: the protocol state (which reply answers which command, retries, backlog, keepalive,
seq gaps) is `host_session.HostSession`, which does no I/O. `_BinaryDriver` and `_LineDriver`
are the two protocols' policies on top of it; both run the same blocking pump between the
session and the `Transport` (which only moves bytes through the codec). `Spectrometer` is
the one API in front and picks the driver from the codec's (detected) mode.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from firmware_bridge import messages as m
from firmware_bridge.codec import Codec, Mode
from firmware_bridge.errors import DeviceError, UsageError
from firmware_bridge.host_session import (
    IDEMPOTENT,
    MAX_BACKLOG,
    Action,
    ClientStats,
    Deliver,
    HostSession,
    Recover,
    Restart,
    Send,
)
from firmware_bridge.transport import LinkDown, LinkUp, Transport

__all__ = ["IDEMPOTENT", "MAX_BACKLOG", "ClientStats", "Spectrometer"]

#: How long the stream loop waits for an event before it looks at the clock again.
_STREAM_POLL_S = 0.1


class _Driver:
    """The blocking pump both protocols share: transmit the session's `Send`s, feed it the
    transport's events until its request is finished."""

    def __init__(self, spec: Spectrometer) -> None:
        self.spec = spec
        self.session = spec.session
        self.transport = spec.transport

    def transmit(self, actions: list[Action]) -> None:
        for action in actions:
            if not isinstance(action, Send):
                continue  # stream actions only matter to the stream loop
            codec = self.transport.codec
            seq: int | None = codec.next_tx_seq
            try:
                self.transport.send(codec.encode(action.msg))
            except DeviceError:
                if not action.quiet:
                    self.session.cancel()
                    raise
                seq = None
            self.session.sent(seq, time.monotonic())

    def run(self, actions: list[Action], *, until_line: bool = False) -> Any:
        """Transmit `actions`, then pump events until the session's request is finished.
        `until_line`: stop as soon as the codec finds a text device (which sends no ACK)."""
        session = self.session
        self.transmit(actions)
        while not session.finished:
            event = self.transport.get(session.wait_s(time.monotonic()))
            now = time.monotonic()
            if event is None:
                self.transmit(session.tick(now))
                continue
            self.transmit(session.receive(event, now))
            if until_line and self.transport.codec.mode == "line":
                session.cancel()
                return None
            if not session.finished:
                self.transmit(session.tick(now))  # a busy link must not starve the timeout
        return session.result()

    def collect(self, n: int, *, dark: bool, timeout_s: float) -> list[m.SpectrumFrame]:
        frames: list[m.SpectrumFrame] = self.run(
            self.session.collect(n, dark=dark, timeout_s=timeout_s, now=time.monotonic())
        )
        return frames

    def stream(self, period_ms: int, max_frames: int | None) -> Iterator[m.SpectrumFrame | LinkDown | LinkUp]:
        session = self.session
        count = 0
        self.start_stream(period_ms)
        session.stream_begin(period_ms, time.monotonic(), keepalive=self.keepalive)
        try:
            while max_frames is None or count < max_frames:
                if session.backlog:
                    yield session.backlog.popleft()
                    count += 1
                    continue
                actions = session.tick(time.monotonic())
                event = self.transport.get(_STREAM_POLL_S)
                if event is not None:
                    actions += session.receive(event, time.monotonic())
                for action in actions:
                    if isinstance(action, Send):
                        self.transmit([action])
                    elif isinstance(action, Deliver):
                        yield action.item
                        count += isinstance(action.item, m.SpectrumFrame)
                    elif isinstance(action, Recover):
                        if self.spec._recover(period_ms):
                            session.stream_recovered(time.monotonic())
                            yield action.link_up
                    elif isinstance(action, Restart):
                        with contextlib.suppress(DeviceError):
                            self.start_stream(period_ms)
        finally:
            session.stream_end()
            self.stop_stream()

    # -- what the two protocols do differently -------------------------------------------

    keepalive = False

    def command(self, msg: m.Message, *, discard: bool = False) -> None:
        raise NotImplementedError

    def read_info(self) -> m.DeviceInfo:
        raise NotImplementedError

    def laser(self, on: bool, power_pct: int, watchdog_s: int) -> None:
        raise NotImplementedError

    def acquire(self, n: int) -> list[m.SpectrumFrame]:
        raise NotImplementedError

    def acquire_dark(self) -> m.SpectrumFrame:
        raise NotImplementedError

    def start_stream(self, period_ms: int) -> None:
        raise NotImplementedError

    def stop_stream(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _BinaryDriver(_Driver):
    """Framed protocol: every command is ACK'd; laser, dark frames and keepalive exist."""

    keepalive = True

    def command(self, msg: m.Message, *, discard: bool = False) -> None:
        self.run(self.session.command(msg, time.monotonic(), discard=discard), until_line=True)

    def read_info(self) -> m.DeviceInfo:
        info: m.DeviceInfo = self.run(self.session.request_info(time.monotonic(), strict=True))
        return info

    def laser(self, on: bool, power_pct: int, watchdog_s: int) -> None:
        self.command(m.Laser(on, power_pct, watchdog_s))

    def ensure_laser(self) -> None:
        if not self.session.laser_on:
            self.laser(True, 100, 0)

    def acquire(self, n: int) -> list[m.SpectrumFrame]:
        """Missing spectra (lost frames) are asked for again, `retries` times."""
        session = self.session
        self.ensure_laser()
        out: list[m.SpectrumFrame] = []
        for attempt in range(session.retries + 1):
            want = n - len(out)
            self.command(m.Acquire(want))
            out += self.collect(want, dark=False, timeout_s=session.exposure_timeout_s(want))
            if len(out) >= n:
                return out
            session.stats.retries += attempt < session.retries
        raise DeviceError(f"acquire: got {len(out)} of {n} spectra")

    def acquire_dark(self) -> m.SpectrumFrame:
        session = self.session
        for attempt in range(session.retries + 1):
            self.command(m.Dark())
            got = self.collect(1, dark=True, timeout_s=session.exposure_timeout_s(1))
            if got:
                return got[0]
            session.stats.retries += attempt < session.retries
        raise DeviceError("no dark frame received")

    def start_stream(self, period_ms: int) -> None:
        self.ensure_laser()
        self.command(m.StreamStart(period_ms))

    def stop_stream(self) -> None:
        if not self.session.down:
            with contextlib.suppress(DeviceError):
                self.command(m.StreamStop(), discard=True)

    def close(self) -> None:
        """Leave the device idle and the laser off (best effort, no waiting for ACKs)."""
        try:
            self.transmit([Send(m.StreamStop())])
            if self.session.laser_on:
                self.transmit([Send(m.Laser(False))])
        except DeviceError:
            pass


class _LineDriver(_Driver):
    """Text protocol: commands are lines without replies; no laser, no dark, no keepalive."""

    def command(self, msg: m.Message, *, discard: bool = False) -> None:
        self.transmit([Send(msg, quiet=True)])
        self.session.assume_applied(msg)

    def read_info(self) -> m.DeviceInfo:
        info: m.DeviceInfo = self.run(self.session.request_info(time.monotonic(), strict=False))
        return info

    def laser(self, on: bool, power_pct: int, watchdog_s: int) -> None:
        return  # text devices have no laser control

    def acquire(self, n: int) -> list[m.SpectrumFrame]:
        session = self.session
        self.transmit([Send(m.StreamStart(max(1, int(session.exposure_s() * 1000))), quiet=True)])
        return self.collect(n, dark=False, timeout_s=session.exposure_timeout_s(n) + session.timeout_s)

    def acquire_dark(self) -> m.SpectrumFrame:
        raise DeviceError("this text-mode device cannot take dark frames")

    def start_stream(self, period_ms: int) -> None:
        self.transmit([Send(m.StreamStart(period_ms), quiet=True)])

    def stop_stream(self) -> None:
        return  # a text device streams on; the next command line (or none) is up to it

    def close(self) -> None:
        return


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
        self.session = HostSession(timeout_s=timeout_s, retries=retries, keepalive_s=keepalive_s, port=transport.port)
        self._binary = _BinaryDriver(self)
        self._text = _LineDriver(self)

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

    # The session holds the state; these keep the attributes callers know.

    @property
    def info(self) -> m.DeviceInfo | None:
        return self.session.info

    @info.setter
    def info(self, value: m.DeviceInfo | None) -> None:
        self.session.info = value

    @property
    def stats(self) -> ClientStats:
        return self.session.stats

    @property
    def timeout_s(self) -> float:
        return self.session.timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float) -> None:
        self.session.timeout_s = value

    @property
    def retries(self) -> int:
        return self.session.retries

    @retries.setter
    def retries(self, value: int) -> None:
        self.session.retries = value

    @property
    def keepalive_s(self) -> float:
        return self.session.keepalive_s

    @keepalive_s.setter
    def keepalive_s(self, value: float) -> None:
        self.session.keepalive_s = value

    def close(self) -> None:
        if self.transport.connected and self.info is not None:
            self._driver.close()
        self.transport.close()

    def __enter__(self) -> Spectrometer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _line(self) -> bool:
        return self.transport.codec.mode == "line"

    @property
    def _driver(self) -> _Driver:
        return self._text if self._line else self._binary

    # -- commands ------------------------------------------------------------------------

    def handshake(self) -> m.DeviceInfo:
        """Stop whatever the device is doing, drop stale data, read INFO."""
        self.transport.discard_input()
        self.session.reset()
        if not self._line:
            try:
                self._binary.command(m.Flush(), discard=True)
            except DeviceError:
                if not self._line:  # the codec may have discovered a text device meanwhile
                    raise
        info = self._driver.read_info()
        self.session.handshake_done(info)
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
        if averages is not None:
            if not 1 <= averages <= info.averages_max:
                raise UsageError(f"averages={averages} outside 1-{info.averages_max}")
            self._command(m.SetAverages(averages))

    def laser(self, on: bool, *, power_pct: int = 100, watchdog_s: int = 0) -> None:
        self._require_info()
        self._driver.laser(on, power_pct, watchdog_s)

    def ping(self) -> None:
        self._command(m.Ping())

    def acquire(self, n: int = 1) -> list[m.SpectrumFrame]:
        """Acquire `n` spectra (laser on); missing ones (lost frames) are re-acquired."""
        self._require_info()
        if n < 1:
            raise UsageError("acquire needs n >= 1")
        return self._driver.acquire(n)

    def acquire_dark(self) -> m.SpectrumFrame:
        """One dark frame (the device closes the laser for it)."""
        self._require_info()
        return self._driver.acquire_dark()

    def stream(self, period_ms: int, *, max_frames: int | None = None) -> Iterator[m.SpectrumFrame | LinkDown | LinkUp]:
        """Stream spectra every `period_ms`; yields link events too, and survives replug.

        Stops the device stream when the iterator is closed or `max_frames` were yielded.
        """
        self._require_info()
        yield from self._driver.stream(period_ms, max_frames)

    # -- internals -----------------------------------------------------------------------

    def _require_info(self) -> m.DeviceInfo:
        if self.info is None:
            raise UsageError("call handshake() before using the spectrometer")
        return self.info

    def _command(self, msg: m.Message, *, discard: bool = False) -> None:
        """Send and wait for the matching ACK; NACK -> DeviceError (text devices: just send)."""
        self._driver.command(msg, discard=discard)

    def _recover(self, period_ms: int | None) -> bool:
        """After LinkUp: handshake and re-apply settings; False if the device is not ready."""
        session = self.session
        try:
            self.handshake()
            self.configure(integration_ms=session.integration_ms, averages=session.averages)
            if period_ms is not None:
                self._driver.start_stream(period_ms)
        except DeviceError:
            return False
        return True
