"""Sans-I/O host side of the protocol: the command/ACK/stream state, with no port in sight.

Like h11's Connection, the session only turns events into actions. Events in: decoded
messages and `FrameError`s (from the codec), `LinkDown`/`LinkUp` (from the transport) and the
passing of time (`tick`). Actions out: `Send` a message, and in a stream `Deliver` an item,
`Recover` after a replug, `Restart` a silent stream. A driver (client.py) does the I/O:

    session = HostSession(timeout_s=2.0, retries=2, port="/dev/ttyACM0")
    actions = session.command(m.SetIntegration(100), now)    # [Send(SetIntegration(100))]
    for a in actions:                                        # transmit, then say its seq
        seq = codec.next_tx_seq
        transport.send(codec.encode(a.msg))
        session.sent(seq, now)
    while not session.finished:
        event = transport.get(session.wait_s(now))           # None: time passed
        actions = session.receive(event, now) if event else session.tick(now)
        ...                                                  # transmit as above
    session.result()                                         # None, or raises DeviceError

One request at a time (a command waiting for its ACK, an INFO, a collection of spectra), as
the protocol needs. A command whose ACK does not come within `timeout_s` is sent again up
to `retries` times if repeating it is harmless (never ACQUIRE or DARK, which would expose
twice); a NACK, a lost link or the last timeout fail it with a DeviceError. Spectra that
arrive while a command waits are kept (a bounded backlog) for the next collection, or
counted as stale and dropped when the command says so (FLUSH at session start). The
session also keeps the device state the host relies on (INFO, integration, averages, laser)
and the counters in `stats`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from firmware_bridge import messages as m
from firmware_bridge.codec import FrameError
from firmware_bridge.errors import DeviceError
from firmware_bridge.link import LinkDown, LinkUp

#: Commands that can be repeated safely when their ACK was lost.
IDEMPOTENT: frozenset[type[Any]] = frozenset(
    {
        m.Ping,
        m.GetInfo,
        m.SetIntegration,
        m.SetAverages,
        m.StreamStart,
        m.StreamStop,
        m.Laser,
        m.Abort,
        m.Flush,
    }
)

#: Spectra kept while waiting for something else (e.g. arriving before an ACK).
MAX_BACKLOG = 64

_NEVER = float("inf")


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


# -- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Transmit `msg`, then call `session.sent(seq, now)` with its header seq (None if the
    write failed or the protocol has none). `quiet`: a failed write is not an error."""

    msg: m.Message
    quiet: bool = False


@dataclass(frozen=True)
class Deliver:
    """A stream item for the consumer."""

    item: m.SpectrumFrame | LinkDown


@dataclass(frozen=True)
class Recover:
    """The link is back: redo handshake, settings and stream, then deliver `link_up`
    (and call `stream_recovered`) if the device answered."""

    link_up: LinkUp


@dataclass(frozen=True)
class Restart:
    """The stream went silent for longer than it should: start it again."""


Action = Send | Deliver | Recover | Restart
Event = m.Message | FrameError | LinkDown | LinkUp

# -- requests (one at a time) --------------------------------------------------------------


@dataclass
class _Command:
    msg: m.Message
    op: m.Op
    discard: bool  # spectra seen meanwhile are stale: count and drop them
    attempts_left: int
    seq: int | None = None
    deadline: float = _NEVER  # armed by sent()


@dataclass
class _Info:
    strict: bool  # binary device: count timeouts/retries, drop spectra, fail on LinkDown
    attempts_left: int
    deadline: float = _NEVER


@dataclass
class _Collect:
    n: int
    dark: bool
    deadline: float
    frames: list[m.SpectrumFrame] = field(default_factory=list)


@dataclass
class _Stream:
    keepalive: bool
    idle_limit_s: float
    last_ping: float
    last_frame: float


class HostSession:
    """See the module docstring. Not thread-safe: one driver thread calls it."""

    def __init__(
        self, *, timeout_s: float = 2.0, retries: int = 2, keepalive_s: float = 1.0, port: str = "device"
    ) -> None:
        self.timeout_s = timeout_s
        self.retries = retries
        self.keepalive_s = keepalive_s
        self.port = port  # only for messages
        self.stats = ClientStats()
        self.info: m.DeviceInfo | None = None
        #: Settings the device acknowledged (re-applied after a reconnect).
        self.integration_ms: int | None = None
        self.averages: int | None = None
        self.laser_on = False
        self.down = False
        self.backlog: deque[m.SpectrumFrame] = deque(maxlen=MAX_BACKLOG)
        self._last_seq: int | None = None
        self._request: _Command | _Info | _Collect | None = None
        self._outcome: Any = None
        self._stream: _Stream | None = None

    # -- session start -------------------------------------------------------------------

    def reset(self) -> None:
        """Start of a handshake: whatever was kept belongs to the old session."""
        self.backlog.clear()
        self._request = None
        self._outcome = None

    def handshake_done(self, info: m.DeviceInfo) -> None:
        self.info = info
        self._last_seq = None
        self.laser_on = False  # FLUSH does not say; assume the safe state, re-arm on use

    # -- requests ------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """No request waiting; `result()` has its outcome."""
        return self._request is None

    def result(self) -> Any:
        """The finished request's value (None for a command, INFO, the collected spectra);
        raises its DeviceError."""
        outcome, self._outcome = self._outcome, None
        if isinstance(outcome, DeviceError):
            raise outcome
        return outcome

    def cancel(self) -> None:
        """The driver gave up on the request (its write failed, or the device turned out
        to speak the text protocol, which has no ACKs)."""
        self._request = None
        self._outcome = None

    def command(self, msg: m.Message, now: float, *, discard: bool = False) -> list[Action]:
        """Send `msg` and wait for its ACK (see the module docstring)."""
        self._begin()
        if self.down:
            return self._fail(f"{self.port} is disconnected")
        attempts = self.retries + 1 if type(msg) in IDEMPOTENT else 1
        self._request = _Command(msg, m.op_of(msg), discard, attempts - 1)
        return [Send(msg)]

    def request_info(self, now: float, *, strict: bool = True) -> list[Action]:
        """GET_INFO until INFO arrives. `strict=False` for a text device: a failed write is
        quiet, and INFO already seen (its boot header) answers at once."""
        self._begin()
        if not strict and self.info is not None:
            self._outcome = self.info
            return []
        self._request = _Info(strict, self.retries)
        return [Send(m.GetInfo(), quiet=not strict)]

    def collect(self, n: int, *, dark: bool, timeout_s: float, now: float) -> list[Action]:
        """Gather `n` spectra (dark or not) from the backlog, then from what arrives; on
        timeout the result is what came (a shorter list), counted as a timeout."""
        self._begin()
        request = _Collect(n, dark, now + timeout_s)
        while self.backlog and len(request.frames) < n:
            frame = self.backlog.popleft()
            if frame.is_dark == dark:  # a frame of the other kind is not wanted any more
                request.frames.append(frame)
        if len(request.frames) >= n:
            self._outcome = request.frames
        else:
            self._request = request
        return []

    def sent(self, seq: int | None, now: float) -> None:
        """The driver transmitted the last `Send` with header `seq`: start its timeout."""
        request = self._request
        if isinstance(request, _Command):
            request.seq = seq
            request.deadline = now + self.timeout_s
        elif isinstance(request, _Info):
            request.deadline = now + self.timeout_s

    def wait_s(self, now: float) -> float:
        """How long the driver may block for the next event before calling `tick`."""
        request = self._request
        if request is None or request.deadline == _NEVER:
            return 0.0
        return max(0.0, request.deadline - now)

    # -- assumed state (text devices do not acknowledge) ---------------------------------

    def assume_applied(self, msg: m.Message) -> None:
        """Record a setting as if the device had acknowledged it."""
        if isinstance(msg, m.SetIntegration):
            self.integration_ms = msg.integration_ms
        elif isinstance(msg, m.SetAverages):
            self.averages = msg.averages
        elif isinstance(msg, m.Laser):
            self.laser_on = msg.on

    def exposure_s(self) -> float:
        return (self.integration_ms or 100) * (self.averages or 1) / 1000.0

    def exposure_timeout_s(self, n: int) -> float:
        """How long `n` exposures may take to arrive."""
        return self.timeout_s + n * self.exposure_s() * 1.5

    # -- streaming -----------------------------------------------------------------------

    def stream_begin(self, period_ms: int, now: float, *, keepalive: bool) -> None:
        """The device streams: deliver its spectra, ping for the laser watchdog when
        `keepalive`, and ask for a restart when it goes quiet."""
        idle = max(3 * period_ms / 1000.0, 3 * self.exposure_s(), self.timeout_s)
        self._stream = _Stream(keepalive, idle, now, now)

    def stream_recovered(self, now: float) -> None:
        if self._stream is not None:
            self._stream.last_frame = now

    def stream_end(self) -> None:
        self._stream = None

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    # -- events in -----------------------------------------------------------------------

    def receive(self, event: Event, now: float) -> list[Action]:
        """One event from the link; the actions it calls for."""
        if isinstance(event, FrameError):
            self.stats.corrupt_frames += 1
            return []
        if isinstance(event, LinkDown):
            self.down = True
            self.stats.link_downs += 1
        elif isinstance(event, LinkUp):
            self.down = False
        elif isinstance(event, m.SpectrumFrame):
            self._track(event)
        request = self._request
        if isinstance(request, _Command):
            return self._on_command_event(request, event)
        if isinstance(request, _Info):
            return self._on_info_event(request, event)
        if isinstance(request, _Collect):
            return self._on_collect_event(request, event)
        if self._stream is not None:
            return self._on_stream_event(self._stream, event, now)
        if isinstance(event, m.SpectrumFrame):
            self.backlog.append(event)
        return []

    def tick(self, now: float) -> list[Action]:
        """Time passed: timeouts, retries, keepalive and the silent-stream check."""
        request = self._request
        if request is not None:
            if now < request.deadline:
                return []
            return self._on_timeout(request)
        stream = self._stream
        if stream is None or self.down:
            return []
        actions: list[Action] = []
        if stream.keepalive and now - stream.last_ping > self.keepalive_s:
            stream.last_ping = now
            actions.append(Send(m.Ping(), quiet=True))  # feeds the laser watchdog; ACK ignored
        if now - stream.last_frame > stream.idle_limit_s:
            # Silent device (stalled, or rebooted without us noticing): kick it.
            self.stats.timeouts += 1
            stream.last_frame = now
            actions.append(Restart())
        return actions

    # -- internals -----------------------------------------------------------------------

    def _begin(self) -> None:
        self._request = None
        self._outcome = None

    def _fail(self, text: str) -> list[Action]:
        self._request = None
        self._outcome = DeviceError(text)
        return []

    def _done(self, value: Any = None) -> list[Action]:
        self._request = None
        self._outcome = value
        return []

    def _track(self, frame: m.SpectrumFrame) -> None:
        self.stats.spectra += 1
        if self._last_seq is not None and frame.seq > self._last_seq:
            self.stats.dropped_seqs += frame.seq - self._last_seq - 1
        self._last_seq = frame.seq

    def _on_command_event(self, request: _Command, event: Event) -> list[Action]:
        seq = request.seq
        if isinstance(event, m.Ack) and seq is not None and event.acked_seq == seq:
            self.assume_applied(request.msg)
            return self._done()
        if isinstance(event, m.Nack) and seq is not None and event.acked_seq == seq:
            self.stats.nacks += 1
            return self._fail(f"device refused {request.op.name}: {_nack_name(event.code)}")
        if isinstance(event, LinkDown):
            return self._fail(f"{self.port} disconnected ({event.reason})")
        if isinstance(event, m.SpectrumFrame):
            if request.discard:
                self.stats.stale_discarded += 1
            else:
                self.backlog.append(event)
        elif isinstance(event, m.DeviceInfo):
            self.info = event
        return []

    def _on_info_event(self, request: _Info, event: Event) -> list[Action]:
        if isinstance(event, m.DeviceInfo):
            return self._done(event)
        if request.strict:
            if isinstance(event, LinkDown):
                return self._fail(f"{self.port} disconnected ({event.reason})")
            if isinstance(event, m.SpectrumFrame):
                self.stats.stale_discarded += 1
        return []

    def _on_collect_event(self, request: _Collect, event: Event) -> list[Action]:
        if isinstance(event, m.SpectrumFrame) and event.is_dark == request.dark:
            request.frames.append(event)
            if len(request.frames) >= request.n:
                return self._done(request.frames)
        elif isinstance(event, LinkDown):
            return self._fail(f"{self.port} disconnected ({event.reason})")
        return []

    def _on_stream_event(self, stream: _Stream, event: Event, now: float) -> list[Action]:
        if isinstance(event, m.SpectrumFrame):
            if event.is_dark:
                return []
            stream.last_frame = now
            return [Deliver(event)]
        if isinstance(event, LinkDown):
            return [Deliver(event)]
        if isinstance(event, LinkUp):
            self.stats.reconnects += 1
            return [Recover(event)]
        return []  # ACKs of keepalive pings and the like

    def _on_timeout(self, request: _Command | _Info | _Collect) -> list[Action]:
        if isinstance(request, _Collect):
            self.stats.timeouts += 1
            return self._done(request.frames)
        if isinstance(request, _Info):
            if request.strict:
                self.stats.timeouts += 1
            if request.attempts_left <= 0:
                if request.strict:
                    return self._fail(f"no INFO from {self.port} within {self.timeout_s:g} s")
                return self._fail(f"no #INFO line from {self.port} within {self.timeout_s:g} s")
            request.attempts_left -= 1
            request.deadline = _NEVER
            if request.strict:
                self.stats.retries += 1
            return [Send(m.GetInfo(), quiet=not request.strict)]
        self.stats.timeouts += 1
        if request.attempts_left <= 0:
            return self._fail(f"no answer to {request.op.name} within {self.timeout_s:g} s")
        if self.down:
            return self._fail(f"{self.port} is disconnected")
        self.stats.retries += 1
        request.attempts_left -= 1
        request.seq = None  # a late ACK of the first attempt does not match the retry
        request.deadline = _NEVER
        return [Send(request.msg)]


def _nack_name(code: int) -> str:
    try:
        return m.NackCode(code).name
    except ValueError:
        return f"code {code}"
