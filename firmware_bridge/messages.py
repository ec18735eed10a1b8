"""Protocol messages as frozen dataclasses, and the one registry table opcode -> class -> layout.

Units are in the field names (integration_ms, laser_nm, period_ms). Every payload is
little-endian. Host -> device opcodes are 0x01-0x7F, device -> host 0x80-0xFF. The same
module serves the host (client) and the device (emulator): both sides encode and decode
every message.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import IntEnum, IntFlag
from typing import Any

import numpy as np
from numpy.typing import NDArray


class Op(IntEnum):
    """Message types (the header's msg_type byte)."""

    PING = 0x01
    GET_INFO = 0x02
    SET_INTEGRATION = 0x03
    SET_AVERAGES = 0x04
    ACQUIRE = 0x05
    STREAM_START = 0x06
    STREAM_STOP = 0x07
    DARK = 0x08
    LASER = 0x09
    ABORT = 0x0A
    FLUSH = 0x0B
    ACK = 0x80
    NACK = 0x81
    INFO = 0x82
    SPECTRUM = 0x83


class NackCode(IntEnum):
    """Why the device refused a command (NACK payload)."""

    UNKNOWN_TYPE = 1  # msg_type not known to this firmware
    BAD_LENGTH = 2  # payload length wrong for msg_type
    OUT_OF_RANGE = 3  # a value is outside the limits INFO reports
    BUSY = 4  # cannot do it now (e.g. ACQUIRE while streaming)
    BAD_VERSION = 5  # header version not supported
    INTERLOCK = 6  # laser interlock open / key switch off
    HW_FAULT = 7  # detector or laser driver fault
    NOT_SUPPORTED = 8  # known command, not implemented by this device


class SpectrumFlag(IntFlag):
    """SPECTRUM flags (u16 bit field)."""

    NONE = 0
    DARK_FRAME = 0x0001  # laser was off: this is a dark frame (reply to DARK)
    DARK_SUBTRACTED = 0x0002  # the device already subtracted its stored dark
    SATURATED = 0x0004  # at least one pixel hit 65535
    LASER_ON = 0x0008  # laser was on during the exposure
    STREAMED = 0x0010  # produced by STREAM_START (not by ACQUIRE/DARK)


#: Default laser watchdog: the device turns the laser off when it hears nothing from the
#: host for this long. LASER.watchdog_s = 0 selects this default.
DEFAULT_WATCHDOG_S = 5


@dataclass(frozen=True)
class Ping:
    """Host asks for an ACK; also feeds the laser watchdog."""


@dataclass(frozen=True)
class GetInfo:
    """Host asks for INFO."""


@dataclass(frozen=True)
class SetIntegration:
    integration_ms: int


@dataclass(frozen=True)
class SetAverages:
    averages: int


@dataclass(frozen=True)
class Acquire:
    """Acquire `count` spectra now; each comes back as a SPECTRUM, then one ACK."""

    count: int = 1


@dataclass(frozen=True)
class StreamStart:
    period_ms: int


@dataclass(frozen=True)
class StreamStop:
    pass


@dataclass(frozen=True)
class Dark:
    """Acquire one dark frame (laser off); returned as SPECTRUM with DARK_FRAME."""


@dataclass(frozen=True)
class Laser:
    on: bool
    power_pct: int = 100
    watchdog_s: int = 0  # 0: DEFAULT_WATCHDOG_S


@dataclass(frozen=True)
class Abort:
    """Stop streaming and any acquisition in progress."""


@dataclass(frozen=True)
class Flush:
    """Abort, then drop everything queued for transmission; ACK'd after the queue is empty."""


@dataclass(frozen=True)
class Ack:
    acked_type: int  # the Op being acknowledged
    acked_seq: int  # header seq of the command frame


@dataclass(frozen=True)
class Nack:
    acked_type: int
    acked_seq: int
    code: int  # NackCode


@dataclass(frozen=True)
class DeviceInfo:
    """What the device says about itself (INFO)."""

    model: str
    serial_number: str
    firmware_version: str
    pixel_count: int
    #: pixel -> wavelength (nm) polynomial, c0 first: nm = c0 + c1*p + c2*p^2 + ...
    calibration_nm: tuple[float, ...]
    laser_nm: float
    integration_min_ms: int
    integration_max_ms: int
    averages_max: int = 1000

    def wavelengths_nm(self) -> NDArray[np.float64]:
        p = np.arange(self.pixel_count, dtype=np.float64)
        coeffs = np.asarray(self.calibration_nm, dtype=np.float64)[::-1]
        return np.asarray(np.polyval(coeffs, p), dtype=np.float64)

    def shifts_cm1(self) -> NDArray[np.float64]:
        """Raman shift of every pixel, from the reported calibration and laser line."""
        return 1e7 / self.laser_nm - 1e7 / self.wavelengths_nm()


@dataclass(frozen=True, eq=False)
class SpectrumFrame:
    """One spectrum (SPECTRUM). `counts` is uint16, one value per pixel."""

    seq: int  # spectrum counter of the device (u32), gaps mean lost spectra
    timestamp_ms: int  # device clock at end of exposure (u32 ms, wraps)
    integration_ms: int
    averages: int
    flags: int  # SpectrumFlag
    counts: NDArray[np.uint16] = field(repr=False)

    @property
    def is_dark(self) -> bool:
        return bool(self.flags & SpectrumFlag.DARK_FRAME)

    @property
    def saturated(self) -> bool:
        return bool(self.flags & SpectrumFlag.SATURATED)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpectrumFrame):
            return NotImplemented
        return (self.seq, self.timestamp_ms, self.integration_ms, self.averages, self.flags) == (
            other.seq,
            other.timestamp_ms,
            other.integration_ms,
            other.averages,
            other.flags,
        ) and np.array_equal(self.counts, other.counts)

    __hash__ = None  # type: ignore[assignment]


Message = (
    Ping
    | GetInfo
    | SetIntegration
    | SetAverages
    | Acquire
    | StreamStart
    | StreamStop
    | Dark
    | Laser
    | Abort
    | Flush
    | Ack
    | Nack
    | DeviceInfo
    | SpectrumFrame
)

# ---------------------------------------------------------------------------------------
# The registry: ONE table from opcode to message class, payload layout, and the mapping
# between the dataclass and the struct values. Encoding and decoding read nothing else.
# Fixed-size payloads are a struct per opcode; INFO and SPECTRUM have a fixed head followed
# by variable data, so they register whole-payload functions instead (see below).
# ---------------------------------------------------------------------------------------

# SPECTRUM fixed part, then pixel_count x uint16 counts:
#   I seq, I timestamp_ms, I integration_ms, H averages, H flags, H pixel_count
SPECTRUM_HEAD = struct.Struct("<IIIHHH")

# INFO fixed part, then n_coeffs x float64 (c0 first), then three length-prefixed UTF-8
# strings (B length + bytes): model, serial_number, firmware_version.
#   H pixel_count, d laser_nm, I integration_min_ms, I integration_max_ms,
#   H averages_max, B n_coeffs
INFO_HEAD = struct.Struct("<HdIIHB")

MAX_STRING = 255


class PayloadError(ValueError):
    """A payload does not match its layout (the codec turns this into a FrameError)."""


@dataclass(frozen=True)
class Entry:
    """How one opcode travels: its class, its payload layout, fields <-> struct values.

    For a fixed layout `to_values`/`from_values` map the dataclass to the struct's values
    and back (default: the dataclass fields in declaration order). A variable-length
    payload (INFO, SPECTRUM) sets `encode`/`decode` for the whole payload and `layout` is
    only its fixed head, for documentation.
    """

    op: Op
    cls: type[Any]
    layout: struct.Struct
    to_values: Callable[[Any], tuple[Any, ...]] | None = None
    from_values: Callable[[tuple[Any, ...]], Any] | None = None
    encode: Callable[[Any], bytes] | None = None
    decode: Callable[[bytes], Any] | None = None

    @property
    def variable(self) -> bool:
        return self.encode is not None


def _fields_in_order(cls: type[Any]) -> Callable[[Any], tuple[Any, ...]]:
    names = tuple(f.name for f in fields(cls))
    return lambda msg: tuple(getattr(msg, n) for n in names)


def _encode_spectrum(msg: SpectrumFrame) -> bytes:
    counts = np.asarray(msg.counts)
    if counts.ndim != 1:
        raise ValueError("counts must be one-dimensional")
    head = SPECTRUM_HEAD.pack(
        msg.seq & 0xFFFFFFFF,
        msg.timestamp_ms & 0xFFFFFFFF,
        msg.integration_ms,
        msg.averages,
        int(msg.flags),
        counts.size,
    )
    return head + counts.astype("<u2", copy=False).tobytes()


def _encode_info(msg: DeviceInfo) -> bytes:
    strings = b""
    for text in (msg.model, msg.serial_number, msg.firmware_version):
        raw = text.encode("utf-8")
        if len(raw) > MAX_STRING:
            raise ValueError(f"INFO string too long ({len(raw)} bytes): {text[:20]!r}...")
        strings += bytes([len(raw)]) + raw
    head = INFO_HEAD.pack(
        msg.pixel_count,
        msg.laser_nm,
        msg.integration_min_ms,
        msg.integration_max_ms,
        msg.averages_max,
        len(msg.calibration_nm),
    )
    coeffs = struct.pack(f"<{len(msg.calibration_nm)}d", *msg.calibration_nm)
    return head + coeffs + strings


def _decode_spectrum(payload: bytes) -> SpectrumFrame:
    if len(payload) < SPECTRUM_HEAD.size:
        raise PayloadError("SPECTRUM payload shorter than its header")
    seq, ts, integ, avg, flags, n = SPECTRUM_HEAD.unpack_from(payload)
    body = payload[SPECTRUM_HEAD.size :]
    if len(body) != 2 * n:
        raise PayloadError(f"SPECTRUM says {n} pixels but carries {len(body)} bytes of counts")
    counts = np.frombuffer(body, dtype="<u2").astype(np.uint16)
    return SpectrumFrame(seq, ts, integ, avg, flags, counts)


def _decode_info(payload: bytes) -> DeviceInfo:
    if len(payload) < INFO_HEAD.size:
        raise PayloadError("INFO payload shorter than its header")
    pixels, laser, imin, imax, avg_max, n_coeffs = INFO_HEAD.unpack_from(payload)
    pos = INFO_HEAD.size
    end = pos + 8 * n_coeffs
    if len(payload) < end:
        raise PayloadError("INFO payload truncated in calibration coefficients")
    coeffs = struct.unpack_from(f"<{n_coeffs}d", payload, pos)
    pos = end
    strings: list[str] = []
    for _ in range(3):
        if pos >= len(payload):
            raise PayloadError("INFO payload truncated in strings")
        length = payload[pos]
        raw = payload[pos + 1 : pos + 1 + length]
        if len(raw) != length:
            raise PayloadError("INFO payload truncated in strings")
        strings.append(raw.decode("utf-8", errors="replace"))
        pos += 1 + length
    if pos != len(payload):
        raise PayloadError(f"INFO payload has {len(payload) - pos} trailing bytes")
    return DeviceInfo(
        model=strings[0],
        serial_number=strings[1],
        firmware_version=strings[2],
        pixel_count=pixels,
        calibration_nm=tuple(float(c) for c in coeffs),
        laser_nm=float(laser),
        integration_min_ms=imin,
        integration_max_ms=imax,
        averages_max=avg_max,
    )


def _fixed(
    op: Op,
    cls: type[Any],
    fmt: str,
    to_values: Callable[[Any], tuple[Any, ...]] | None = None,
    from_values: Callable[[tuple[Any, ...]], Any] | None = None,
) -> Entry:
    """A fixed-layout entry; by default the struct values are the dataclass fields in order."""
    return Entry(
        op,
        cls,
        struct.Struct(fmt),
        to_values=to_values or _fields_in_order(cls),
        from_values=from_values or (lambda v: cls(*v)),
    )


#: Every opcode, once. The comments name the struct values in order.
REGISTRY: tuple[Entry, ...] = (
    _fixed(Op.PING, Ping, "<"),
    _fixed(Op.GET_INFO, GetInfo, "<"),
    _fixed(Op.SET_INTEGRATION, SetIntegration, "<I"),  # I integration_ms
    _fixed(Op.SET_AVERAGES, SetAverages, "<H"),  # H averages (>= 1)
    _fixed(Op.ACQUIRE, Acquire, "<H"),  # H count of spectra (>= 1)
    _fixed(Op.STREAM_START, StreamStart, "<I"),  # I period_ms (>= integration_ms * averages)
    _fixed(Op.STREAM_STOP, StreamStop, "<"),
    _fixed(Op.DARK, Dark, "<"),
    _fixed(
        Op.LASER,
        Laser,
        "<BBH",  # B on (0/1), B power_pct (0-100), H watchdog_s (0 = default)
        to_values=lambda msg: (int(msg.on), msg.power_pct, msg.watchdog_s),
        from_values=lambda v: Laser(bool(v[0]), v[1], v[2]),
    ),
    _fixed(Op.ABORT, Abort, "<"),
    _fixed(Op.FLUSH, Flush, "<"),
    _fixed(
        Op.ACK,
        Ack,
        "<BH",  # B acked_type, H acked_seq (the header seq is 16 bits)
        to_values=lambda msg: (msg.acked_type, msg.acked_seq & 0xFFFF),
    ),
    _fixed(
        Op.NACK,
        Nack,
        "<BHB",  # B acked_type, H acked_seq, B code (NackCode)
        to_values=lambda msg: (msg.acked_type, msg.acked_seq & 0xFFFF, msg.code),
    ),
    Entry(Op.INFO, DeviceInfo, INFO_HEAD, encode=_encode_info, decode=_decode_info),
    Entry(Op.SPECTRUM, SpectrumFrame, SPECTRUM_HEAD, encode=_encode_spectrum, decode=_decode_spectrum),
)

#: Lookups derived from REGISTRY (never edited by hand).
BY_OP: dict[int, Entry] = {e.op: e for e in REGISTRY}
BY_CLASS: dict[type[Any], Entry] = {e.cls: e for e in REGISTRY}

#: Fixed payload layouts, Op -> struct format ("" = empty payload), derived from REGISTRY.
FIXED_LAYOUTS: dict[Op, str] = {e.op: e.layout.format if e.layout.size else "" for e in REGISTRY if not e.variable}

#: Empty payloads decode to one shared instance per opcode (frozen, so sharing is safe).
_EMPTY_INSTANCE: dict[int, Any] = {e.op: e.cls() for e in REGISTRY if not e.variable and e.layout.size == 0}


def op_of(msg: Message) -> Op:
    """The opcode of a message (TypeError for anything that is not a protocol message)."""
    entry = BY_CLASS.get(type(msg))
    if entry is None:
        raise TypeError(f"not a protocol message: {type(msg).__name__}")
    return entry.op


def encode_payload(msg: Message) -> tuple[Op, bytes]:
    """Message -> (opcode, payload bytes).

    Raises ValueError when a value does not fit its wire type (struct.error is turned into
    ValueError here, so callers see one family), TypeError for a non-message.
    """
    entry = BY_CLASS.get(type(msg))
    if entry is None:
        raise TypeError(f"not a protocol message: {type(msg).__name__}")
    try:
        if entry.encode is not None:
            return entry.op, entry.encode(msg)
        assert entry.to_values is not None
        return entry.op, entry.layout.pack(*entry.to_values(msg))
    except struct.error as err:
        raise ValueError(f"{entry.op.name}: {err}") from None


def decode_payload(msg_type: int, payload: bytes) -> Message:
    """(opcode, payload) -> Message. Raises PayloadError when they do not fit together."""
    entry = BY_OP.get(msg_type)
    if entry is None:
        raise PayloadError(f"unknown message type 0x{msg_type:02x}")
    if entry.decode is not None:
        return entry.decode(payload)  # type: ignore[no-any-return]
    size = entry.layout.size
    if len(payload) != size:
        raise PayloadError(f"{entry.op.name} payload is {len(payload)} bytes, expected {size}")
    if size == 0:
        return _EMPTY_INSTANCE[msg_type]  # type: ignore[no-any-return]
    assert entry.from_values is not None
    return entry.from_values(entry.layout.unpack(payload))  # type: ignore[no-any-return]
