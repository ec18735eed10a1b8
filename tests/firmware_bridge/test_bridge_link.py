"""Client + transport + emulator through real pseudo-terminals."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from firmware_bridge import messages as m
from firmware_bridge.cli import app
from firmware_bridge.client import Spectrometer
from firmware_bridge.emulator import Emulator, Faults
from firmware_bridge.errors import DeviceError
from firmware_bridge.transport import LinkDown, LinkUp

MakeEmulator = Callable[..., Emulator]


def test_handshake_acquire_dark_and_stream(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    gt = tmp_path / "truth.jsonl"
    emu = make_emulator(seed=3, ground_truth=str(gt))
    with Spectrometer.open(emu.port, timeout_s=2.0) as spec:
        info = spec.handshake()
        assert info.pixel_count == 1024 and info.laser_nm == 785.0
        assert len(info.calibration_nm) == 4
        shifts = info.shifts_cm1()
        assert 90 < shifts[0] < 110 and 1890 < shifts[-1] < 1910
        spec.configure(integration_ms=5, averages=2)
        dark = spec.acquire_dark()
        assert dark.is_dark and dark.counts.size == 1024
        frames = spec.acquire(3)
        assert [f.integration_ms for f in frames] == [5, 5, 5]
        assert all(f.flags & m.SpectrumFlag.LASER_ON for f in frames)
        streamed = [x for x in spec.stream(period_ms=10, max_frames=5)]
        assert len(streamed) == 5 and all(isinstance(x, m.SpectrumFrame) for x in streamed)
        # The reader timed the codec for every frame; the figure is handed out once.
        decode_ms = [spec.transport.decode_ms(f) for f in streamed]
        assert all(d is not None and 0 < d < 1000 for d in decode_ms), decode_ms
        assert spec.transport.decode_ms(streamed[0]) is None
        assert spec.stats.corrupt_frames == 0 and spec.stats.dropped_seqs == 0
    assert emu.wait_for(lambda s: not s.streaming, timeout_s=2)
    lines = gt.read_text().splitlines()
    assert len(lines) == emu.stats.spectra_sent
    assert '"mineral": ' in lines[-1]


def test_out_of_range_integration_is_refused(make_emulator: MakeEmulator) -> None:
    emu = make_emulator()
    with Spectrometer.open(emu.port, timeout_s=1.0) as spec:
        spec.handshake()
        with pytest.raises(DeviceError, match="OUT_OF_RANGE"):
            spec._command(m.SetIntegration(10**6))
        assert spec.stats.nacks == 1


def test_stale_stream_is_flushed(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(rate_hz=100, faults=Faults(stale_stream=True))
    assert emu.wait_for(lambda s: s.spectra_sent >= 10, timeout_s=5)
    with Spectrometer.open(emu.port, timeout_s=1.0) as spec:
        spec.handshake()
        assert not emu.stats.streaming
        spec.configure(integration_ms=2)
        before = emu.stats.spectra_sent
        frames = spec.acquire(2)
        # Only the spectra we asked for: no STREAMED (old-session) frame leaks through.
        assert [f.seq for f in frames] == [before, before + 1]
        assert not any(f.flags & m.SpectrumFlag.STREAMED for f in frames)


def test_disconnect_and_reconnect_via_link(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    link = str(tmp_path / "ttyRAMAN0")
    emu = make_emulator(link=link, faults=Faults(disconnect_after=4, reconnect_after_s=0.3))
    first_pty = os.path.realpath(link)
    with Spectrometer.open(link, timeout_s=1.0) as spec:
        spec.handshake()
        spec.configure(integration_ms=2)
        seen: list[object] = []
        for item in spec.stream(period_ms=20, max_frames=8):
            seen.append(item)
        kinds = [type(x).__name__ for x in seen]
        assert "LinkDown" in kinds and "LinkUp" in kinds
        assert kinds.index("LinkDown") < kinds.index("LinkUp")
        assert sum(isinstance(x, m.SpectrumFrame) for x in seen) == 8
        assert spec.stats.reconnects == 1
    assert emu.stats.disconnects == 1
    assert os.path.realpath(link) != first_pty or emu.slave_path == first_pty
    assert any(isinstance(x, LinkDown) for x in seen) and any(isinstance(x, LinkUp) for x in seen)


def test_corrupt_garbage_and_drops_are_survived(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(seed=7, faults=Faults(corrupt_rate=0.2, garbage_rate=0.2, drop_rate=0.1))
    with Spectrometer.open(emu.port, timeout_s=0.5, retries=4) as spec:
        spec.handshake()
        spec.configure(integration_ms=2)
        frames = [x for x in spec.stream(period_ms=5, max_frames=40)]
    assert len(frames) == 40
    assert emu.stats.corrupted + emu.stats.garbage_bursts > 0
    assert spec.stats.corrupt_frames > 0
    assert spec.stats.dropped_seqs > 0


def test_line_mode_device(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(line_mode=True, rate_hz=50)
    with Spectrometer.open(emu.port, timeout_s=1.0) as spec:
        info = spec.handshake()
        assert spec.transport.codec.mode == "line"
        assert info.pixel_count == 1024 and info.serial_number == "EMU-0001"
        frames = spec.acquire(3)
        assert all(f.counts.size == 1024 for f in frames)
        with pytest.raises(DeviceError):
            spec.acquire_dark()


def test_probe_cli(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    emu = make_emulator()
    runner = CliRunner()
    ok = runner.invoke(app, ["probe", "--port", emu.port])
    assert ok.exit_code == 0, ok.output
    assert "EMU-0001" in ok.output and "785 nm" in ok.output
    missing = runner.invoke(app, ["probe", "--port", str(tmp_path / "nope")])
    assert missing.exit_code == 1
    assert "does not exist" in missing.output and "Traceback" not in missing.output


def test_probe_cli_silent_device(tmp_path: Path) -> None:
    master, slave = os.openpty()  # a port nobody answers on
    try:
        result = CliRunner().invoke(app, ["probe", "--port", os.ttyname(slave), "--timeout-s", "0.2"])
    finally:
        os.close(master)
        os.close(slave)
    assert result.exit_code == 1
    assert "does not answer" in result.output


def test_flushing_a_busy_port_is_not_a_disconnect() -> None:
    # tcflush between pyserial's select and its read makes the read come back empty, which
    # pyserial reports as "device reports readiness to read but returned no data"; CI once
    # failed a line-mode handshake on exactly that. The transport must not call it an unplug.
    import contextlib
    import threading
    import time
    import tty

    from firmware_bridge.transport import Transport

    master, slave = os.openpty()
    tty.setraw(slave)
    transport = Transport(os.ttyname(slave), reconnect=False)
    transport.start()
    stop = threading.Event()

    os.set_blocking(master, False)  # a reader that stopped must not block the device thread

    def device() -> None:
        while not stop.is_set():
            with contextlib.suppress(BlockingIOError):
                os.write(master, b"1,2,3,4\n")
            time.sleep(0.0005)

    writer = threading.Thread(target=device, daemon=True)
    writer.start()
    try:
        end = time.monotonic() + 3.0
        flushes = 0
        while time.monotonic() < end:
            transport.discard_input()
            flushes += 1
            time.sleep(0.0002)
    finally:
        stop.set()
        writer.join()
        transport.close()
        os.close(master)
        os.close(slave)
    assert flushes > 1000
    assert transport.link_downs == 0
