"""Soak: `edge run` at a steady rate against a real Mosquitto, watching memory and disk.

    .venv/bin/python bench/soak.py [--quick] [--out bench/results] [--integration-ms 200] [--pixels 1024]
                                   [--duration 600] [--name soak]

Runs the emulator as its own process (`python -m firmware_bridge simulate`, as in
bench/throughput.py) and the daemon as a real subprocess (`python -m edge.cli run`,
integration `--integration-ms`, default 200 ms: 5 spectra/s; 2 ms is the issue-14 rate) for
`--duration` s (default 10 minutes; --quick: 60 s) and every 5 s samples its
VmRSS / VmHWM from /proc/PID/status, the outbox size (database + WAL + SHM) and the counts
sent / committed / delivered. Also measured: cold start (process start -> first result at
the subscriber) and whether TensorFlow is in the daemon's address space (from /proc/PID/maps,
without touching edge/: the daemon must run on the TFLite runtime alone).
Writes soak.json, soak.md and soak.png (RSS and outbox size over time).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as h
import common
import numpy as np
from throughput import EmulatorProcess, cpu_s

NAME = "soak"
INTEGRATION_MS = 200  # 5 spectra/s
SAMPLE_S = 5.0


def plot(samples: list[dict[str, Any]], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [s["t_s"] for s in samples]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.plot(t, [s["rss_kb"] / 1024 for s in samples], "-o", ms=3, label="VmRSS (MiB)", color="tab:blue")
    ax.plot(t, [s["hwm_kb"] / 1024 for s in samples], "--", lw=1, label="VmHWM (MiB)", color="tab:blue", alpha=0.6)
    ax.set_xlabel("seconds since daemon start")
    ax.set_ylabel("MiB")
    ax2 = ax.twinx()
    ax2.plot(
        t, [s["outbox_bytes"] / 1024 for s in samples], "-s", ms=3, color="tab:orange", label="outbox db+wal+shm (KiB)"
    )
    ax2.set_ylabel("KiB")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def count_light_frames(path: Path) -> int:
    """Non-dark spectra in the emulator's ground-truth log (one JSON line each)."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    return data.count(b"\n") - data.count(b'"dark": true')


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="60 s instead of 10 minutes")
    ap.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    ap.add_argument("--integration-ms", type=int, default=INTEGRATION_MS)
    ap.add_argument("--pixels", type=int, default=1024)
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--name", default=NAME, help="result file name (e.g. soak_2ms_1360)")
    args = ap.parse_args(argv)
    duration = 60.0 if args.quick else args.duration
    integration_ms = args.integration_ms
    machine = h.base_machine()
    t_start = time.monotonic()
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        d = Path(tmp)
        broker = h.Broker(d / "mosquitto")
        broker.start()
        sub = h.Subscriber(broker.port, "bench/soak/result")
        gt = d / "ground_truth.jsonl"
        emu = EmulatorProcess(args.pixels, d / "ttyRAMAN", gt, seed=11)
        outbox = d / "outbox.sqlite"
        run = h.spawn_daemon(
            port=str(emu.link), broker_url=broker.url, outbox=outbox, device_id="soak", integration_ms=integration_ms
        )
        try:
            pid = run.pid
            h.wait_until(lambda: sub.unique_ids() >= 1 or run.proc.poll() is not None, 120, 0.01)
            first = sub.snapshot()
            cold_start = first[0].t - run.started if first else None
            first_commit = run.first_commit_t - run.started if run.first_commit_t else None
            common.log(f"cold start {cold_start:.2f} s to the first delivered result" if cold_start else "no result")
            time.sleep(2.0)
            libs = h.mapped_libraries(pid)
            tf_libs = [x for x in libs if "tensorflow" in x.lower()]
            runtime_libs = [x for x in libs if "litert" in x.lower() or "tflite" in x.lower()]
            cpu0, n0, t_cpu0 = cpu_s(pid), sub.unique_ids(), time.monotonic()
            next_t = time.monotonic()  # sample from now on, every SAMPLE_S (no catch-up burst)
            while time.monotonic() - run.started < duration and run.proc.poll() is None:
                st = h.proc_status(pid)
                light = count_light_frames(gt)
                samples.append(
                    {
                        "t_s": round(time.monotonic() - run.started, 2),
                        "rss_kb": st.get("VmRSS", 0),
                        "hwm_kb": st.get("VmHWM", 0),
                        "threads": st.get("Threads", 0),
                        "outbox_bytes": h.file_size(outbox),
                        "outbox_db_bytes": outbox.stat().st_size if outbox.exists() else 0,
                        "outbox_wal_bytes": Path(f"{outbox}-wal").stat().st_size
                        if Path(f"{outbox}-wal").exists()
                        else 0,
                        "sent": light,
                        "committed": len(run.committed),
                        "delivered": sub.unique_ids(),
                    }
                )
                if len(samples) % 12 == 0:
                    s = samples[-1]
                    common.log(
                        f"t={s['t_s']:.0f}s rss={s['rss_kb'] / 1024:.1f} MiB outbox={s['outbox_bytes'] / 1024:.0f} KiB "
                        f"delivered={s['delivered']}"
                    )
                next_t += SAMPLE_S
                time.sleep(max(0.0, next_t - time.monotonic()))
            final = h.proc_status(pid)
            cpu1, n1, t_cpu1 = cpu_s(pid), sub.unique_ids(), time.monotonic()
            rc = run.terminate(90)
            emu.stop()
            committed = set(run.committed)
            h.wait_until(lambda: committed <= {x.seq for x in sub.snapshot()}, 15, 0.1)
            deliveries = sub.snapshot()
            light_frames = [f["seq"] for f in emu.frames() if not f.get("dark")]
        finally:
            run.kill()
            emu.stop()
            sub.close()
            broker.stop()
    result_frames = {x.frame_seq for x in deliveries if x.frame_seq is not None}
    first_frame = min(result_frames) if result_frames else 0
    last = max(result_frames) if result_frames else -1
    missing = [q for q in light_frames if first_frame <= q <= last and q not in result_frames]
    rss = np.array([s["rss_kb"] for s in samples if s["rss_kb"]], dtype=float) / 1024
    ts = np.array([s["t_s"] for s in samples if s["rss_kb"]], dtype=float)
    half = ts >= ts[len(ts) // 2] if len(ts) else ts
    slope = float(np.polyfit(ts[half], rss[half], 1)[0] * 3600) if half.sum() >= 3 else None
    summary = {
        "duration_s": duration,
        "cold_start_to_first_delivered_s": cold_start,
        "cold_start_to_first_committed_s": first_commit,
        "rss_start_mib": float(rss[0]) if rss.size else None,
        "rss_end_mib": float(rss[-1]) if rss.size else None,
        "rss_max_mib": float(rss.max()) if rss.size else None,
        "rss_growth_mib": float(rss[-1] - rss[0]) if rss.size else None,
        "rss_slope_second_half_mib_per_h": slope,
        "peak_rss_vmhwm_mib": final.get("VmHWM", 0) / 1024 if final else None,
        "outbox_bytes_start": samples[0]["outbox_bytes"] if samples else None,
        "outbox_bytes_end": samples[-1]["outbox_bytes"] if samples else None,
        "outbox_bytes_max": max(s["outbox_bytes"] for s in samples) if samples else None,
        "sent": len([q for q in light_frames if first_frame <= q <= last]),
        "daemon_cpu_ms_per_result": (cpu1 - cpu0) * 1e3 / max(n1 - n0, 1) if cpu0 is not None and cpu1 else None,
        "daemon_cpu_share": (cpu1 - cpu0) / (t_cpu1 - t_cpu0) if cpu0 is not None and cpu1 else None,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "committed": len(run.committed),
        "delivered_unique": len({x.id for x in deliveries}),
        "deliveries": len(deliveries),
        "committed_lost": len(set(run.committed) - {x.seq for x in deliveries}),
        "frames_missing": len(missing),
        "emulator_tx_overflow": emu.summary.get("tx_overflow"),
        "exit_code": rc,
        "tensorflow_mapped": tf_libs,
        "tflite_runtime_mapped": runtime_libs,
        "threads": final.get("Threads") if final else None,
    }
    png = args.out / f"{args.name}.png"
    args.out.mkdir(parents=True, exist_ok=True)
    plotted = plot(
        samples, png, f"edge run at {1000 // integration_ms} spectra/s, {args.pixels} px, for {duration:g} s"
    )
    data = {
        "benchmark": NAME,
        "parameters": {
            "quick": args.quick,
            "duration_s": duration,
            "integration_ms": integration_ms,
            "rate_hz": 1000 / integration_ms,
            "pixels": args.pixels,
            "emulator": "separate process: python -m firmware_bridge simulate",
            "sample_s": SAMPLE_S,
        },
        "machine": machine,
        "summary": summary,
        "samples": samples,
        "elapsed_s": time.monotonic() - t_start,
    }
    s = summary

    def mib(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    every = max(1, len(samples) // 12)
    table_samples = samples[::every] + ([samples[-1]] if samples and (len(samples) - 1) % every else [])
    md = "\n".join(
        [
            f"# Soak: `edge run` at {1000 // integration_ms} spectra/s, {args.pixels} px, for {duration:g} s"
            + (" (--quick)" if args.quick else ""),
            "",
            common.md_table(
                ["metric", "value"],
                [
                    [
                        "cold start: process start -> first result delivered",
                        f"{cold_start:.2f} s" if cold_start else "-",
                    ],
                    [
                        "cold start: process start -> first result committed (stdout)",
                        f"{first_commit:.2f} s" if first_commit else "-",
                    ],
                    [
                        "RSS start / end / max (MiB)",
                        f"{mib(s['rss_start_mib'])} / {mib(s['rss_end_mib'])} / {mib(s['rss_max_mib'])}",
                    ],
                    ["RSS growth start -> end (MiB)", mib(s["rss_growth_mib"])],
                    ["RSS slope over the second half (MiB/h)", mib(s["rss_slope_second_half_mib_per_h"])],
                    ["peak RSS (VmHWM, MiB)", mib(s["peak_rss_vmhwm_mib"])],
                    [
                        "outbox db+wal+shm start / end / max (KiB)",
                        " / ".join(
                            f"{(s[k] or 0) / 1024:.0f}"
                            for k in ("outbox_bytes_start", "outbox_bytes_end", "outbox_bytes_max")
                        ),
                    ],
                    [
                        "spectra sent / results committed / delivered (unique) / deliveries",
                        f"{s['sent']} / {s['committed']} / {s['delivered_unique']} / {s['deliveries']}",
                    ],
                    ["committed but not delivered", s["committed_lost"]],
                    ["sent frames without a result", s["frames_missing"]],
                    [
                        "daemon CPU ms per result / CPU share",
                        f"{s['daemon_cpu_ms_per_result']:.2f} / {s['daemon_cpu_share']:.2f}"
                        if s["daemon_cpu_ms_per_result"] is not None
                        else "-",
                    ],
                    ["load average at end", s["loadavg_end"]],
                    ["exit code after SIGTERM", s["exit_code"]],
                    [
                        "TensorFlow libraries mapped in the daemon",
                        ", ".join(Path(x).name for x in s["tensorflow_mapped"]) or "none",
                    ],
                    [
                        "TFLite runtime libraries mapped",
                        ", ".join(Path(x).name for x in s["tflite_runtime_mapped"]) or "none",
                    ],
                ],
                "lr",
            ),
            "",
            "Samples (every 5 s; subset):",
            "",
            common.md_table(
                [
                    "t s",
                    "VmRSS MiB",
                    "VmHWM MiB",
                    "threads",
                    "outbox KiB",
                    "of which WAL",
                    "sent",
                    "committed",
                    "delivered",
                ],
                [
                    [
                        f"{x['t_s']:.0f}",
                        f"{x['rss_kb'] / 1024:.1f}",
                        f"{x['hwm_kb'] / 1024:.1f}",
                        x["threads"],
                        f"{x['outbox_bytes'] / 1024:.0f}",
                        f"{x['outbox_wal_bytes'] / 1024:.0f}",
                        x["sent"],
                        x["committed"],
                        x["delivered"],
                    ]
                    for x in table_samples
                ],
            ),
            "",
            (f"![RSS and outbox size over time]({png.name})" if plotted else "(matplotlib missing: no plot)"),
            "",
            "TensorFlow check: /proc/PID/maps of the running daemon, 2 s after its first result, searched for "
            "'tensorflow'; runtime libraries matched on 'litert'/'tflite'.",
            "",
            f"Total run time {data['elapsed_s']:.0f} s. " + h.machine_md(machine),
        ]
    )
    jpath, mpath = common.write_results(args.out, args.name, data, md)
    common.log(f"wrote {jpath}, {mpath}{', ' + str(png) if plotted else ''} in {data['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
