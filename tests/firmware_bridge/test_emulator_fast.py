"""The fast emulator path: same physics as before, exposures back to back at the period,
and a COBS encoder equal to the byte-by-byte definition."""

from __future__ import annotations

import os
import time
import tty

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import messages as m
from firmware_bridge.codec import Codec
from firmware_bridge.emulator import MAX_CATCH_UP, Emulator, EmulatorConfig
from firmware_bridge.library import load_tray
from firmware_bridge.physics import InstrumentModel, fluorescence_background, raman_on_pixels, simulate_counts
from firmware_bridge.wire import cobs_encode


def cobs_reference(data: bytes) -> bytes:
    """COBS as the spec describes it, one byte at a time."""
    out, block = bytearray(), bytearray()
    for byte in data:
        if byte == 0:
            out += bytes([len(block) + 1]) + block
            block.clear()
        else:
            block.append(byte)
            if len(block) == 254:
                out += b"\xff" + block
                block.clear()
    return bytes(out + bytes([len(block) + 1]) + block)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"\x00", b"\x01", b"\x01" * 253, b"\x02" * 254, b"\x03" * 255, b"ab"]), max_size=12))
def test_cobs_encode_equals_the_byte_by_byte_definition(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert cobs_encode(data) == cobs_reference(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000))
def test_cobs_encode_equals_the_definition_on_random_bytes(data: bytes) -> None:
    assert cobs_encode(data) == cobs_reference(data)


def test_precomputed_clean_signal_gives_the_same_counts() -> None:
    spec = load_tray()[0]
    model = InstrumentModel.default(pixels=1360, integration_ms=2, sample_brightness_spread=4.0)
    raman = raman_on_pixels(spec.shift_cm1, spec.intensity, model)
    a = simulate_counts(spec.shift_cm1, spec.intensity, model, np.random.default_rng(5))
    b = simulate_counts(spec.shift_cm1, spec.intensity, model, np.random.default_rng(5), raman=raman)
    np.testing.assert_array_equal(a, b)


def test_emulator_frames_equal_the_forward_model() -> None:
    # The emulator's caches (clean signal per sample, model per exposure) change nothing:
    # replaying its random stream through simulate_counts gives the same counts.
    cfg = EmulatorConfig(pixels=1360, seed=3, minerals=None)
    emu = Emulator(cfg, library=load_tray())
    emu.session.laser_on = True
    rng = np.random.default_rng(3)
    sent: list[np.ndarray] = []
    emu._send = lambda msg, faults=False: sent.append(msg.counts)  # type: ignore[assignment,method-assign]
    for _ in range(3):
        emu._send_spectrum(dark=False, streamed=True)
    minerals = list(emu._by_mineral)
    for counts in sent:
        mineral = minerals[int(rng.integers(len(minerals)))]
        choices = emu._by_mineral[mineral]
        sample = choices[int(rng.integers(len(choices)))]
        fluo = fluorescence_background(emu.model, rng)
        expected = simulate_counts(sample.shift_cm1, sample.intensity, emu.model, rng, fluorescence=fluo)
        np.testing.assert_array_equal(counts, expected)


def test_a_late_loop_turn_sends_what_came_due_then_skips_ahead() -> None:
    emu = Emulator(EmulatorConfig(pixels=256), library=load_tray()[:2])
    emu.session.laser_on = True
    emu.session.stream_period_s = 0.001
    now = time.monotonic()
    emu.session.next_stream_s = now - 0.0035  # 4 exposures came due while the loop was away
    emu._tick(now)
    assert emu.stats.spectra_sent == 4
    emu.session.next_stream_s = now - 1.0  # far behind: at most MAX_CATCH_UP, then the time base resets
    emu._tick(now)
    assert emu.stats.spectra_sent == 4 + MAX_CATCH_UP
    assert emu.session.next_stream_s >= now


def test_fast_stream_over_a_pty_arrives_in_order() -> None:
    emu = Emulator(EmulatorConfig(pixels=1360), library=load_tray())
    port = emu.start()
    fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
    try:
        tty.setraw(fd)
        codec = Codec("binary")
        for msg in (m.SetIntegration(1), m.Laser(True), m.StreamStart(1)):
            os.write(fd, codec.encode(msg))
        seqs: list[int] = []
        deadline = time.monotonic() + 30
        while len(seqs) < 200 and time.monotonic() < deadline:
            codec.feed(os.read(fd, 1 << 16))
            while (ev := codec.next_event()) is not None:
                if isinstance(ev, m.SpectrumFrame):
                    assert ev.counts.size == 1360
                    seqs.append(ev.seq)
        assert len(seqs) >= 200
        assert seqs == sorted(seqs)
    finally:
        os.close(fd)
        emu.stop()
