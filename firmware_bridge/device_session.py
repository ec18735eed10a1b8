"""Sans-I/O device side of the protocol: what a spectrometer's firmware decides, no port.

    session = DeviceSession(info, integration_ms=100, averages=1, now=time.monotonic())
    replies = session.receive(m.SetIntegration(5), seq=0, now=now)   # [Ack(SET_INTEGRATION, 0)]
    session.heard(now)                       # any bytes from the host (feeds the laser watchdog)
    session.tick(now)                        # once per loop turn: watchdog, catch-up budget
    while (exposure := session.next_exposure(now)) is not None:
        ...                                  # expose (physics) and send one SPECTRUM

Events in: decoded host commands with their header seq, bytes heard, the clock. Out:
replies (ACK, NACK with its code, INFO, and `FLUSH_TX`: drop what is queued for
transmission) and the exposures that came due. The state is what docs/protocol.md section
3 describes: integration time, averages, pending acquisitions, the stream, the laser and its
watchdog. The pty runner (emulator.py) owns the bytes, the physics and the fault injection.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from firmware_bridge import messages as m

#: Most streamed spectra sent in one loop turn when the loop ran late (32 ms of a 1 ms stream:
#: a loaded 2-core machine deschedules a process for several ms at a time).
MAX_CATCH_UP = 32

#: Most spectra one ACQUIRE may ask for.
MAX_ACQUIRE_COUNT = 1000


@dataclass(frozen=True)
class Exposure:
    """One spectrum to take now."""

    dark: bool  # laser closed for it (reply to DARK)
    streamed: bool  # produced by STREAM_START


ACQUIRED = Exposure(dark=False, streamed=False)
DARK = Exposure(dark=True, streamed=False)
STREAMED = Exposure(dark=False, streamed=True)


class FlushTx:
    """Reply action: discard every frame queued for transmission (FLUSH), before its ACK."""

    def __repr__(self) -> str:
        return "FLUSH_TX"


FLUSH_TX = FlushTx()

Reply = m.Message | FlushTx


class DeviceSession:
    """See the module docstring. Power-on state unless told otherwise (a stale stream)."""

    def __init__(
        self,
        info: m.DeviceInfo,
        *,
        integration_ms: int,
        averages: int,
        now: float,
        line_mode: bool = False,
        laser_on: bool = False,
        stream_period_s: float | None = None,
    ) -> None:
        self.info = info
        self.line_mode = line_mode  # text protocol: replies only to INFO/PING/errors, no laser
        self.integration_ms = integration_ms
        self.averages = averages
        self.laser_on = laser_on
        self.watchdog_s = float(m.DEFAULT_WATCHDOG_S)
        self.last_host_s = now
        self.stream_period_s = stream_period_s
        self.next_stream_s = now
        self.pending: deque[tuple[float, Exposure]] = deque()  # (due time, exposure)
        self._streamed_this_turn = 0

    @property
    def streaming(self) -> bool:
        return self.stream_period_s is not None

    def exposure_s(self) -> float:
        return self.integration_ms * self.averages / 1000.0

    # -- events in -----------------------------------------------------------------------

    def heard(self, now: float) -> None:
        """Bytes arrived from the host: it is alive (the laser watchdog starts again)."""
        self.last_host_s = now

    def receive(self, msg: m.Message, seq: int, now: float) -> list[Reply]:
        """Carry out one command (header seq `seq`); the replies to send, in order."""
        op = m.op_of(msg)
        nack = self._apply(msg, now)
        if self.line_mode:
            if isinstance(msg, m.GetInfo):
                return [self.info]
            if isinstance(msg, m.Ping):
                return [m.Ack(op, seq)]
            return [m.Nack(op, seq, nack)] if nack is not None else []
        replies: list[Reply] = []
        if isinstance(msg, m.GetInfo):
            replies.append(self.info)
        if isinstance(msg, m.Flush):
            replies.append(FLUSH_TX)
        replies.append(m.Ack(op, seq) if nack is None else m.Nack(op, seq, nack))
        return replies

    def tick(self, now: float) -> bool:
        """Start of a loop turn; True when the laser watchdog just turned the laser off."""
        self._streamed_this_turn = 0
        if self.laser_on and not self.line_mode and now - self.last_host_s > self.watchdog_s:
            # Host went quiet: laser off for safety (docs/protocol.md, section 3).
            self.laser_on = False
            return True
        return False

    def next_exposure(self, now: float) -> Exposure | None:
        """The next spectrum due by `now`, or None. Acquisitions first, then the stream.

        The sensor exposes back to back at the period: a loop turn that ran late gets every
        streamed spectrum that came due meanwhile (up to MAX_CATCH_UP per turn), rather than
        a stretched period, so a 1 ms stream really is 1,000 spectra/s; further behind than
        that (the process was descheduled), the stream's time base skips ahead to now.
        """
        pending = self.pending
        if pending and pending[0][0] <= now:
            return pending.popleft()[1]
        period = self.stream_period_s
        if period is None or now < self.next_stream_s:
            return None
        if self._streamed_this_turn >= MAX_CATCH_UP:
            self.next_stream_s = now
            return None
        self._streamed_this_turn += 1
        self.next_stream_s += period
        return STREAMED

    def next_deadline(self, now: float, idle_s: float) -> float:
        """When something next comes due (at most `idle_s` from now, never before now)."""
        deadline = now + idle_s
        if self.stream_period_s is not None:
            deadline = min(deadline, self.next_stream_s)
        if self.pending:
            deadline = min(deadline, self.pending[0][0])
        return max(deadline, now)

    # -- commands ------------------------------------------------------------------------

    def _apply(self, msg: m.Message, now: float) -> int | None:
        """Carry out a command; a NackCode when refused."""
        info = self.info
        if isinstance(msg, m.SetIntegration):
            if not info.integration_min_ms <= msg.integration_ms <= info.integration_max_ms:
                return m.NackCode.OUT_OF_RANGE
            self.integration_ms = msg.integration_ms
        elif isinstance(msg, m.SetAverages):
            if not 1 <= msg.averages <= info.averages_max:
                return m.NackCode.OUT_OF_RANGE
            self.averages = msg.averages
        elif isinstance(msg, m.Acquire):
            if self.stream_period_s is not None:
                return m.NackCode.BUSY
            if not 1 <= msg.count <= MAX_ACQUIRE_COUNT:
                return m.NackCode.OUT_OF_RANGE
            due = self._queue_end(now)
            for _ in range(msg.count):
                due += self.exposure_s()
                self.pending.append((due, ACQUIRED))
        elif isinstance(msg, m.Dark):
            if self.stream_period_s is not None:
                return m.NackCode.BUSY
            self.pending.append((self._queue_end(now) + self.exposure_s(), DARK))
        elif isinstance(msg, m.StreamStart):
            if msg.period_ms < 1:
                return m.NackCode.OUT_OF_RANGE
            self.stream_period_s = max(msg.period_ms / 1000.0, self.exposure_s())
            self.next_stream_s = now + self.exposure_s()
        elif isinstance(msg, m.StreamStop | m.Abort | m.Flush):
            self.stream_period_s = None
            self.pending.clear()
        elif isinstance(msg, m.Laser):
            if not 0 <= msg.power_pct <= 100:
                return m.NackCode.OUT_OF_RANGE
            self.laser_on = msg.on
            self.watchdog_s = float(msg.watchdog_s or m.DEFAULT_WATCHDOG_S)
        elif isinstance(msg, m.Ping | m.GetInfo):
            pass
        else:  # a device->host message sent to the device
            return m.NackCode.UNKNOWN_TYPE
        return None

    def _queue_end(self, now: float) -> float:
        """When the last pending exposure is due (new ones queue behind it)."""
        return max(now, self.pending[-1][0]) if self.pending else now
