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
from edge.fusion import FusionParams, fuse
from edge.library import load_library, save_library
from edge.mixture import MixtureParams, fit_mixture
from trainer.dataset import build_dataset
from trainer.library_build import library_from_dataset
from trainer.rruff import DEFAULT_RRUFF_PATH


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


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
    gc.collect()
    rss0 = _rss_kb()
    lib = load_library(tmp, grid_n=ds.X.shape[1])
    rss_load = _rss_kb() - rss0
    size = {f.name: f.stat().st_size for f in tmp.iterdir()}
    log(f"library: {len(lib)} references, {ds.n_classes} classes, files {size}, RSS +{rss_load} KB on load")
    rng = np.random.default_rng(0)
    rows = rng.choice(ds.y.size, args.n, replace=False)
    logp = np.log(np.full(ds.n_classes, 1.0 / ds.n_classes))
    # The shipped bundle's fusion (its gap and weights), applied to this dataset-sized library.
    fusion = FusionParams.from_manifest(load_bundle().manifest) or FusionParams()
    t_search, t_fuse, t_mix, t_emb = [], [], [], []
    for i in rows:
        x = np.roll(ds.X[i], int(rng.integers(-15, 16)))
        t0 = time.perf_counter()
        sim, lag, sim0 = lib.search(x)
        # The calibrated-axis gate, as edge.pipeline applies it (the shipped bundle's gap).
        sim_f, _lag_f = calibrated_view(sim, lag, sim0, fusion.calibrated_gap)
        corr = lib.per_class(sim_f)
        t1 = time.perf_counter()
        fuse(fusion, ds.n_classes, logp, corr)
        lib.match(sim, lag)
        t2 = time.perf_counter()
        fit_mixture(x, lib, sim, lag, MixtureParams())
        t3 = time.perf_counter()
        lib.per_class(lib.embedding_similarities(emb[i]))
        t_emb.append((time.perf_counter() - t3) * 1e3)
        t_search.append((t1 - t0) * 1e3)
        t_fuse.append((t2 - t1) * 1e3)
        t_mix.append((t3 - t2) * 1e3)
    added = np.array(t_search) + np.array(t_fuse)
    added_emb = added + np.array(t_emb)
    rss_after = _rss_kb() - rss0
    shutil.rmtree(tmp, ignore_errors=True)
    res = {
        "n_references": len(lib),
        "n_classes": ds.n_classes,
        "search_ms": percentiles(t_search),
        "fusion_match_ms": percentiles(t_fuse),
        "search_plus_fusion_ms": percentiles(added),
        "mixture_ms": percentiles(t_mix),
        "embedding_search_ms": percentiles(t_emb),
        "search_embedding_fusion_ms": percentiles(added_emb),
        "library_files_bytes": size,
        "library_nbytes": lib.nbytes(),
        "spectra_memory_mapped": isinstance(lib.spectra_q, np.memmap),
        "rss_growth_kb": {"load": rss_load, "after_queries": rss_after},
        "goal_ms_p50": 1.0,
        "note": args.note,
        "machine": machine_info(),
    }
    md = "\n".join(
        [
            "# Hybrid latency per spectrum (bench/hybrid_latency.py)",
            "",
            f"Library of {len(lib)} references ({ds.n_classes} classes), {args.n} queries shifted +-15 cm-1, "
            f"one thread; load average {res['machine'].get('loadavg_start')} at start (the machine has "
            f"{res['machine'].get('nproc', '?')} cores; other jobs on them inflate every percentile). " + args.note,
            "",
            f"Library files (format 2, int8 + per-row scale, 96-d int8 embedding): library.npz "
            f"{size['library.npz'] / 1e6:.2f} MB, library.json {size['library.json'] / 1e3:.0f} KB. Loaded: "
            f"int8 spectra memory-mapped ({lib.nbytes()['spectra_q'] / 1e6:.2f} MB of file pages, touched "
            f"on demand), heap arrays {sum(v for k, v in lib.nbytes().items() if k != 'spectra_q') / 1e6:.2f} MB; "
            f"RSS growth {rss_load / 1e3:.1f} MB on load, {rss_after / 1e3:.1f} MB after all queries.",
            "",
            md_table(
                ["stage", "p50 ms", "p90 ms", "p99 ms"],
                [
                    [name, f"{v['p50']:.3f}", f"{v['p90']:.3f}", f"{v['p99']:.3f}"]
                    for name, v in (
                        ("library search + per class", res["search_ms"]),
                        ("fusion + match", res["fusion_match_ms"]),
                        ("search + fusion (goal <= 1 ms p50)", res["search_plus_fusion_ms"]),
                        ("mixture fit", res["mixture_ms"]),
                        ("embedding search + per class", res["embedding_search_ms"]),
                        ("search + embedding + fusion (goal <= 1 ms p50)", res["search_embedding_fusion_ms"]),
                    )
                ],
            ),
            "",
        ]
    )
    write_results(args.out, "hybrid_latency", res, md)
    print(md)


if __name__ == "__main__":
    main()
