"""How fast the emulator serves frames from its own process: `firmware_bridge simulate` on a pty.

    .venv/bin/python bench/emulator_rate.py [--quick] [--out bench/results] [--pixels 1360] [--seconds 20]

The emulator runs as `python -m firmware_bridge simulate --pixels N --link L` (a separate
process, as in the throughput benchmark); this process is the host: a minimal reader on the
raw pty with the real `Codec` (SetIntegration 1 ms, Laser on, StreamStart 1 ms: the
emulator's floor; a Ping every second for the laser watchdog) that decodes every frame and
counts SPECTRUM frames and their seq gaps. The emulator's own summary line
(spectra sent, transmit-buffer overflows) and its CPU time (/proc/PID/stat) are recorded.
The host's decoding is in the loop, so the rate is a lower bound of what the emulator
itself can generate. Goal (issue 14): >= 1,000 frames/s of 1,360 pixels.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path
from typing import Any

import common

common.ensure_repo_on_path()

from firmware_bridge import messages as m  # noqa: E402
from firmware_bridge.codec import Codec  # noqa: E402

NAME = "emulator_rate"


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(pixels: int, seconds: float, tmp: Path) -> dict[str, Any]:
    link = tmp / f"tty{pixels}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge", "simulate", "--pixels", str(pixels), "--link", str(link)],
        cwd=common.REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not link.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"emulator did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.05)
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        try:
            tty.setraw(fd)
            codec = Codec("binary")
            for msg in (m.SetIntegration(1), m.Laser(True), m.StreamStart(1)):
                os.write(fd, codec.encode(msg))
            n = gaps = 0
            last: int | None = None
            t0 = c0 = end = last_ping = 0.0
            while True:
                data = os.read(fd, 1 << 16)
                codec.feed(data)
                now = time.monotonic()
                while (ev := codec.next_event()) is not None:
                    if not isinstance(ev, m.SpectrumFrame):
                        continue
                    if last is None:  # first frame: start the clock (start-up is not the rate)
                        t0, c0, end, last_ping = now, cpu_s(proc.pid), now + seconds, now
                    else:
                        n += 1
                        gaps += max(0, ev.seq - last - 1)
                    last = ev.seq
                if last is not None and now - last_ping > 1.0:
                    os.write(fd, codec.encode(m.Ping()))  # feeds the laser watchdog
                    last_ping = now
                if last is not None and now >= end:
                    break
            t1 = time.monotonic()
            c1 = cpu_s(proc.pid)
            os.write(fd, codec.encode(m.StreamStop()))
        finally:
            os.close(fd)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    summary = re.search(r"sent (\d+) spectra.*tx_overflow (\d+)", err or "")
    return {
        "pixels": pixels,
        "seconds": round(t1 - t0, 2),
        "frames_received": n,
        "frames_per_s": n / (t1 - t0),
        "seq_gaps": gaps,
        "emulator_cpu_s": round(c1 - c0, 2),
        "emulator_cpu_ms_per_frame": (c1 - c0) * 1e3 / max(n, 1),
        "emulator_spectra_sent_total": int(summary.group(1)) if summary else None,
        "emulator_tx_overflow_total": int(summary.group(2)) if summary else None,
    }


def markdown(data: dict[str, Any]) -> str:
    rows = [
        [
            r["pixels"],
            r["seconds"],
            r["frames_received"],
            f"{r['frames_per_s']:.0f}",
            r["seq_gaps"],
            f"{r['emulator_cpu_ms_per_frame']:.3f}",
            r["emulator_tx_overflow_total"],
        ]
        for r in data["runs"]
    ]
    mach = data["machine"]
    return "\n".join(
        [
            "# Emulator frame rate from its own process (`firmware_bridge simulate` on a pty)"
            + (" (--quick)" if data["parameters"]["quick"] else ""),
            "",
            common.md_table(
                ["pixels", "s", "frames received", "frames/s", "seq gaps", "emulator CPU ms/frame", "tx overflow"],
                rows,
            ),
            "",
            "Host: this process, a raw pty reader decoding every frame with the real Codec, "
            "integration and period 1 ms. "
            "seq gaps: frames the emulator generated that the host did not receive (tx buffer full). "
            "Goal: >= 1,000 frames/s of 1,360 pixels.",
            "",
            f"Machine: {mach['cpu_model']}, nproc {mach['nproc']}, load at start {mach['loadavg_start']}, "
            f"at end {data['loadavg_end']}; Python {mach['python']}; git {mach['git']}; {mach['date_utc']}.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    ap.add_argument("--pixels", default="1024,1360")
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args(argv)
    seconds = 3.0 if args.quick else args.seconds
    machine = common.machine_info()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-emu-") as tmp:
        for px in (int(x) for x in args.pixels.split(",")):
            r = measure(px, seconds, Path(tmp))
            common.log(f"{px} px: {r['frames_per_s']:.0f} frames/s, gaps {r['seq_gaps']}")
            runs.append(r)
    data = {
        "benchmark": NAME,
        "parameters": {"quick": args.quick, "seconds": seconds},
        "machine": machine,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "runs": runs,
    }
    jpath, mpath = common.write_results(args.out, NAME, data, markdown(data))
    common.log(f"wrote {jpath} and {mpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
