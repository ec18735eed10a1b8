"""Auto-exposure vs fixed exposures on samples whose brightness varies 30x.

The real daemon (`edge.daemon.run`, in-process) on the pty emulator, results through the
real Mosquitto (127.0.0.1:1883 unless --broker). The emulator's physics scales each library
spectrum's signal by a factor fixed per spectrum, log-uniform over 30x
(`InstrumentModel.sample_brightness_spread = 30`); a spot stays under the probe for `--hold`
spectra (`EmulatorConfig.hold`). For each mode the same seed and the same count of spectra:

* fixed 100 ms x 1 (the daemon's --simulate setting, right for a median sample),
* fixed 20 ms x 1 (short enough for the brightest samples),
* auto-exposure (edge/exposure.py; target SNR 20, brightest pixel <= 60 % of full scale,
  max_acquisition_ms 5000).

Reported per mode: share rejected as `saturated` and as `low_snr`, other rejections, top-1
accuracy of the classified spectra against the emulator's ground truth, mean exposure time
per spectrum (probes included) and the wall time. Results are read from the daemon's history
of acknowledged results (what the broker accepted), joined to the ground truth by frame_seq.

    .venv/bin/python bench/auto_exposure.py --count 150
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OUT, ensure_repo_on_path, log, machine_info, md_table, write_results  # noqa: E402

ensure_repo_on_path()

from edge.config import load_config  # noqa: E402
from edge.daemon import run  # noqa: E402
from edge.history import history_path_for  # noqa: E402
from edge.result import Result  # noqa: E402
from firmware_bridge.emulator import Emulator, EmulatorConfig  # noqa: E402
from firmware_bridge.physics import InstrumentModel, _sample_brightness  # noqa: E402

MODES: dict[str, dict[str, Any]] = {
    "fixed 100 ms": {"integration_ms": 100, "auto_exposure": False},
    "fixed 20 ms": {"integration_ms": 20, "auto_exposure": False},
    "auto-exposure": {"integration_ms": 100, "auto_exposure": True},
}


def results_from_history(outbox: Path) -> list[Result]:
    con = sqlite3.connect(history_path_for(outbox))
    try:
        rows = con.execute("SELECT payload FROM history ORDER BY seq").fetchall()
    finally:
        con.close()
    return [Result.from_json(bytes(r[0])) for r in rows]


def run_mode(name: str, settings: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    model = InstrumentModel(sample_brightness_spread=args.spread, fluorescence_ratio=args.fluorescence)
    emu = Emulator(EmulatorConfig(seed=args.seed, hold=args.hold, model=model))
    port = emu.start()
    outbox = work / f"{name.replace(' ', '_')}.sqlite"
    cfg = load_config(
        None,
        env={},
        overrides={
            "port": port,
            "broker": args.broker,
            "device_id": f"bench-ae-{os.getpid()}",
            "prefix": "bench",
            "outbox_path": outbox,
            "count": args.count,
            "allow_requests": (),
            "log_level": "warning",
            **settings,
        },
    )
    t0 = time.monotonic()
    with open(os.devnull, "w") as devnull:
        rc = run(cfg, out=devnull)
    wall_s = time.monotonic() - t0
    truth = {g.seq: g for g in emu.ground_truth}
    library = {s.file: s for s in emu._library}  # noqa: SLF001 - the bench needs each spectrum's brightness
    emu.stop()
    results = results_from_history(outbox)
    n = len(results)
    reasons: dict[str, int] = {}
    correct = ok = 0
    bright: list[float] = []
    exposure_ms: list[float] = []
    by_brightness: dict[str, list[int]] = {"dim (< 0.5x)": [0, 0], "middle": [0, 0], "bright (> 2x)": [0, 0]}
    for r in results:
        gt = truth.get(r.instrument.frame_seq) if r.instrument.frame_seq is not None else None
        b = None
        if gt is not None and gt.file in library:
            b = _sample_brightness(library[gt.file].intensity, args.spread)
            bright.append(b)
        exposure_ms.append(r.instrument.integration_ms * (r.instrument.averages or 1))
        if r.status == "ok":
            ok += 1
            correct += gt is not None and r.top[0].mineral == gt.mineral
        else:
            key = (r.reason or "").split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        if b is not None:
            band = "dim (< 0.5x)" if b < 0.5 else "bright (> 2x)" if b > 2.0 else "middle"
            by_brightness[band][0] += 1
            by_brightness[band][1] += r.status != "ok"
    return {
        "mode": name,
        "settings": settings,
        "rc": rc,
        "spectra": n,
        "rejected_saturated": reasons.get("saturated", 0) / max(n, 1),
        "rejected_low_snr": reasons.get("low_snr", 0) / max(n, 1),
        "rejected_other": sum(v for k, v in reasons.items() if k not in ("saturated", "low_snr")) / max(n, 1),
        "reasons": reasons,
        "classified": ok,
        "top1_of_classified": correct / max(ok, 1),
        "top1_of_all": correct / max(n, 1),
        "mean_exposure_ms": sum(exposure_ms) / max(len(exposure_ms), 1),
        "wall_s_per_spectrum": wall_s / max(n, 1),
        "brightness_min": min(bright) if bright else None,
        "brightness_max": max(bright) if bright else None,
        "rejected_by_brightness": {k: {"spectra": v[0], "rejected": v[1]} for k, v in by_brightness.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=150)
    ap.add_argument("--spread", type=float, default=30.0)
    ap.add_argument("--hold", type=int, default=4)
    ap.add_argument("--fluorescence", type=float, default=8.0, help="fluorescence peak / strongest band")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, settings in MODES.items():
            log(f"{name}: {args.count} spectra")
            rows.append(run_mode(name, settings, args, Path(tmp)))
            r = rows[-1]
            log(
                f"  saturated {r['rejected_saturated']:.3f}  low_snr {r['rejected_low_snr']:.3f}  "
                f"top-1 {r['top1_of_all']:.3f}  exposure {r['mean_exposure_ms']:.0f} ms"
            )
    data = {
        "params": vars(args) | {"out": str(args.out)},
        "machine": machine_info(),
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "modes": rows,
    }
    table = md_table(
        [
            "mode",
            "spectra",
            "saturated",
            "low SNR",
            "other rejected",
            "top-1 (all)",
            "top-1 (classified)",
            "exposure ms/spectrum",
            "wall s/spectrum",
        ],
        [
            [
                r["mode"],
                r["spectra"],
                f"{r['rejected_saturated']:.1%}",
                f"{r['rejected_low_snr']:.1%}",
                f"{r['rejected_other']:.1%}",
                f"{r['top1_of_all']:.3f}",
                f"{r['top1_of_classified']:.3f}",
                f"{r['mean_exposure_ms']:.0f}",
                f"{r['wall_s_per_spectrum']:.2f}",
            ]
            for r in rows
        ],
    )
    band_rows = []
    for r in rows:
        for band, v in r["rejected_by_brightness"].items():
            band_rows.append([r["mode"], band, v["spectra"], v["rejected"]])
    md = (
        "# Auto-exposure on samples whose brightness varies 30x\n\n"
        f"`bench/auto_exposure.py --count {args.count} --spread {args.spread:g} --hold {args.hold} "
        f"--fluorescence {args.fluorescence:g} --seed {args.seed}`: the real daemon on the pty emulator, "
        "results through Mosquitto, read from the daemon's history of acknowledged results and joined to "
        "the emulator's ground truth.\n"
        f"Sample brightness measured: {min(r['brightness_min'] or 1 for r in rows):.2f}x to "
        f"{max(r['brightness_max'] or 1 for r in rows):.2f}x of the instrument's nominal signal. "
        f"Load average before/after: {load_before[0]:.2f} / {data['load_avg_after'][0]:.2f} "
        "(shared 2-core machine).\n\n"
        + table
        + "\n\nRejected by sample brightness:\n\n"
        + md_table(["mode", "brightness", "spectra", "rejected"], band_rows)
        + "\n\nAuto-exposure: a probe (a quarter of the last exposure, at most 100 ms; re-probed 8x shorter while "
        "saturated), then integration time and averages from edge/exposure.py; `exposure ms/spectrum` counts "
        "the spectrum's own exposure (integration x averages), `wall s/spectrum` includes probes and analysis.\n"
    )
    j, m = write_results(args.out, "auto_exposure", data, md)
    log(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
