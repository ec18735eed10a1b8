from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import messages as m
from firmware_bridge import wire
from firmware_bridge.codec import Codec, FrameError
from firmware_bridge.errors import UsageError

INFO = m.DeviceInfo(
    model="RamanEdge-Emulator",
    serial_number="SN-42",
    firmware_version="1.2.3",
    pixel_count=1024,
    calibration_nm=(791.2, 0.1329, -3.1e-06, -1.2e-09),
    laser_nm=785.0,
    integration_min_ms=1,
    integration_max_ms=60_000,
    averages_max=500,
)

ALL_MESSAGES: list[m.Message] = [
    m.Ping(),
    m.GetInfo(),
    m.SetIntegration(250),
    m.SetAverages(16),
    m.Acquire(3),
    m.StreamStart(500),
    m.StreamStop(),
    m.Dark(),
    m.Laser(True, 80, 10),
    m.Abort(),
    m.Flush(),
    m.Ack(m.Op.FLUSH, 65535),
    m.Nack(m.Op.ACQUIRE, 7, m.NackCode.BUSY),
    INFO,
    m.SpectrumFrame(
        seq=2**32 - 1,
        timestamp_ms=123456,
        integration_ms=100,
        averages=4,
        flags=int(m.SpectrumFlag.SATURATED | m.SpectrumFlag.LASER_ON),
        counts=np.arange(4096, dtype=np.uint16) * 16,
    ),
]


def drain(codec: Codec) -> list[m.Message | FrameError]:
    out = []
    while (event := codec.next_event()) is not None:
        out.append(event)
    return out


def test_crc_test_vector() -> None:
    assert wire.crc16_ccitt_false(b"123456789") == 0x29B1


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00", b"a" * 254, b"a" * 255, b"a\x00b" * 300])
def test_cobs_round_trip(data: bytes) -> None:
    encoded = wire.cobs_encode(data)
    assert b"\x00" not in encoded
    assert wire.cobs_decode(encoded) == data


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda msg: type(msg).__name__)
def test_round_trip_every_message(msg: m.Message) -> None:
    data = Codec().encode(msg)
    rx = Codec()
    rx.feed(data)
    assert drain(rx) == [msg]


def test_max_spectrum_fits_in_a_frame() -> None:
    frame = Codec().encode(ALL_MESSAGES[-1])
    assert len(frame) - 2 <= wire.MAX_ENCODED_FRAME


def test_byte_by_byte_with_garbage_around() -> None:
    tx = Codec()
    stream = b"garbage\xff\x01" + b"".join(tx.encode(x) for x in ALL_MESSAGES[:7])
    stream += b"\x05\x00noise\n\x17" + b"".join(tx.encode(x) for x in ALL_MESSAGES[7:]) + b"\xaa\xbb"
    rx = Codec("binary")
    events: list[m.Message | FrameError] = []
    for b in stream:
        rx.feed(bytes([b]))
        events += drain(rx)
    assert [e for e in events if not isinstance(e, FrameError)] == ALL_MESSAGES
    assert rx.stats.error_count >= 2  # the two garbage bursts, counted, not raised
    assert rx.buffered == 2  # trailing bytes wait for a delimiter


def test_auto_mode_locks_on_binary_despite_newlines() -> None:
    tx = Codec()
    rx = Codec("auto")
    rx.feed(b"\n\n" + tx.encode(ALL_MESSAGES[-1]) + tx.encode(INFO))
    assert drain(rx)[-2:] == [ALL_MESSAGES[-1], INFO]
    assert rx.mode == "binary"


def test_corrupted_crc_is_rejected_and_next_frame_survives() -> None:
    tx = Codec()
    good = tx.encode(m.Abort())
    bad = bytearray(tx.encode(m.SetIntegration(100)))
    bad[5] ^= 0x40
    rx = Codec()
    rx.feed(good + bytes(bad) + tx.encode(m.Ping()))
    events = drain(rx)
    assert events[0] == m.Abort()
    assert isinstance(events[1], FrameError) and events[1].reason in ("crc", "cobs", "length")
    assert events[2] == m.Ping()
    assert rx.stats.lost_frames == 1  # header seq 1 lost between 0 and 2


def test_version_mismatch_is_an_error_event() -> None:
    rx = Codec()
    rx.feed(wire.pack_frame(m.Op.PING, 0, b"", version=9))
    (event,) = drain(rx)
    assert isinstance(event, FrameError) and event.reason == "version"


def test_oversize_frame_is_rejected_and_memory_bounded() -> None:
    rx = Codec("binary")
    rx.feed(b"\x01" * (wire.MAX_ENCODED_FRAME + 10))
    assert rx.buffered == 0
    rx.feed(b"\x01" * 100 + b"\x00" + Codec().encode(m.Ping()))
    events = drain(rx)
    assert isinstance(events[0], FrameError) and events[0].reason == "oversize"
    assert events[-1] == m.Ping()
    # A well-formed frame whose header declares a payload above the limit is refused too.
    rx.feed(wire.pack_frame(m.Op.SPECTRUM, 0, b"\x00" * (wire.MAX_PAYLOAD + 2)))
    (event,) = drain(rx)
    assert isinstance(event, FrameError)


def test_bad_payload_length_is_an_error_event() -> None:
    rx = Codec()
    rx.feed(wire.pack_frame(m.Op.SET_INTEGRATION, 0, b"\x01\x02"))
    rx.feed(wire.pack_frame(0x7E, 1, b""))
    reasons = [e.reason for e in drain(rx) if isinstance(e, FrameError)]
    assert reasons == ["payload", "payload"]


def test_line_mode_info_and_spectra() -> None:
    rx = Codec("auto")
    rx.feed(b"# booting\r\n#INFO laser_nm=785 pixels=4 cal=800,0.1,0,0 serial=ABC\r\n")
    rx.feed(b"10,20,30,65535\n1,2,3\n5,6,7,8\n")
    events = drain(rx)
    info, spec1, err, spec2 = events
    assert isinstance(info, m.DeviceInfo) and info.serial_number == "ABC" and info.pixel_count == 4
    assert info.calibration_nm == (800.0, 0.1, 0.0, 0.0)
    assert isinstance(spec1, m.SpectrumFrame) and spec1.saturated
    assert spec1.counts.tolist() == [10, 20, 30, 65535]
    assert isinstance(err, FrameError) and err.reason == "bad_line"  # 3 counts, not 4
    assert isinstance(spec2, m.SpectrumFrame) and spec2.seq == 1
    assert rx.mode == "line"


def test_line_mode_commands_round_trip() -> None:
    tx, rx = Codec("line"), Codec("line")
    cmds = [m.GetInfo(), m.SetIntegration(50), m.SetAverages(2), m.StreamStart(100), m.StreamStop()]
    rx.feed(b"".join(tx.encode(c) for c in cmds) + tx.encode(INFO))
    assert drain(rx) == [*cmds, INFO]
    with pytest.raises(UsageError):
        tx.encode(m.Acquire(1))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=12), st.sampled_from(["auto", "binary", "line"]))
def test_random_bytes_only_produce_events(chunks: list[bytes], mode: str) -> None:
    rx = Codec(mode)  # type: ignore[arg-type]
    for chunk in chunks:
        rx.feed(chunk)
        assert rx.buffered <= max(wire.MAX_ENCODED_FRAME, 32768)
        for event in drain(rx):
            assert isinstance(
                event,
                FrameError
                | m.Ping
                | m.GetInfo
                | m.StreamStop
                | m.Ack
                | m.Nack
                | m.SpectrumFrame
                | m.DeviceInfo
                | m.SetIntegration
                | m.SetAverages
                | m.StreamStart
                | m.Acquire
                | m.Dark
                | m.Laser
                | m.Abort
                | m.Flush,
            )


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=500), st.binary(max_size=500), st.integers(0, 2**16 - 1))
def test_frames_survive_surrounding_garbage(before: bytes, after: bytes, value: int) -> None:
    msg = m.SetAverages(value)
    rx = Codec("binary")
    rx.feed(before + b"\x00" + Codec().encode(msg) + after)
    assert msg in drain(rx)


@pytest.mark.parametrize("line", [b"1," + b"9" * 30 + b",3\n", b"1," + b"9" * 5000 + b"\n", b"12,0000065535,1\n"])
def test_huge_numbers_in_text_lines_are_counted_errors_not_crashes(line: bytes) -> None:
    """Regression: bench/fuzz_codec.py found OverflowError/ValueError escaping parse_line."""
    from firmware_bridge.codec import Codec

    codec = Codec()
    codec.feed(line)
    while codec.next_event() is not None:
        pass
    codec.feed(b"1,2,3\n")
    events = []
    while (ev := codec.next_event()) is not None:
        events.append(ev)
    assert events  # the codec is still alive and decodes the next good line


@pytest.mark.parametrize(
    "msg",
    [
        m.SetIntegration(integration_ms=-1),
        m.SetIntegration(integration_ms=2**40),
        m.SetAverages(averages=70_000),
    ],
)
def test_encode_of_a_value_that_does_not_fit_is_a_bridge_error(msg: m.Message) -> None:
    # struct.error is not a BridgeError: a CLI would print a traceback for it.
    with pytest.raises(UsageError, match=f"cannot encode {type(msg).__name__}"):
        Codec().encode(msg)


def test_each_event_is_charged_its_own_decode_time() -> None:
    # Many frames arriving in one read: the per-event decode time must be that frame's own
    # cost (tiny), and the sum over events must not exceed the time the whole feed took.
    import time as _time

    tx = Codec()
    frames = b"".join(
        tx.encode(
            m.SpectrumFrame(
                seq=i, timestamp_ms=i, integration_ms=10, averages=1, flags=0, counts=np.arange(1024, dtype=np.uint16)
            )
        )
        for i in range(50)
    )
    rx = Codec()
    t0 = _time.perf_counter()
    rx.feed(frames)
    feed_ms = (_time.perf_counter() - t0) * 1e3
    costs = []
    while rx.next_event() is not None:
        costs.append(rx.last_decode_ms)
    assert len(costs) == 50
    assert all(c >= 0 for c in costs)
    assert sum(costs) <= feed_ms * 1.01 + 0.05
    # the old accounting charged the whole read to the first event: ~50x the others
    assert costs[0] < 10 * (sorted(costs)[25] + 0.01)


def test_every_op_has_exactly_one_registry_entry_that_round_trips() -> None:
    ops = [entry.op for entry in m.REGISTRY]
    assert sorted(ops) == sorted(m.Op) and len(ops) == len(set(ops))
    classes = [entry.cls for entry in m.REGISTRY]
    assert len(classes) == len(set(classes))
    by_class = {type(msg): msg for msg in ALL_MESSAGES}
    for entry in m.REGISTRY:
        msg = by_class[entry.cls]  # every registered class has a sample message above
        op, payload = m.encode_payload(msg)
        assert op is entry.op and m.op_of(msg) is entry.op
        assert m.decode_payload(op, payload) == msg
        if not entry.variable:
            assert len(payload) == entry.layout.size == struct.calcsize(m.FIXED_LAYOUTS[op] or "<")


def test_registry_mappings_keep_the_wire_bytes() -> None:
    # The per-field conversions that are not "dataclass fields in order": bool -> u8 and
    # the 16-bit seq mask of ACK/NACK; and the exact bytes of a few payloads.
    assert m.encode_payload(m.Laser(True, 80, 10)) == (m.Op.LASER, b"\x01\x50\x0a\x00")
    assert m.decode_payload(m.Op.LASER, b"\x01\x50\x0a\x00") == m.Laser(True, 80, 10)
    assert m.encode_payload(m.Ack(m.Op.PING, 0x1_0005)) == (m.Op.ACK, b"\x01\x05\x00")
    assert m.encode_payload(m.Nack(m.Op.ACQUIRE, 7, 4)) == (m.Op.NACK, b"\x05\x07\x00\x04")
    assert m.encode_payload(m.SetIntegration(250)) == (m.Op.SET_INTEGRATION, b"\xfa\x00\x00\x00")
    assert m.encode_payload(m.Ping()) == (m.Op.PING, b"")
    with pytest.raises(TypeError, match="not a protocol message"):
        m.encode_payload(object())  # type: ignore[arg-type]
