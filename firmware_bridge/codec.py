"""Sans-I/O protocol codec, shared by the host client and the device emulator.

    codec = Codec(mode="auto")          # "binary", "line" or "auto" (detect from the bytes)
    wire_bytes = codec.encode(GetInfo())
    codec.feed(received_bytes)
    while (event := codec.next_event()) is not None:
        ...                             # a Message dataclass, or a FrameError

The codec never raises on received bytes: anything it cannot accept becomes a `FrameError`
event (counted in `codec.stats`), and it resynchronises at the next delimiter. Its memory is
bounded: at most one maximum-size frame of unparsed bytes plus `MAX_PENDING_EVENTS` events.
No serial ports, sockets or threads here; `transport.py` does the I/O.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

from firmware_bridge import lineproto, wire
from firmware_bridge.errors import UsageError
from firmware_bridge.messages import (
    DeviceInfo,
    Message,
    PayloadError,
    SpectrumFrame,
    decode_payload,
    encode_payload,
)

Mode = Literal["auto", "binary", "line"]

#: Decoded events waiting for `next_event`; beyond this the oldest are dropped and counted,
#: so a caller that feeds without reading cannot make us grow without bound.
MAX_PENDING_EVENTS = 256

#: Bytes buffered while looking for a delimiter, per mode.
_BUFFER_LIMIT = {
    "binary": wire.MAX_ENCODED_FRAME,
    "line": lineproto.MAX_LINE,
    "auto": max(wire.MAX_ENCODED_FRAME, lineproto.MAX_LINE),
}


@dataclass(frozen=True)
class FrameError:
    """Received bytes that were dropped. `reason` is a short key, `detail` is for humans."""

    reason: str  # cobs, short, crc, version, length, oversize, payload, bad_line, overflow
    detail: str = ""
    discarded: int = 0  # bytes thrown away


@dataclass
class CodecStats:
    frames: int = 0  # messages decoded
    errors: Counter[str] = field(default_factory=Counter)  # FrameError reasons
    lost_frames: int = 0  # gaps in the peer's header seq (binary mode)
    bytes_discarded: int = 0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


Event = Message | FrameError


class Codec:
    """Streaming encoder/decoder for one direction pair of a link (see module docstring)."""

    def __init__(self, mode: Mode = "auto") -> None:
        if mode not in _BUFFER_LIMIT:
            raise UsageError(f"codec mode must be auto, binary or line, not {mode!r}")
        self._mode: Mode = mode
        self._buf = bytearray()
        self._events: deque[Event] = deque()
        # Per event: the time spent decoding its own frame/line (COBS, CRC, parse), so a
        # latency report charges each spectrum its own cost, not the whole read's.
        self._costs_ms: deque[float] = deque()
        self._unit_t0 = time.perf_counter()
        #: Decode time (ms) of the event `next_event` returned last.
        self.last_decode_ms = 0.0
        self._skipping = False  # inside an oversize frame: drop bytes until a delimiter
        self._tx_seq = 0
        self._rx_seq: int | None = None
        self._line_seq = 0
        self._last_info: DeviceInfo | None = None
        self.stats = CodecStats()

    @property
    def mode(self) -> Mode:
        """The mode in use; "auto" until the first valid frame or line decides it."""
        return self._mode

    @property
    def next_tx_seq(self) -> int:
        """Header seq the next `encode` will use (to match the peer's ACK to it)."""
        return self._tx_seq

    @property
    def last_rx_seq(self) -> int | None:
        """Header seq of the last frame decoded (a device echoes it in ACK/NACK)."""
        return self._rx_seq

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for a delimiter (never above the mode's frame limit)."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget partial input and pending events (after a reconnect); keeps the mode."""
        self._buf.clear()
        self._events.clear()
        self._costs_ms.clear()
        self._skipping = False
        self._rx_seq = None

    # -- sending ---------------------------------------------------------------------

    def encode(self, msg: Message) -> bytes:
        """Message -> bytes for the wire, in binary or (when the mode is "line") text form."""
        if self._mode == "line":
            try:
                return lineproto.format_line(msg)
            except ValueError as err:
                raise UsageError(str(err)) from None
        try:
            op, payload = encode_payload(msg)
        except (ValueError, OverflowError, TypeError) as err:
            # A field that does not fit its wire type (a negative count, a 70 s integration in
            # a u16...) is the caller's mistake: say which message, in the bridge's own family.
            # (encode_payload already turns struct.error into ValueError.)
            raise UsageError(f"cannot encode {type(msg).__name__}: {err}") from None
        if len(payload) > wire.MAX_PAYLOAD:
            raise UsageError(f"{op.name} payload of {len(payload)} bytes exceeds MAX_PAYLOAD")
        frame = wire.pack_frame(op, self._tx_seq, payload)
        self._tx_seq = (self._tx_seq + 1) & 0xFFFF
        return frame

    # -- receiving -------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Add received bytes; decoded events become available from `next_event`."""
        self._buf += data
        while self._step():
            pass
        limit = _BUFFER_LIMIT[self._mode]
        if len(self._buf) > limit:
            self._unit_t0 = time.perf_counter()
            # No delimiter within the largest legal frame: whatever this is, it is not a
            # frame we could accept. Drop it and ignore bytes until the next delimiter, which
            # is where the next real frame starts.
            self._error("oversize", f"no delimiter within {limit} bytes", len(self._buf))
            self._buf.clear()
            self._skipping = True

    def next_event(self) -> Event | None:
        """The next decoded message or FrameError; None means "feed me more bytes"."""
        if not self._events:
            return None
        self.last_decode_ms = self._costs_ms.popleft()
        return self._events.popleft()

    def _push(self, event: Event) -> None:
        if len(self._events) >= MAX_PENDING_EVENTS:
            self._events.popleft()
            self._costs_ms.popleft()
            self.stats.errors["overflow"] += 1
        self._events.append(event)
        self._costs_ms.append((time.perf_counter() - self._unit_t0) * 1e3)

    def _error(self, reason: str, detail: str, discarded: int) -> None:
        self.stats.errors[reason] += 1
        self.stats.bytes_discarded += discarded
        self._push(FrameError(reason, detail, discarded))

    def _step(self) -> bool:
        """Consume one delimited unit from the buffer; False when none is complete."""
        self._unit_t0 = time.perf_counter()
        buf = self._buf
        zero = buf.find(wire.DELIMITER) if self._mode != "line" else -1
        newline = buf.find(b"\n") if self._mode != "binary" else -1
        if self._mode == "line" and newline < 0:
            # A NUL has no place in text; treat it as a line end so junk cannot pile up.
            newline = buf.find(wire.DELIMITER)
        use_line = newline >= 0 and (zero < 0 or newline < zero)
        if use_line and self._mode == "auto" and not lineproto.is_printable(bytes(buf[:newline])):
            # A newline inside a binary frame body, not a text line.
            use_line = False
        if use_line:
            unit = bytes(buf[:newline])
            del buf[: newline + 1]
            if self._skipping:
                self._skipping = False
                return True
            self._decode_line(unit)
            return True
        if zero >= 0:
            unit = bytes(buf[:zero])
            del buf[: zero + 1]
            if self._skipping:
                self._skipping = False
                return True
            if unit:  # empty frames (0x00 0x00) are idle fill, allowed to force a resync
                self._decode_frame(unit)
            return True
        return False

    def _decode_frame(self, unit: bytes) -> None:
        body = wire.cobs_decode(unit)
        if body is None:
            self._error("cobs", "invalid COBS encoding", len(unit) + 1)
            return
        if len(body) < wire.HEADER_SIZE + wire.CRC_SIZE:
            self._error("short", f"{len(body)}-byte frame lacks header+CRC", len(unit) + 1)
            return
        (crc,) = wire.CRC.unpack_from(body, len(body) - wire.CRC_SIZE)
        if wire.crc16_ccitt_false(body[: -wire.CRC_SIZE]) != crc:
            self._error("crc", "CRC mismatch", len(unit) + 1)
            return
        version, msg_type, seq, length = wire.HEADER.unpack_from(body)
        if version != wire.PROTOCOL_VERSION:
            self._error("version", f"protocol version {version} not supported", len(unit) + 1)
            return
        payload = body[wire.HEADER_SIZE : -wire.CRC_SIZE]
        if length != len(payload):
            self._error("length", f"header says {length} bytes, got {len(payload)}", len(unit) + 1)
            return
        if length > wire.MAX_PAYLOAD:
            self._error("oversize", f"payload of {length} bytes", len(unit) + 1)
            return
        try:
            msg = decode_payload(msg_type, payload)
        except PayloadError as err:
            self._error("payload", str(err), len(unit) + 1)
            return
        if self._mode == "auto":
            self._mode = "binary"
        self._track_seq(seq)
        self.stats.frames += 1
        self._push(msg)

    def _track_seq(self, seq: int) -> None:
        if self._rx_seq is not None:
            gap = (seq - self._rx_seq - 1) & 0xFFFF
            # A huge "gap" is a peer restart (its seq began again), not 60k lost frames.
            if 0 < gap < 1024:
                self.stats.lost_frames += gap
        self._rx_seq = seq

    def _decode_line(self, unit: bytes) -> None:
        if not lineproto.is_printable(unit):
            self._error("bad_line", "non-printable bytes in a text line", len(unit) + 1)
            return
        try:
            msg = lineproto.parse_line(unit, self._line_seq, self._last_info)
        except (lineproto.LineError, UnicodeDecodeError, ValueError, OverflowError) as err:
            # Any parse failure of device text is the device's fault: count it and move on,
            # never let it escape into the reader thread.
            self._error("bad_line", str(err)[:200], len(unit) + 1)
            return
        if msg is None:
            return
        if self._mode == "auto":
            self._mode = "line"
        if isinstance(msg, DeviceInfo):
            self._last_info = msg
        if isinstance(msg, SpectrumFrame):
            self._line_seq = (self._line_seq + 1) & 0xFFFFFFFF
        self.stats.frames += 1
        self._push(msg)
