"""The device session on its own: commands in, replies and due exposures out, no pty."""

from __future__ import annotations

import pytest

from firmware_bridge import messages as m
from firmware_bridge.device_session import (
    ACQUIRED,
    DARK,
    FLUSH_TX,
    MAX_CATCH_UP,
    STREAMED,
    DeviceSession,
    Exposure,
)

INFO = m.DeviceInfo("emu", "SN", "1", 16, (800.0, 0.1), 785.0, 1, 60_000)


def device(**kwargs: object) -> DeviceSession:
    return DeviceSession(INFO, integration_ms=10, averages=2, now=0.0, **kwargs)  # type: ignore[arg-type]


def due(s: DeviceSession, now: float) -> list[Exposure]:
    s.tick(now)
    out = []
    while (exposure := s.next_exposure(now)) is not None:
        out.append(exposure)
    return out


def test_settings_are_acknowledged_with_the_command_seq_or_refused() -> None:
    s = device()
    assert s.receive(m.SetIntegration(50), 7, 0.0) == [m.Ack(m.Op.SET_INTEGRATION, 7)]
    assert s.receive(m.SetAverages(3), 8, 0.0) == [m.Ack(m.Op.SET_AVERAGES, 8)]
    assert s.exposure_s() == pytest.approx(0.15)
    assert s.receive(m.SetIntegration(60_001), 9, 0.0) == [m.Nack(m.Op.SET_INTEGRATION, 9, m.NackCode.OUT_OF_RANGE)]
    assert s.receive(m.SetAverages(0), 10, 0.0) == [m.Nack(m.Op.SET_AVERAGES, 10, m.NackCode.OUT_OF_RANGE)]
    assert s.receive(m.Laser(True, 101), 11, 0.0) == [m.Nack(m.Op.LASER, 11, m.NackCode.OUT_OF_RANGE)]
    assert (s.integration_ms, s.averages, s.laser_on) == (50, 3, False)  # refusals change nothing


def test_get_info_and_flush_replies_come_before_the_ack() -> None:
    s = device()
    assert s.receive(m.GetInfo(), 1, 0.0) == [INFO, m.Ack(m.Op.GET_INFO, 1)]
    assert s.receive(m.Flush(), 2, 0.0) == [FLUSH_TX, m.Ack(m.Op.FLUSH, 2)]


def test_a_reply_sent_to_the_device_is_an_unknown_type() -> None:
    s = device()
    assert s.receive(m.Ack(m.Op.PING, 0), 3, 0.0) == [m.Nack(m.Op.ACK, 3, m.NackCode.UNKNOWN_TYPE)]


def test_acquire_and_dark_come_due_one_exposure_apart() -> None:
    s = device()  # 10 ms x 2 averages = 20 ms per spectrum
    s.receive(m.Acquire(2), 0, 0.0)
    s.receive(m.Dark(), 1, 0.0)  # queues behind the acquisition
    assert due(s, 0.019) == []
    assert due(s, 0.021) == [ACQUIRED]
    assert due(s, 0.061) == [ACQUIRED, DARK]
    assert s.receive(m.Acquire(1001), 2, 0.1) == [m.Nack(m.Op.ACQUIRE, 2, m.NackCode.OUT_OF_RANGE)]


def test_busy_while_streaming_and_stop_clears_everything() -> None:
    s = device()
    assert s.receive(m.StreamStart(5), 0, 0.0) == [m.Ack(m.Op.STREAM_START, 0)]
    assert s.streaming and s.stream_period_s == pytest.approx(0.02)  # never faster than the exposure
    assert s.receive(m.Acquire(1), 1, 0.0) == [m.Nack(m.Op.ACQUIRE, 1, m.NackCode.BUSY)]
    assert s.receive(m.Dark(), 2, 0.0) == [m.Nack(m.Op.DARK, 2, m.NackCode.BUSY)]
    assert due(s, 0.021) == [STREAMED]
    assert due(s, 0.061) == [STREAMED, STREAMED]
    s.receive(m.StreamStop(), 3, 0.07)
    assert not s.streaming and due(s, 1.0) == []
    assert s.receive(m.StreamStart(0), 4, 1.0) == [m.Nack(m.Op.STREAM_START, 4, m.NackCode.OUT_OF_RANGE)]


def test_a_late_turn_catches_up_at_most_max_catch_up_then_skips_ahead() -> None:
    s = device(stream_period_s=0.001)
    assert len(due(s, 1.0)) == MAX_CATCH_UP  # 1,000 came due; the rest are skipped
    assert s.next_stream_s == 1.0
    assert due(s, 1.0005) == [STREAMED] and due(s, 1.0009) == []


def test_watchdog_turns_the_laser_off_after_host_silence() -> None:
    s = device()
    s.receive(m.Laser(True, 100, 2), 0, 0.0)
    assert s.laser_on and s.watchdog_s == 2.0
    s.heard(1.5)  # any bytes from the host keep it on
    assert s.tick(3.0) is False and s.laser_on
    assert s.tick(3.6) is True and not s.laser_on  # 2.1 s of silence
    assert s.tick(10.0) is False  # tripped once; only a new LASER turns it on
    s.receive(m.Laser(True), 1, 10.0)
    assert s.watchdog_s == m.DEFAULT_WATCHDOG_S


def test_text_device_replies_only_to_info_ping_and_errors_and_has_no_watchdog() -> None:
    s = device(line_mode=True, laser_on=True, stream_period_s=0.2)
    assert s.receive(m.GetInfo(), 0, 0.0) == [INFO]
    assert s.receive(m.Ping(), 0, 0.0) == [m.Ack(m.Op.PING, 0)]
    assert s.receive(m.SetIntegration(20), 0, 0.0) == []
    assert s.receive(m.SetIntegration(0), 0, 0.0) == [m.Nack(m.Op.SET_INTEGRATION, 0, m.NackCode.OUT_OF_RANGE)]
    assert s.tick(100.0) is False and s.laser_on


def test_next_deadline_is_the_earliest_due_time() -> None:
    s = device()
    assert s.next_deadline(0.0, 0.05) == 0.05
    s.receive(m.Acquire(1), 0, 0.0)
    assert s.next_deadline(0.0, 0.05) == pytest.approx(0.02)
    assert s.next_deadline(0.5, 0.05) == 0.5  # overdue: now
