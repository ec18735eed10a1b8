"""Sustained throughput of the whole chain: pty emulator -> `edge run` -> Mosquitto -> subscriber.

    .venv/bin/python bench/throughput.py [--quick] [--out bench/results]

Phase "max": the daemon asks the emulator to stream every 1 ms (integration 1 ms; the
emulator's floor is 1 ms, `max(period, exposure)`), far faster than the daemon can analyse,
so the emulator's 64 KiB transmit buffer overflows and it drops spectra, as a real device's
USB buffer would. We measure results/s delivered to the subscriber and check that every
result the daemon committed arrived (outbox seqs gapless) — the device-side drops are counted
separately from frame seq gaps.

Phase "zero-loss": the stream period is set to 1.25x the measured per-result time of the max
phase, and we check that no spectrum is lost anywhere (no frame seq gap, no overflow), which
gives the highest rate shown to be loss-free on this machine.

The rates are compared with what a USB full-speed CDC link could carry (12 Mbit/s raw,
about 1 MB/s usable for bulk transfers), for the emulator's 1,024-pixel frame and for a
1,360-pixel uint16 frame, both sized by the real codec (COBS and delimiters included).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as h
import common
import numpy as np

from firmware_bridge import messages as m
from firmware_bridge.codec import Codec
from firmware_bridge.emulator import EmulatorConfig

NAME = "throughput"
USB_FS_RAW_BPS = 12_000_000 / 8  # bytes/s, signalling rate: an upper bound never reached
USB_FS_CDC_BPS = 1_000_000  # bytes/s, typical usable bulk throughput of a CDC-ACM link


def frame_bytes(pixels: int, kind: str) -> int:
    """Encoded SPECTRUM frame size for `pixels` uint16 counts.

    kind "typical": counts like a real spectrum (a few hundred to tens of thousands), whose
    little-endian bytes contain some zeros; "worst": no zero byte at all, the largest COBS
    overhead (one extra byte per 254)."""
    rng = np.random.default_rng(0)
    if kind == "typical":
        counts = rng.normal(3000, 800, pixels).clip(0, 65535).astype(np.uint16)
        counts[::97] += 20000  # a few peaks
    else:
        counts = np.full(pixels, 0x0101, dtype=np.uint16)
    frame = m.SpectrumFrame(
        seq=123456, timestamp_ms=987654, integration_ms=100, averages=1, flags=0x0018, counts=counts
    )
    return len(Codec("binary").encode(frame))


def measure(pixels: int, period_ms: int, duration_s: float, warm_s: float, tmp: Path, tag: str) -> dict[str, Any]:
    d = tmp / tag
    broker = h.Broker(d / "mosquitto")
    broker.start()
    sub = h.Subscriber(broker.port, f"bench/tp-{tag}/result")
    emu = h.TracingEmulator(EmulatorConfig(seed=7, pixels=pixels, link=str(d / "ttyRAMAN")))
    emu.start()
    run = None
    try:
        run = h.spawn_daemon(
            port=emu.port,
            broker_url=broker.url,
            outbox=d / "outbox.sqlite",
            device_id=f"tp-{tag}",
            prefix="bench",
            integration_ms=period_ms,
            drain_timeout_s=60,
        )
        if not h.wait_until(lambda: sub.unique_ids() >= 1, 90, 0.05):
            raise RuntimeError(f"no result within 90 s: {run.tail(5)}")
        time.sleep(warm_s)
        t0 = time.monotonic()
        n0 = len(emu.frames)
        time.sleep(duration_s)
        t1 = time.monotonic()
        n1 = len(emu.frames)
        rc = run.terminate(120)
        emu.stop()
        committed = dict(run.committed)
        h.wait_until(lambda: set(committed) <= {x.seq for x in sub.snapshot()}, 15, 0.1)
        deliveries = sub.snapshot()
    finally:
        if run is not None:
            run.kill()
        emu.stop()
        sub.close()
        broker.stop()
    window = [x for x in deliveries if t0 <= x.t < t1]
    seqs = sorted({x.seq for x in deliveries})
    outbox_gaps = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
    result_frames = sorted({x.frame_seq for x in deliveries if x.frame_seq is not None})
    light = [f for f in emu.frames if not f.dark and f.streamed and not f.stale]
    lo, hi = (result_frames[0], result_frames[-1]) if result_frames else (0, -1)
    in_range = [f for f in light if lo <= f.seq <= hi]
    missing = [f for f in in_range if f.seq not in set(result_frames)]
    gen_window = n1 - n0
    delivered_rate = len(window) / (t1 - t0)
    return {
        "pixels": pixels,
        "period_ms": period_ms,
        "duration_s": round(t1 - t0, 2),
        "delivered_in_window": len(window),
        "delivered_per_s": delivered_rate,
        "emulator_generated_per_s": gen_window / (t1 - t0),
        "committed": len(committed),
        "delivered_unique": len({x.id for x in deliveries}),
        "duplicated": len(deliveries) - len({x.id for x in deliveries}),
        "committed_lost": len(set(committed) - set(seqs)),
        "outbox_seq_gaps": outbox_gaps,
        "frames_in_range": len(in_range),
        "frames_missing": len(missing),
        "frames_missing_tx_overflow": sum(f.overflow for f in missing),
        "emulator_tx_overflow": emu.stats.tx_overflow,
        "zero_loss": not missing and outbox_gaps == 0 and not (set(committed) - set(seqs)),
        "exit_code": rc,
        "daemon_tail": run.tail(2),
    }


def markdown(data: dict[str, Any]) -> str:
    p = data["parameters"]
    rows = []
    for r in data["runs"]:
        rows.append(
            [
                r["phase"],
                r["pixels"],
                r["period_ms"],
                f"{r['emulator_generated_per_s']:.1f}",
                f"{r['delivered_per_s']:.2f}",
                r["delivered_in_window"],
                r["committed_lost"],
                r["outbox_seq_gaps"],
                f"{r['frames_missing']} / {r['frames_in_range']}",
                "yes" if r["zero_loss"] else "no",
                r["exit_code"],
            ]
        )
    link_rows = []
    for lk in data["link"]:
        link_rows.append(
            [
                f"{lk['pixels']} px ({lk['kind']})",
                lk["frame_bytes"],
                f"{lk['usb_cdc_spectra_per_s']:.0f}",
                f"{lk['usb_raw_spectra_per_s']:.0f}",
                f"{lk['zero_loss_rate_vs_cdc']:.4f}" if lk["zero_loss_rate_vs_cdc"] is not None else "-",
                f"{lk['max_rate_vs_cdc']:.4f}",
            ]
        )
    zl = data["zero_loss_rate"]
    lagging = [
        r for r in data["runs"] if r["zero_loss"] and r["emulator_generated_per_s"] < 0.95 * 1000.0 / r["period_ms"]
    ]
    lag_note = (
        f" (a lower bound: at a {lagging[0]['period_ms']} ms period the emulator itself generated only "
        f"{lagging[0]['emulator_generated_per_s']:.1f} of the {1000.0 / lagging[0]['period_ms']:.1f} spectra/s asked, "
        "and every one of them became a delivered result)"
        if lagging
        else ""
    )
    return "\n".join(
        [
            "# Throughput: emulator (pty) -> `edge run` -> Mosquitto -> subscriber"
            + (" (--quick)" if p["quick"] else ""),
            "",
            common.md_table(
                [
                    "phase",
                    "pixels",
                    "period ms",
                    "generated/s",
                    "delivered/s",
                    "delivered",
                    "committed lost",
                    "outbox seq gaps",
                    "frames missing / in range",
                    "zero loss",
                    "exit",
                ],
                rows,
            ),
            "",
            f"Highest rate shown loss-free end to end: **{zl:.2f} spectra/s**{lag_note}"
            if zl
            else "No loss-free run: see the table.",
            "",
            "USB full-speed CDC line rate for one spectrum frame "
            "(sizes from the real codec: header, CRC, COBS, delimiters):",
            "",
            common.md_table(
                [
                    "frame",
                    "bytes",
                    "spectra/s at ~1 MB/s CDC",
                    "at 12 Mbit/s raw",
                    "zero-loss rate / CDC",
                    "max-phase rate / CDC",
                ],
                link_rows,
            ),
            "",
            f"- Measured over {p['duration_s']} s after {p['warm_s']} s warm-up "
            "(window counted by subscriber arrival time). "
            "generated/s: spectra the emulator produced "
            "(in the max phase most are dropped by its 64 KiB transmit buffer "
            "because the daemon reads slower). frames missing: light frames between the first and last that became a "
            "result, with no result.",
            link_note(data),
            "",
            f"Total run time {data['elapsed_s']:.0f} s. " + h.machine_md(data["machine"]),
        ]
    )


def link_note(data: dict[str, Any]) -> str:
    """Which side limits the rate, from the measured numbers (not a fixed sentence)."""
    cdc = data["link"][0]["usb_cdc_spectra_per_s"]
    best = max((r["delivered_per_s"] for r in data["runs"]), default=0.0)
    if not best:
        return "- No spectra were delivered: see the table."
    ratio = cdc / best
    if ratio >= 1.2:
        return (
            f"- The link is not the bottleneck: a USB full-speed CDC link carries {ratio:.1f}x the most this chain "
            f"delivered ({best:.0f}/s). The limit is on the host: the daemon's per-spectrum work (preprocess, int8 "
            "classifier, peak deconvolution, one fsync'd outbox commit per result) and, in this benchmark, the "
            "emulator's spectrum synthesis in the benchmark process, on a shared 2-core machine (load below)."
        )
    return (
        f"- The chain delivered {best:.0f}/s, {1 / ratio:.2f}x what a USB full-speed CDC link carries: at this "
        "rate the serial link is the limit, not the host."
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 s per phase (finishes in < 2 minutes)")
    ap.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    args = ap.parse_args(argv)
    duration = 10.0 if args.quick else 60.0
    warm = 3.0 if args.quick else 5.0
    machine = h.base_machine()
    t_start = time.monotonic()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-tp-") as tmp:
        common.log(f"max phase: 1 ms stream period, {duration:g} s")
        r = measure(1024, 1, duration, warm, Path(tmp), "max")
        r["phase"] = "max (1 ms period)"
        runs.append(r)
        common.log(
            f"  delivered {r['delivered_per_s']:.2f}/s, generated {r['emulator_generated_per_s']:.1f}/s, "
            f"lost committed {r['committed_lost']}"
        )
        period = max(1, math.ceil(1.25 * 1000.0 / max(r["delivered_per_s"], 0.1)))
        common.log(f"zero-loss phase: {period} ms period, {duration:g} s")
        z = measure(1024, period, duration, warm, Path(tmp), "zl")
        z["phase"] = f"zero-loss ({period} ms period)"
        runs.append(z)
        common.log(
            f"  delivered {z['delivered_per_s']:.2f}/s, missing frames {z['frames_missing']}, "
            f"zero loss {z['zero_loss']}"
        )
    zero_loss_rate = max((x["delivered_per_s"] for x in runs if x["zero_loss"]), default=None)
    link = []
    for pixels in (1024, 1360):
        for kind in ("typical", "worst"):
            nbytes = frame_bytes(pixels, kind)
            cdc = USB_FS_CDC_BPS / nbytes
            link.append(
                {
                    "pixels": pixels,
                    "kind": kind,
                    "frame_bytes": nbytes,
                    "usb_cdc_spectra_per_s": cdc,
                    "usb_raw_spectra_per_s": USB_FS_RAW_BPS / nbytes,
                    "zero_loss_rate_vs_cdc": zero_loss_rate / cdc if zero_loss_rate else None,
                    "max_rate_vs_cdc": runs[0]["delivered_per_s"] / cdc,
                }
            )
    data = {
        "benchmark": NAME,
        "parameters": {
            "quick": args.quick,
            "duration_s": duration,
            "warm_s": warm,
            "usb_cdc_bytes_per_s": USB_FS_CDC_BPS,
            "usb_raw_bytes_per_s": USB_FS_RAW_BPS,
        },
        "machine": machine,
        "runs": runs,
        "zero_loss_rate": zero_loss_rate,
        "link": link,
        "elapsed_s": time.monotonic() - t_start,
    }
    jpath, mpath = common.write_results(args.out, NAME, data, markdown(data))
    common.log(f"wrote {jpath} and {mpath} in {data['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
