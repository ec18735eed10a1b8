"""The host session on its own: events in, actions out, the clock passed by hand (no port)."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge import messages as m
from firmware_bridge.codec import FrameError
from firmware_bridge.errors import DeviceError
from firmware_bridge.host_session import Deliver, HostSession, Recover, Restart, Send
from firmware_bridge.link import LinkDown, LinkUp

INFO = m.DeviceInfo("emu", "SN", "1", 4, (800.0, 0.1), 785.0, 1, 60_000)


def frame(seq: int, *, dark: bool = False) -> m.SpectrumFrame:
    flags = m.SpectrumFlag.DARK_FRAME if dark else m.SpectrumFlag.LASER_ON
    return m.SpectrumFrame(seq, 0, 10, 1, int(flags), np.zeros(4, np.uint16))


def session(**kwargs: float) -> HostSession:
    s = HostSession(timeout_s=1.0, retries=2, keepalive_s=1.0, port="pty0", **kwargs)  # type: ignore[arg-type]
    s.handshake_done(INFO)
    return s


def test_lost_ack_retries_an_idempotent_command_and_ignores_the_late_ack() -> None:
    s = session()
    assert s.command(m.SetIntegration(5), 0.0) == [Send(m.SetIntegration(5))]
    s.sent(10, 0.0)
    assert s.wait_s(0.25) == pytest.approx(0.75)
    assert s.tick(0.5) == []  # not yet due
    assert s.tick(1.01) == [Send(m.SetIntegration(5))]  # the ACK was lost: send again
    assert s.stats.timeouts == 1 and s.stats.retries == 1
    s.sent(11, 1.01)
    s.receive(m.Ack(m.Op.SET_INTEGRATION, 10), 1.02)  # the first attempt's ACK, late
    assert not s.finished
    s.receive(m.Ack(m.Op.SET_INTEGRATION, 11), 1.03)
    assert s.finished and s.result() is None
    assert s.integration_ms == 5  # applied only once the device acknowledged it


def test_idempotent_command_fails_after_its_retries() -> None:
    s = session()
    s.command(m.Ping(), 0.0)
    for attempt in range(3):
        s.sent(attempt, attempt * 1.0)
        actions = s.tick(attempt * 1.0 + 1.01)
        assert actions == ([Send(m.Ping())] if attempt < 2 else [])
    assert s.finished
    with pytest.raises(DeviceError, match="no answer to PING within 1 s"):
        s.result()
    assert s.stats.timeouts == 3 and s.stats.retries == 2


@pytest.mark.parametrize("msg", [m.Acquire(2), m.Dark()])
def test_an_exposure_is_never_repeated(msg: m.Message) -> None:
    s = session()
    s.command(msg, 0.0)
    s.sent(3, 0.0)
    assert s.tick(1.5) == []  # a second ACQUIRE could expose twice
    with pytest.raises(DeviceError, match=f"no answer to {m.op_of(msg).name}"):
        s.result()
    assert s.stats.retries == 0


def test_nack_is_a_device_error_naming_the_code() -> None:
    s = session()
    s.command(m.SetIntegration(10**6), 0.0)
    s.sent(7, 0.0)
    s.receive(m.Nack(m.Op.SET_INTEGRATION, 6, m.NackCode.BUSY), 0.1)  # another command's
    assert not s.finished
    s.receive(m.Nack(m.Op.SET_INTEGRATION, 7, m.NackCode.OUT_OF_RANGE), 0.1)
    with pytest.raises(DeviceError, match="device refused SET_INTEGRATION: OUT_OF_RANGE"):
        s.result()
    assert s.stats.nacks == 1 and s.integration_ms is None


def test_spectra_before_the_ack_are_kept_for_the_next_collection() -> None:
    s = session()
    s.command(m.Acquire(2), 0.0)
    s.sent(1, 0.0)
    s.receive(frame(0), 0.01)  # the device was quick: spectra before the ACK
    s.receive(frame(1), 0.02)
    s.receive(m.Ack(m.Op.ACQUIRE, 1), 0.03)
    s.result()
    assert s.collect(2, dark=False, timeout_s=1.0, now=0.04) == []  # nothing to wait for
    assert s.finished and [f.seq for f in s.result()] == [0, 1]


def test_flush_drops_the_stale_stream_and_counts_it() -> None:
    s = session()
    s.command(m.Flush(), 0.0, discard=True)
    s.sent(0, 0.0)
    for seq in range(5):
        s.receive(frame(100 + seq), 0.01)
    s.receive(m.Ack(m.Op.FLUSH, 0), 0.02)
    s.result()
    assert s.stats.stale_discarded == 5 and not s.backlog


def test_seq_gaps_are_counted_and_a_new_session_starts_afresh() -> None:
    s = session()
    for seq in (0, 1, 4, 5, 9):
        s.receive(frame(seq), 0.0)
    assert s.stats.spectra == 5 and s.stats.dropped_seqs == 2 + 3
    s.handshake_done(INFO)  # the device may have rebooted: its seq starts again
    s.receive(frame(0), 0.0)
    s.receive(frame(2), 0.0)
    assert s.stats.dropped_seqs == 5 + 1


def test_frame_errors_are_counted_and_skipped() -> None:
    s = session()
    s.command(m.Ping(), 0.0)
    s.sent(0, 0.0)
    assert s.receive(FrameError("crc", "CRC mismatch", 12), 0.1) == []
    assert s.stats.corrupt_frames == 1 and not s.finished


def test_link_down_fails_the_command_and_the_next_one_at_once() -> None:
    s = session()
    s.command(m.Ping(), 0.0)
    s.sent(0, 0.0)
    s.receive(LinkDown("pty0", "EIO"), 0.1)
    with pytest.raises(DeviceError, match=r"pty0 disconnected \(EIO\)"):
        s.result()
    assert s.command(m.Ping(), 0.2) == []
    with pytest.raises(DeviceError, match="pty0 is disconnected"):
        s.result()
    assert s.stats.link_downs == 1


def test_collect_times_out_with_what_came() -> None:
    s = session()
    s.collect(3, dark=True, timeout_s=0.5, now=0.0)
    s.receive(frame(0), 0.1)  # not dark: not what was asked for
    s.receive(frame(1, dark=True), 0.2)
    assert s.tick(0.4) == [] and not s.finished
    s.tick(0.6)
    assert [f.seq for f in s.result()] == [1]
    assert s.stats.timeouts == 1


def test_info_request_retries_on_a_binary_device_and_uses_the_boot_header_on_a_text_one() -> None:
    s = HostSession(timeout_s=1.0, retries=1, port="pty0")
    assert s.request_info(0.0) == [Send(m.GetInfo())]
    s.sent(0, 0.0)
    s.receive(frame(3), 0.1)  # an old stream: dropped
    assert s.tick(1.1) == [Send(m.GetInfo())]
    s.sent(1, 1.1)
    s.receive(INFO, 1.2)
    assert s.result() == INFO
    assert (s.stats.stale_discarded, s.stats.timeouts, s.stats.retries) == (1, 1, 1)
    text = HostSession(timeout_s=1.0, retries=1)
    text.info = INFO  # the #INFO line a text device prints at boot
    assert text.request_info(0.0, strict=False) == [] and text.result() == INFO


def test_stream_keepalive_delivery_and_silence() -> None:
    s = session()
    s.stream_begin(100, 0.0, keepalive=True)
    assert s.receive(frame(0), 0.05) == [Deliver(frame(0))]
    assert s.receive(frame(1, dark=True), 0.06) == []  # a dark frame is not a stream item
    assert s.receive(m.Ack(m.Op.PING, 3), 0.07) == []
    assert s.tick(0.5) == []
    assert s.tick(1.01) == [Send(m.Ping(), quiet=True)]  # feeds the laser watchdog
    # idle limit: max(3 x 0.1 s, 3 x exposure 0.1 s, timeout 1 s) = 1 s after the last frame
    assert s.tick(1.04) == []
    assert s.tick(1.06) == [Restart()]
    assert s.stats.timeouts == 1
    assert s.tick(2.05) == [Send(m.Ping(), quiet=True)]  # the restart reset the silence clock


def test_stream_survives_a_replug() -> None:
    s = session()
    s.stream_begin(100, 0.0, keepalive=True)
    down = LinkDown("pty0", "gone")
    assert s.receive(down, 0.1) == [Deliver(down)]
    assert s.tick(5.0) == []  # no keepalive, no restart while the port is away
    up = LinkUp("pty0")
    assert s.receive(up, 5.1) == [Recover(up)]
    assert s.stats.reconnects == 1 and not s.down
    s.stream_recovered(5.2)
    assert s.tick(5.3) == [Send(m.Ping(), quiet=True)]


def test_text_device_keeps_assumed_settings_and_has_no_keepalive() -> None:
    s = session()
    s.assume_applied(m.SetIntegration(20))
    s.assume_applied(m.SetAverages(3))
    assert s.exposure_s() == pytest.approx(0.06)
    s.stream_begin(100, 0.0, keepalive=False)
    assert s.tick(1.5) == [Restart()]
