"""Byte-level building blocks of the binary protocol (docs/protocol.md is the spec).

A frame on the wire is ``b"\\x00" + COBS(header + payload + crc) + b"\\x00"``:

- COBS (Consistent Overhead Byte Stuffing) removes every 0x00 from the frame body, so 0x00
  can only be the delimiter. A receiver that joins mid-stream, or sees corrupt bytes, just
  drops everything up to the next 0x00 and is back in sync: no length field has to be trusted
  to find the next frame. The leading 0x00 ends any garbage the receiver holds, so noise on
  the line before a frame cannot spoil that frame; empty frames are ignored.
- The header is fixed size, little-endian (``HEADER``), described field by field below.
- The CRC is CRC-16/CCITT-FALSE over header + payload, appended little-endian.

Nothing here does I/O; ``codec.py`` turns these pieces into a streaming parser.
"""

from __future__ import annotations

import binascii
import struct

#: Bumped on any incompatible change of header, payload layouts or semantics.
PROTOCOL_VERSION = 1

#: Frame delimiter. COBS guarantees it never appears inside an encoded frame.
DELIMITER = b"\x00"

# Header layout, little-endian, 6 bytes:
#   B  version       protocol version of the sender (PROTOCOL_VERSION)
#   B  msg_type      opcode, see messages.OPCODES (0x01-0x7F host->device, 0x80-0xFF device->host)
#   H  seq           per-sender frame counter, +1 per frame, wraps at 65536; the receiver uses
#                    gaps to count lost frames and ACK/NACK echo it to match replies to commands
#   H  payload_len   number of payload bytes that follow the header (before the CRC)
HEADER = struct.Struct("<BBHH")
HEADER_SIZE = HEADER.size

# CRC trailer: H crc16  CRC-16/CCITT-FALSE of header + payload (see crc16_ccitt_false).
CRC = struct.Struct("<H")
CRC_SIZE = CRC.size

#: Largest payload a receiver accepts. A 4,096-pixel uint16 spectrum is 8,192 bytes of counts
#: plus a 20-byte spectrum header; the rest is headroom for future fields.
MAX_PAYLOAD = 8448

#: Largest decoded frame (header + payload + CRC).
MAX_DECODED_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE

#: Largest COBS-encoded frame without its delimiter: one overhead byte per 254 data bytes,
#: plus the leading code byte. A receiver never buffers more than this while hunting for 0x00.
MAX_ENCODED_FRAME = MAX_DECODED_FRAME + MAX_DECODED_FRAME // 254 + 1


def crc16_ccitt_false(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final XOR.

    Test vector: ``crc16_ccitt_false(b"123456789") == 0x29B1``. The standard library's
    `binascii.crc_hqx` is exactly this CRC (in C, ~30x faster than a Python table loop);
    docs/protocol.md gives the algorithm for firmware authors.
    """
    return binascii.crc_hqx(data, crc)


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode `data` (without the trailing delimiter).

    Works on the zero-free runs between zeros (bytes.split, in C) rather than byte by byte:
    a 2.7 KB spectrum frame costs ~10 us instead of ~200 us, which is what lets the emulator
    serve 1,000 frames/s.
    """
    out = bytearray()
    for run in bytes(data).split(b"\x00"):
        # A run of 254 non-zero bytes is one full block (code 255, no implied zero).
        while len(run) >= 254:
            out.append(255)
            out += run[:254]
            run = run[254:]
        out.append(len(run) + 1)
        out += run
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    """Inverse of `cobs_encode`; None when `data` is not valid COBS (the caller counts it)."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            return None
        end = i + code
        if end > n:
            return None
        block = data[i + 1 : end]
        if 0 in block:
            return None
        out += block
        i = end
        # A code of 255 means "254 bytes, no zero follows"; otherwise a zero follows unless
        # this was the last block.
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)


def pack_frame(msg_type: int, seq: int, payload: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    """Header + payload + CRC, COBS-encoded, delimited on both sides: ready for the wire."""
    body = HEADER.pack(version, msg_type, seq & 0xFFFF, len(payload)) + payload
    body += CRC.pack(crc16_ccitt_false(body))
    return DELIMITER + cobs_encode(body) + DELIMITER
