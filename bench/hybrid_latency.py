"""Latency the hybrid adds per spectrum (issue 12, part 7): library search, fusion, mixture.

Library = every spectrum of the paper selection (the size a shipped bundle library has),
queries = 200 of its spectra moved by a random +-15 cm-1 (so the fine lag stage works), one
BLAS thread (run with OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1: the goal is per core).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.hybrid_latency
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_OUT, log, machine_info, md_table, percentiles, write_results
from edge.fusion import FusionParams, fuse
from edge.mixture import MixtureParams, fit_mixture
from trainer.dataset import build_dataset
from trainer.library_build import library_from_dataset
from trainer.rruff import DEFAULT_RRUFF_PATH


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    ds = build_dataset(DEFAULT_RRUFF_PATH, "paper")
    lib = library_from_dataset(ds)
    log(f"library: {len(lib)} references, {ds.n_classes} classes")
    rng = np.random.default_rng(0)
    rows = rng.choice(ds.y.size, args.n, replace=False)
    logp = np.log(np.full(ds.n_classes, 1.0 / ds.n_classes))
    t_search, t_fuse, t_mix = [], [], []
    for i in rows:
        x = np.roll(ds.X[i], int(rng.integers(-15, 16)))
        t0 = time.perf_counter()
        sim, lag = lib.similarities(x)
        corr = lib.per_class(sim)
        t1 = time.perf_counter()
        fuse(FusionParams(), ds.n_classes, logp, corr)
        lib.match(sim, lag)
        t2 = time.perf_counter()
        fit_mixture(x, lib, sim, lag, MixtureParams())
        t3 = time.perf_counter()
        t_search.append((t1 - t0) * 1e3)
        t_fuse.append((t2 - t1) * 1e3)
        t_mix.append((t3 - t2) * 1e3)
    added = np.array(t_search) + np.array(t_fuse)
    res = {
        "n_references": len(lib),
        "n_classes": ds.n_classes,
        "search_ms": percentiles(t_search),
        "fusion_match_ms": percentiles(t_fuse),
        "search_plus_fusion_ms": percentiles(added),
        "mixture_ms": percentiles(t_mix),
        "goal_ms_p50": 1.0,
        "machine": machine_info(),
    }
    md = "\n".join(
        [
            "# Hybrid latency per spectrum (bench/hybrid_latency.py)",
            "",
            f"Library of {len(lib)} references ({ds.n_classes} classes), {args.n} queries shifted +-15 cm-1, "
            "one thread; measured while a CNN cross-validation ran on the other core.",
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
