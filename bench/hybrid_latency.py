"""Latency the hybrid adds per spectrum (issue 12, part 7): library search, fusion, mixture.

Library = every spectrum of the paper selection (the size a shipped bundle library has),
queries = 200 of its spectra moved by a random +-15 cm-1 (so the fine lag stage works), one
BLAS thread (run with OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1: the goal is per core). The
library is saved (format 2: int8 + per-row scale, with a 96-d embedding column of the size
the FMCNN bottleneck gives, random here: only its size and the search cost matter) and
loaded back memory-mapped, as the edge loads it; the file size and the memory the loaded
library holds (heap arrays vs the mapped int8 block, and the RSS growth of loading) are
reported with the latency.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.hybrid_latency
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_OUT, log, machine_info, md_table, percentiles, write_results
from edge.alignment import calibrated_view
from edge.bundle import load_bundle
from edge.corr_view import CORR_VIEWS
from edge.fusion import FusionParams, fuse
from edge.library import SearchParams, load_library, save_library
from edge.mixture import MixtureParams, fit_mixture
from trainer.dataset import build_dataset
from trainer.library_build import library_from_dataset
from trainer.rruff import DEFAULT_RRUFF_PATH


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def timed(lib, x, emb_i, logp, fusion: FusionParams, n_classes: int) -> tuple[float, float, float, float]:  # type: ignore[no-untyped-def]
    """(search + per class, fusion + match, mixture fit, embedding search) in ms for one query."""
    t0 = time.perf_counter()
    sim, lag, sim0 = lib.search(x)
    # The calibrated-axis gate, as edge.pipeline applies it (the shipped bundle's gap).
    sim_f, _lag_f = calibrated_view(sim, lag, sim0, fusion.calibrated_gap)
    corr = lib.per_class(sim_f)
    t1 = time.perf_counter()
    fuse(fusion, n_classes, logp, corr)
    lib.match(sim, lag)
    t2 = time.perf_counter()
    fit_mixture(x, lib, sim, lag, MixtureParams())
    t3 = time.perf_counter()
    lib.per_class(lib.embedding_similarities(emb_i))
    t4 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t4 - t3) * 1e3


def summary(times: list[tuple[float, float, float, float]]) -> dict:  # type: ignore[type-arg]
    t = np.asarray(times)
    added = t[:, 0] + t[:, 1]
    return {
        "search_ms": percentiles(t[:, 0]),
        "fusion_match_ms": percentiles(t[:, 1]),
        "search_plus_fusion_ms": percentiles(added),
        "mixture_ms": percentiles(t[:, 2]),
        "embedding_search_ms": percentiles(t[:, 3]),
        "search_embedding_fusion_ms": percentiles(added + t[:, 3]),
    }


STAGES = (
    ("library search + per class", "search_ms"),
    ("fusion + match", "fusion_match_ms"),
    ("search + fusion (goal <= 1 ms p50)", "search_plus_fusion_ms"),
    ("mixture fit", "mixture_ms"),
    ("embedding search + per class", "embedding_search_ms"),
    ("search + embedding + fusion (goal <= 1 ms p50)", "search_embedding_fusion_ms"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--note", default="", help="how the machine was held during the run (goes into the table)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    ds = build_dataset(DEFAULT_RRUFF_PATH, "paper")
    emb = np.random.default_rng(1).normal(size=(ds.y.size, 96)).astype(np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="hybrid-latency-"))
    save_library(library_from_dataset(ds, embedding=emb), tmp)
    size = {f.name: f.stat().st_size for f in tmp.iterdir()}
    rng = np.random.default_rng(0)
    rows = rng.choice(ds.y.size, args.n, replace=False)
    shifts = rng.integers(-15, 16, size=args.n)
    # The shipped bundle's fusion (its gap and weights), applied to this dataset-sized library,
    # searched with each correlation view (edge/corr_view.py); the bundle's own view first.
    fusion = FusionParams.from_manifest(load_bundle().manifest) or FusionParams()
    views = (fusion.corr_view,) + tuple(v for v in CORR_VIEWS if v != fusion.corr_view)
    nbytes, rss, libs = {}, {}, {}
    for view in views:
        gc.collect()
        rss0 = _rss_kb()
        lib = load_library(tmp, grid_n=ds.X.shape[1], params=SearchParams(view=view))
        rss[view] = {"load": _rss_kb() - rss0}
        log(f"library ({view}): {len(lib)} references, files {size}, RSS +{rss[view]['load']} KB on load")
        nbytes[view] = lib.nbytes()
        mapped = isinstance(lib.spectra_q, np.memmap)
        libs[view] = lib
    # Every query through every view in turn, so a busy spell of the machine costs each view alike.
    logp = np.log(np.full(ds.n_classes, 1.0 / ds.n_classes))
    times: dict[str, list[tuple[float, float, float, float]]] = {v: [] for v in views}
    for i, shift in zip(rows, shifts, strict=True):
        x = np.roll(ds.X[i], int(shift))
        for view in views:
            times[view].append(timed(libs[view], x, emb[i], logp, fusion, ds.n_classes))
    per_view = {v: summary(t) for v, t in times.items()}
    shutil.rmtree(tmp, ignore_errors=True)
    res = {
        "n_references": int(ds.y.size),
        "n_classes": ds.n_classes,
        "bundle_view": fusion.corr_view,
        "views": per_view,
        **per_view[fusion.corr_view],
        "library_files_bytes": size,
        "library_nbytes": nbytes,
        "spectra_memory_mapped": mapped,
        "rss_growth_kb_on_load": rss,
        "goal_ms_p50": 1.0,
        "note": args.note,
        "machine": machine_info(),
    }
    heap = {v: sum(b for k, b in nb.items() if k != "spectra_q") / 1e6 for v, nb in nbytes.items()}
    md = "\n".join(
        [
            "# Hybrid latency per spectrum (bench/hybrid_latency.py)",
            "",
            f"Library of {ds.y.size} references ({ds.n_classes} classes), {args.n} queries shifted +-15 cm-1, "
            f"one thread; load average {res['machine'].get('loadavg_start')} at start (the machine has "
            f"{res['machine'].get('nproc', '?')} cores; other jobs on them inflate every percentile). " + args.note,
            "",
            f"Library files (format 2, int8 + per-row scale, 96-d int8 embedding): library.npz "
            f"{size['library.npz'] / 1e6:.2f} MB, library.json {size['library.json'] / 1e3:.0f} KB. Loaded: "
            f"int8 spectra memory-mapped ({nbytes[views[0]]['spectra_q'] / 1e6:.2f} MB of file pages, touched "
            "on demand); heap arrays and RSS growth on load per correlation view: "
            + "; ".join(f"{v} {heap[v]:.2f} MB, {rss[v]['load'] / 1e3:.1f} MB" for v in views)
            + ". Each query goes through every view in turn (a busy spell of the machine costs each alike)"
            + f". The shipped bundle searches with `{fusion.corr_view}` (its manifest's fusion `corr_view`).",
            "",
            md_table(
                ["stage", *(f"{v} p50 ms" for v in views), *(f"{v} p90 ms" for v in views), f"{views[0]} p99 ms"],
                [
                    [
                        name,
                        *(f"{per_view[v][key]['p50']:.3f}" for v in views),
                        *(f"{per_view[v][key]['p90']:.3f}" for v in views),
                        f"{per_view[views[0]][key]['p99']:.3f}",
                    ]
                    for name, key in STAGES
                ],
            ),
            "",
        ]
    )
    write_results(args.out, "hybrid_latency", res, md)
    print(md)


if __name__ == "__main__":
    main()
