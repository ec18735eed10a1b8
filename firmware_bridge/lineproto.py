"""The text line protocol of DIY (Arduino-class) spectrometers, mapped onto our messages.

Device -> host, one ASCII line each, ``\\n`` terminated (``\\r\\n`` accepted):

    #INFO laser_nm=785 pixels=1024 cal=c0,c1,c2,c3 serial=SN1 model=DIY fw=1.0
    812,815,830,...            one spectrum: exactly `pixels` comma-separated counts
    #OK / #ERR <code>          optional command replies (ACK / NACK)
    # anything else            a comment, ignored

Host -> device: ``INFO``, ``INT <ms>``, ``AVG <n>``, ``START <period_ms>``, ``STOP``,
``PING``. A device that ignores commands and just streams still works (see docs/protocol.md).
"""

from __future__ import annotations

import re

import numpy as np

from firmware_bridge.messages import (
    Abort,
    Ack,
    DeviceInfo,
    Flush,
    GetInfo,
    Message,
    Nack,
    Ping,
    SetAverages,
    SetIntegration,
    SpectrumFlag,
    SpectrumFrame,
    StreamStart,
    StreamStop,
)

#: Longest line accepted: 4,096 pixels of "65535," plus room for spaces and a header.
MAX_LINE = 4096 * 7 + 256

_COUNTS = re.compile(rb"^\s*\d+(\s*,\s*\d+)*\s*,?\s*$")
_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0D}

#: Integration limits a line-mode device is assumed to have (it cannot say).
LINE_INTEGRATION_MIN_MS = 1
LINE_INTEGRATION_MAX_MS = 60_000


class LineError(ValueError):
    """A printable line that is not a line-protocol message."""


def is_printable(line: bytes) -> bool:
    return all(b in _PRINTABLE for b in line)


def parse_line(line: bytes, seq: int, last_info: DeviceInfo | None) -> Message | None:
    """One line (without its newline) -> a message; None for blank lines and comments."""
    text = line.strip()
    if not text:
        return None
    if text.startswith(b"#"):
        return _parse_hash_line(text)
    if _COUNTS.match(text):
        tokens = text.replace(b" ", b"").rstrip(b",").split(b",")
        # Bound the digits before int(): a 30-digit token overflows int64 and a 5,000-digit one
        # trips Python's int-conversion limit (both found by bench/fuzz_codec.py).
        longest = max(tokens, key=len)
        if len(longest.lstrip(b"0")) > 5:
            raise LineError(f"count {longest[:12].decode()}{'...' if len(longest) > 12 else ''} exceeds 65535")
        values = [int(v) for v in tokens]
        counts = np.asarray(values, dtype=np.int64)
        if counts.max() > 0xFFFF:
            raise LineError(f"count {int(counts.max())} exceeds 65535")
        if last_info is not None and counts.size != last_info.pixel_count:
            raise LineError(f"spectrum line has {counts.size} counts, #INFO said {last_info.pixel_count}")
        flags = SpectrumFlag.STREAMED
        if counts.max() == 0xFFFF:
            flags |= SpectrumFlag.SATURATED
        return SpectrumFrame(seq, 0, 0, 1, int(flags), counts.astype(np.uint16))
    return _parse_command(text)


def _parse_hash_line(text: bytes) -> Message | None:
    word, _, rest = text.partition(b" ")
    if word == b"#INFO":
        return _parse_info(rest.decode("ascii"))
    if word == b"#OK":
        return Ack(0, 0)
    if word == b"#ERR":
        try:
            code = int(rest.strip() or b"0")
        except ValueError:
            raise LineError(f"bad #ERR code {rest!r}") from None
        return Nack(0, 0, code)
    return None  # comment


def _parse_info(rest: str) -> DeviceInfo:
    fields: dict[str, str] = {}
    for item in rest.split():
        key, eq, value = item.partition("=")
        if not eq:
            raise LineError(f"#INFO item {item!r} is not key=value")
        fields[key.lower()] = value
    missing = [k for k in ("laser_nm", "pixels", "cal") if k not in fields]
    if missing:
        raise LineError(f"#INFO lacks {', '.join(missing)}")
    try:
        cal = tuple(float(c) for c in fields["cal"].split(","))
        pixels = int(fields["pixels"])
        laser_nm = float(fields["laser_nm"])
        int_min = int(fields.get("int_min_ms", LINE_INTEGRATION_MIN_MS))
        int_max = int(fields.get("int_max_ms", LINE_INTEGRATION_MAX_MS))
        avg_max = int(fields.get("avg_max", 1000))
    except ValueError as err:
        raise LineError(f"#INFO has a bad number: {err}") from None
    if not 0 < pixels <= 4096:
        raise LineError(f"#INFO pixels={pixels} outside 1..4096")
    return DeviceInfo(
        model=fields.get("model", "line-mode"),
        serial_number=fields.get("serial", ""),
        firmware_version=fields.get("fw", ""),
        pixel_count=pixels,
        calibration_nm=cal,
        laser_nm=laser_nm,
        integration_min_ms=int_min,
        integration_max_ms=int_max,
        averages_max=avg_max,
    )


def _parse_command(text: bytes) -> Message:
    word, _, arg = text.decode("ascii").partition(" ")
    word = word.upper()
    try:
        if word == "INFO":
            return GetInfo()
        if word == "PING":
            return Ping()
        if word == "STOP":
            return StreamStop()
        if word == "INT":
            return SetIntegration(int(arg))
        if word == "AVG":
            return SetAverages(int(arg))
        if word == "START":
            return StreamStart(int(arg))
    except ValueError:
        raise LineError(f"bad argument in {text!r}") from None
    raise LineError(f"not a line-protocol message: {text[:40]!r}")


def format_line(msg: Message) -> bytes:
    """Message -> one line (with newline). Raises ValueError for messages line mode lacks."""
    if isinstance(msg, SpectrumFrame):
        return b",".join(str(int(v)).encode() for v in msg.counts) + b"\n"
    if isinstance(msg, DeviceInfo):
        cal = ",".join(repr(float(c)) for c in msg.calibration_nm)
        parts = [
            f"laser_nm={msg.laser_nm:g}",
            f"pixels={msg.pixel_count}",
            f"cal={cal}",
            f"int_min_ms={msg.integration_min_ms}",
            f"int_max_ms={msg.integration_max_ms}",
            f"avg_max={msg.averages_max}",
        ]
        for key, value in (
            ("serial", msg.serial_number),
            ("model", msg.model),
            ("fw", msg.firmware_version),
        ):
            if value:
                parts.append(f"{key}={value.replace(' ', '_')}")
        return ("#INFO " + " ".join(parts) + "\n").encode("ascii", errors="replace")
    if isinstance(msg, Ack):
        return b"#OK\n"
    if isinstance(msg, Nack):
        return f"#ERR {msg.code}\n".encode()
    if isinstance(msg, GetInfo):
        return b"INFO\n"
    if isinstance(msg, Ping):
        return b"PING\n"
    if isinstance(msg, StreamStop | Abort | Flush):
        return b"STOP\n"  # a text device has no queue to flush: stopping is all it can do
    if isinstance(msg, SetIntegration):
        return f"INT {msg.integration_ms}\n".encode()
    if isinstance(msg, SetAverages):
        return f"AVG {msg.averages}\n".encode()
    if isinstance(msg, StreamStart):
        return f"START {msg.period_ms}\n".encode()
    raise ValueError(f"line mode has no {type(msg).__name__} message")
