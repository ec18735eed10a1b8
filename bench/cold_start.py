"""Where the edge daemon's start-up time and memory go: import by import, in fresh processes.

    .venv/bin/python bench/cold_start.py [--quick] [--out bench/results] [--reps 5]

Each rep is a fresh `python -c` process that imports, in the daemon's order, the pieces of
`edge run` one at a time and records after each step the wall time since interpreter start
and VmRSS (from /proc/self/status), then loads the shipped bundle, builds the Analyzer and
analyses one emulated 1,360-pixel spectrum (the first result's compute). Medians over reps.
It also records whether tensorflow/keras/pybaselines/scipy.signal/scipy.ndimage were
imported (the first two must not be; the others left the edge in issue 14), and the largest
cumulative imports of `edge.daemon` from one `-X importtime` run.
The end-to-end number (daemon process start -> first result at a real MQTT subscriber,
handshake and dark frame included) is in throughput.json / soak.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import common

NAME = "cold_start"

STEPS = (
    "numpy",
    "sqlite3",
    "serial",
    "paho.mqtt.client",
    "jsonschema",
    "prometheus_client",
    "ai_edge_litert.interpreter",
    "edge.preprocess",
    "edge.pipeline",
    "edge.publisher",
    "edge.daemon",
)

PROBE = r"""
import time, sys, importlib, json
t0 = time.perf_counter()
MODS = ("tensorflow", "keras", "pybaselines", "scipy", "scipy.linalg", "scipy.signal", "scipy.ndimage",
        "scipy.optimize")
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
out = {"steps": []}
out["steps"].append(["interpreter", 0.0, rss_mb()])
for name in sys.argv[1].split(","):
    try:
        importlib.import_module(name)
    except ImportError as err:
        out["steps"].append([name + " (missing)", (time.perf_counter() - t0) * 1e3, rss_mb()])
        continue
    out["steps"].append([name, (time.perf_counter() - t0) * 1e3, rss_mb()])
import numpy as np
from edge.bundle import load_bundle
from edge.pipeline import Analyzer
from firmware_bridge.library import load_tray
from firmware_bridge.physics import InstrumentModel, simulate_counts
an = Analyzer(load_bundle())
out["steps"].append(["load_bundle + Analyzer", (time.perf_counter() - t0) * 1e3, rss_mb()])
model = InstrumentModel.default(pixels=1360, integration_ms=40, cosmic_rate=0.0)
spec = load_tray()[0]
rng = np.random.default_rng(0)
counts = simulate_counts(spec.shift_cm1, spec.intensity, model, rng)
dark = simulate_counts(spec.shift_cm1, spec.intensity, model, rng, dark=True)
shifts = an.shifts_for(model.reported_calibration_nm(), model.laser_nm, model.pixels)
a = an.analyze_counts(counts, shifts, dark=dark)
out["steps"].append(["first analysis (1,360 px)", (time.perf_counter() - t0) * 1e3, rss_mb()])
for _ in range(50):
    an.analyze_counts(counts, shifts, dark=dark)
out["steps"].append(["after 50 more analyses", (time.perf_counter() - t0) * 1e3, rss_mb()])
def hwm_mb():  # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork+exec (the parent's peak)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
out["peak_rss_mb_edge"] = hwm_mb()
out["modules"] = {m: m in sys.modules for m in MODS}
# For reference only: what SciPy would add (the edge no longer imports it without a library).
import scipy.linalg, scipy.optimize
out["steps"].append(["(reference) + scipy.linalg + scipy.optimize", (time.perf_counter() - t0) * 1e3, rss_mb()])
out["status"] = a.status
out["peak_rss_mb"] = hwm_mb()  # with the reference SciPy imports above
print(json.dumps(out))
"""


def importtime_top(module: str, min_ms: float = 10.0) -> list[tuple[str, float]]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=common.REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    top = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and int(parts[1]) >= min_ms * 1000:
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip()) - 1) // 2
            if depth <= 2:
                top.append(("  " * depth + name.strip(), int(parts[1]) / 1e3))
    return top


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    reps = 1 if args.quick else args.reps
    machine = common.machine_info()
    env = dict(os.environ, PYTHONPATH=str(common.REPO))
    runs: list[dict[str, Any]] = []
    for _ in range(reps):
        proc = subprocess.run(
            [sys.executable, "-c", PROBE, ",".join(STEPS)],
            cwd=common.REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    names = [s[0] for s in runs[0]["steps"]]
    steps = [
        {
            "step": n,
            "t_ms": statistics.median(r["steps"][i][1] for r in runs),
            "rss_mb": statistics.median(r["steps"][i][2] for r in runs),
        }
        for i, n in enumerate(names)
    ]
    top = importtime_top("edge.daemon")
    data = {
        "benchmark": NAME,
        "parameters": {"quick": args.quick, "reps": reps, "steps": STEPS},
        "machine": machine,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "steps": steps,
        "peak_rss_mb_median": statistics.median(r["peak_rss_mb_edge"] for r in runs),
        "modules": runs[0]["modules"],
        "status": runs[0]["status"],
        "importtime_edge_daemon_top_ms": top,
        "runs": runs,
    }
    rows = []
    prev_t, prev_rss = 0.0, steps[0]["rss_mb"]
    for s in steps:
        rows.append(
            [
                s["step"],
                f"{s['t_ms']:.0f}",
                f"{s['t_ms'] - prev_t:+.0f}",
                f"{s['rss_mb']:.1f}",
                f"{s['rss_mb'] - prev_rss:+.1f}",
            ]
        )
        prev_t, prev_rss = s["t_ms"], s["rss_mb"]
    md = "\n".join(
        [
            f"# Cold start and import footprint of the edge daemon (median of {reps} fresh processes)"
            + (" (--quick)" if args.quick else ""),
            "",
            common.md_table(["step (cumulative)", "ms since start", "step ms", "VmRSS MB", "step MB"], rows),
            "",
            f"Peak RSS (VmHWM) after the edge steps, before the SciPy reference row: "
            f"{data['peak_rss_mb_median']:.1f} MB; first analysis status {data['status']}. "
            f"Imported by then: {', '.join(f'{k} {v}' for k, v in data['modules'].items())}.",
            "",
            "Largest cumulative imports of `edge.daemon` (one `-X importtime` run, >= 10 ms, nested ones inside "
            "their parents): " + ", ".join(f"{n.strip()} {v:.0f} ms" for n, v in top[-25:]) + ".",
            "",
            f"Machine: {machine['cpu_model']}, nproc {machine['nproc']}, load at start {machine['loadavg_start']}, "
            f"end {data['loadavg_end']}; Python {machine['python']}; git {machine['git']}; {machine['date_utc']}.",
        ]
    )
    jpath, mpath = common.write_results(args.out, NAME, data, md)
    common.log(f"wrote {jpath}, {mpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
