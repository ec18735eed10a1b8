"""Issue 14 side by side: each rewritten edge stage against what it replaced, same inputs, same run.

    .venv/bin/python bench/edge_perf_compare.py [--quick] [--out bench/results] [--core 1] [--n 400]

The machine is shared (a training job on 2 cores), so absolute times move with the load;
this script times old and new implementations of each stage in interleaved rounds on the
same emulated 1,360-pixel spectra, pinned to one core, and reports ratios:

- baseline: pybaselines.whittaker.arpls vs edge.preprocess.arpls (banded LAPACK, NumPy's
  OpenBLAS through ctypes) - and the largest difference between them;
- despike filters: scipy.ndimage median_filter(5) + minimum_filter(11) vs the NumPy ones;
- deconv attribution: the layer-by-layer reference vs the planned, fused path;
- peak picking: scipy.signal.find_peaks vs edge.deconv.find_peaks;
- outbox commit: synchronous=FULL (one fsync inside every commit, `group_commit_ms=0`) vs
  group commit (WAL write in the commit; fsync on the syncer thread), plus commit-to-durable.
Writes edge_perf_compare.{json,md}.
"""

from __future__ import annotations

import os
import sys

_CORE = int(sys.argv[sys.argv.index("--core") + 1]) if "--core" in sys.argv else 1
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {_CORE})
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

common.ensure_repo_on_path()

from edge import deconv  # noqa: E402
from edge import preprocess as pp  # noqa: E402
from edge.bundle import load_bundle, load_deconv_weights  # noqa: E402
from edge.daemon import build_result  # noqa: E402
from edge.lapack import banded_solver  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from edge.pipeline import Analyzer  # noqa: E402
from firmware_bridge.library import load_tray  # noqa: E402
from firmware_bridge.physics import InstrumentModel, simulate_counts  # noqa: E402

NAME = "edge_perf_compare"


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    ap.add_argument("--core", type=int, default=_CORE)
    ap.add_argument("--n", type=int, default=400, help="calls per variant")
    args = ap.parse_args(argv)
    n = 60 if args.quick else args.n
    rounds = 4 if args.quick else 10
    machine = common.machine_info()
    from pybaselines.whittaker import arpls as pyb_arpls
    from scipy.ndimage import median_filter, minimum_filter
    from scipy.signal import find_peaks as scipy_find_peaks

    bundle = load_bundle()
    analyzer = Analyzer(bundle)
    weights = load_deconv_weights(bundle.deconv_path)
    model = InstrumentModel.default(pixels=1360, integration_ms=40, fluorescence_ratio=2.0, cosmic_rate=0.0)
    shifts = pp.pixel_shifts(model.reported_calibration_nm(), model.laser_nm, model.pixels)
    rng = np.random.default_rng(0)
    tray = load_tray()
    dark = simulate_counts(tray[0].shift_cm1, tray[0].intensity, model, rng, dark=True).astype(np.float64)
    raw = [simulate_counts(s.shift_cm1, s.intensity, model, rng).astype(np.float64) - dark for s in tray]
    despiked = [pp.despike(y)[0] for y in raw]
    analyses = [analyzer.analyze_counts(y + dark, shifts, dark=dark) for y in raw]
    ok = [(a.values, a.top) for a in analyses if a.status == "ok" and a.values is not None]
    labels = {m: i for i, m in enumerate(bundle.labels)}
    inputs = [(v, labels.get(top[0][0], 0)) for v, top in ok]
    attrs = [deconv.attribution(v, weights, c) for v, c in inputs]
    system = pp.baseline_system(1360, bundle.spec.baseline_lam)
    max_diff = max(
        float(np.max(np.abs(pyb_arpls(y, lam=system.lam)[0] - pp.arpls(y, system))) / np.ptp(y)) for y in despiked
    )
    result = build_result(
        analyses[0],
        bundle=bundle,
        device_id="bench",
        acquired_at=datetime.now(timezone.utc),
        serial="EMU",
        laser_nm=model.laser_nm,
        integration_ms=model.integration_ms,
        frame_seq=0,
        decode_ms=0.0,
    )
    t: dict[str, list[float]] = {
        k: []
        for k in (
            "arpls_pybaselines",
            "arpls_edge",
            "filters_scipy_ndimage",
            "filters_numpy",
            "attribution_reference",
            "attribution_edge",
            "find_peaks_scipy",
            "find_peaks_edge",
            "commit_full_fsync",
            "commit_group",
        )
    }
    durable: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-cmp-") as tmp:
        full = Outbox(Path(tmp) / "full.db", device_id="bench", group_commit_ms=0)
        group = Outbox(Path(tmp) / "group.db", device_id="bench")
        k = 0
        for _ in range(rounds):
            m = max(1, n // rounds)
            for _ in range(m):
                y = despiked[k % len(despiked)]
                t["arpls_pybaselines"].append(timed(lambda y=y: pyb_arpls(y, lam=system.lam)))
                t["arpls_edge"].append(timed(lambda y=y: pp.arpls(y, system)))
                t["filters_scipy_ndimage"].append(
                    timed(lambda y=y: (median_filter(y, size=5, mode="nearest"), minimum_filter(y, 11, mode="nearest")))
                )
                t["filters_numpy"].append(timed(lambda y=y: (pp.running_median(y, 5), pp.running_min(y, 11))))
                v, c = inputs[k % len(inputs)]
                t["attribution_reference"].append(timed(lambda v=v, c=c: deconv.attribution_reference(v, weights, c)))
                t["attribution_edge"].append(timed(lambda v=v, c=c: deconv.attribution(v, weights, c)))
                a = np.maximum(attrs[k % len(attrs)], 0)
                h = 0.05 * float(a.max())
                t["find_peaks_scipy"].append(timed(lambda a=a, h=h: scipy_find_peaks(a, height=h, distance=8)))
                t["find_peaks_edge"].append(timed(lambda a=a, h=h: deconv.find_peaks(a, h, 8)))
                t["commit_full_fsync"].append(timed(lambda: full.commit(result)))
                t["commit_group"].append(timed(lambda: group.commit(result)))
                k += 1
        group.wait_durable(timeout_s=10)
        durable = [r.commit_ms for r in group.peek(limit=n + 10) if r.commit_ms is not None]
        fs = common.fs_type(Path(tmp))
        full.close()
        group.close()
    q = {name: common.percentiles(v) for name, v in t.items()}
    q["commit_group_to_durable"] = common.percentiles(durable)
    pairs = (
        ("baseline (arPLS)", "arpls_pybaselines", "arpls_edge"),
        ("despike filters", "filters_scipy_ndimage", "filters_numpy"),
        ("deconv attribution", "attribution_reference", "attribution_edge"),
        ("peak picking", "find_peaks_scipy", "find_peaks_edge"),
        ("outbox commit (acquisition thread)", "commit_full_fsync", "commit_group"),
        ("outbox commit -> durable", "commit_full_fsync", "commit_group_to_durable"),
    )
    rows = [
        [
            label,
            f"{q[old]['p50']:.3f}",
            f"{q[new]['p50']:.3f}",
            f"{q[old]['p50'] / q[new]['p50']:.2f}x",
            f"{q[old]['p99']:.3f}",
            f"{q[new]['p99']:.3f}",
        ]
        for label, old, new in pairs
    ]
    data = {
        "benchmark": NAME,
        "parameters": {"quick": args.quick, "n": n, "rounds": rounds, "core": args.core, "pixels": 1360, "fs": fs},
        "machine": machine,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "stages": q,
        "arpls_max_abs_diff_over_range": max_diff,
        "lapack": banded_solver().__name__,
    }
    md = "\n".join(
        [
            "# Edge stages before and after issue 14, side by side (1,360 px, interleaved, one core)"
            + (" (--quick)" if args.quick else ""),
            "",
            common.md_table(["stage", "old p50 ms", "new p50 ms", "old / new", "old p99 ms", "new p99 ms"], rows),
            "",
            f"old: pybaselines arPLS, scipy.ndimage filters, layer-by-layer deconv, scipy.signal.find_peaks, outbox "
            f"synchronous=FULL (one fsync per commit); new: the edge's own. Same {len(despiked)} emulated tray spectra "
            f"(and their model inputs) for both, {n} calls each in {rounds} interleaved rounds, pinned to core "
            f"{args.core}; outbox on {fs}. arPLS max |edge - pybaselines| / spectrum range: {max_diff:.1e}. "
            f"Banded solver: {data['lapack']}.",
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
