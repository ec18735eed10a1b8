"""A new mineral without retraining (issue 12, part 5): `edge library add` on held-out minerals.

Bundle and split: bench/lmo_bundle.py (the leave-minerals-out bundle of bench/unknowns.py;
its model and library never saw the *unknown* minerals). For every unknown mineral with at
least two specimens, one reference spectrum (one file of one specimen, chosen at random) is
written to disk as the RRUFF file it came from and added with
`edge.library_cli.add_references` - the function `edge library add FILE --mineral NAME`
runs: the same file reader, the bundle's preprocessing, the bundle model's embedding, a
library directory beside the bundle. Then, through `Analyzer` (the edge's identification):

- new minerals: top-1 accuracy on all spectra of their *other* specimens (goal >= 0.80),
  side by side with correlation search-match against the same library (the same single
  reference per new mineral; `Analyzer.evidence`'s correlation per class);
- the other minerals: top-1 accuracy on the known-test specimens with and without the added
  references, and how many of them are now called one of the added minerals.

    .venv/bin/python -m bench.library_add [--out bench/results]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_OUT, log, machine_info, md_table, wilson, write_results
from bench.lmo_bundle import load_split
from bench.unknowns import ensure_bundle
from edge.bundle import load_bundle
from edge.library_cli import add_references, open_added
from edge.pipeline import Analyzer
from trainer.rruff import DEFAULT_RRUFF_PATH, iter_files


def top1(an: Analyzer, X: np.ndarray) -> tuple[list[str], list[str]]:
    """(fused top-1, correlation top-1) mineral names, from the edge's identification code."""
    fused, corr = [], []
    lib = an.library
    assert lib is not None
    for x in X:
        top, _unk, _c, _m = an.identify(x)
        fused.append(top[0][0])
        ev = an.evidence(x, k=1)
        corr.append(lib.minerals[int(np.argmax(ev.corr_per_class))])
    return fused, corr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    load_start = os.getloadavg()
    bundle_dir = ensure_bundle()
    split = load_split()
    ds = split.ds
    rng = np.random.default_rng(args.seed)
    refs: dict[str, int] = {}  # mineral -> row of its reference
    probes: list[int] = []
    for m in split.unknown_minerals:
        rows = np.flatnonzero(ds.y == ds.labels.index(m))
        ids = np.unique(ds.groups[rows])
        if ids.size < 2:
            continue
        ref_id = ids[rng.integers(ids.size)]
        cand = rows[ds.groups[rows] == ref_id]
        refs[m] = int(cand[rng.integers(cand.size)])
        probes.extend(rows[ds.groups[rows] != ref_id].tolist())
    probe_rows = np.array(sorted(probes))
    want = {ds.files[i]: m for m, i in refs.items()}
    bundle = load_bundle(bundle_dir)
    base = Analyzer(bundle)
    work = Path(tempfile.mkdtemp(prefix="library-add-"))
    try:
        files_dir, lib_dir = work / "files", work / "added"
        files_dir.mkdir()
        written: dict[str, Path] = {}
        for name, raw in iter_files(DEFAULT_RRUFF_PATH, lambda n: Path(n).name in want):
            p = files_dir / Path(name).name
            p.write_bytes(raw)
            written[want[p.name]] = p
        missing = sorted(set(refs) - set(written))
        if missing:
            raise SystemExit(f"reference files not found in the RRUFF copy: {missing[:5]}")
        for m in sorted(written):  # one `edge library add FILE --mineral M` per new mineral
            add_references(bundle, lib_dir, [written[m]], m, classifier=base.classifier)
        added = open_added(bundle, lib_dir)
        assert added is not None
        an = Analyzer(bundle, library=added)
        log(
            f"{len(refs)} new minerals, one reference each; {probe_rows.size} probe spectra of their other specimens; "
            f"library {len(base.library or [])} -> {len(an.library or [])}"
        )
        truth = [ds.labels[c] for c in ds.y[probe_rows]]
        fused, corr = top1(an, ds.X[probe_rows])
        new_hit = np.array([p == t for p, t in zip(fused, truth, strict=True)])
        corr_hit = np.array([p == t for p, t in zip(corr, truth, strict=True)])
        # per-mineral accuracy (each new mineral weighs the same)
        per_min = {}
        for m in refs:
            sel = np.array([t == m for t in truth])
            per_min[m] = {"n": int(sel.sum()), "fused": float(new_hit[sel].mean()), "corr": float(corr_hit[sel].mean())}
        # the other minerals, with and without the added references
        test_truth = [ds.labels[c] for c in ds.y[split.test_rows]]
        before, before_corr = top1(base, ds.X[split.test_rows])
        after, after_corr = top1(an, ds.X[split.test_rows])
        acc_before = float(np.mean([p == t for p, t in zip(before, test_truth, strict=True)]))
        acc_after = float(np.mean([p == t for p, t in zip(after, test_truth, strict=True)]))
        changed = int(sum(a != b for a, b in zip(after, before, strict=True)))
        to_new = int(sum(a in refs for a in after))
        lib_bytes = (lib_dir / "library.npz").stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)
    k, n = int(new_hit.sum()), int(new_hit.size)
    kc = int(corr_hit.sum())
    res = {
        "protocol": __doc__.split("\n\n")[1],
        "bundle": {
            "dir": "bench/cache/lmo/bundle",
            "model_sha256": bundle.sha256,
            "n_known_minerals": len(bundle.labels),
        },
        "n_new_minerals": len(refs),
        "references": {m: {"rruff_id": str(ds.groups[i]), "file": Path(ds.files[i]).name} for m, i in refs.items()},
        "added_library_npz_bytes": lib_bytes,
        "new_minerals": {
            "n_probes": n,
            "hybrid_accuracy": k / n,
            "hybrid_ci95": wilson(k, n),
            "corr_accuracy": kc / n,
            "corr_ci95": wilson(kc, n),
            "hybrid_accuracy_mineral_mean": float(np.mean([v["fused"] for v in per_min.values()])),
            "corr_accuracy_mineral_mean": float(np.mean([v["corr"] for v in per_min.values()])),
            "per_mineral": per_min,
        },
        "other_minerals": {
            "n": len(test_truth),
            "accuracy_without_added": acc_before,
            "accuracy_with_added": acc_after,
            "corr_accuracy_without_added": float(
                np.mean([p == t for p, t in zip(before_corr, test_truth, strict=True)])
            ),
            "corr_accuracy_with_added": float(np.mean([p == t for p, t in zip(after_corr, test_truth, strict=True)])),
            "top1_changed": changed,
            "now_called_an_added_mineral": to_new,
        },
        "goal": {"new_mineral_accuracy": 0.80, "other_minerals": "unchanged"},
        "machine": machine_info() | {"loadavg_start_bench": [round(x, 2) for x in load_start]},
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    o = res["other_minerals"]
    md = "\n".join(
        [
            "# A new mineral without retraining (bench/library_add.py)",
            "",
            f"Leave-minerals-out bundle ({len(bundle.labels)} known minerals, bench/lmo_bundle.py). "
            f"{len(refs)} minerals it never saw, one reference file each added with "
            "`edge.library_cli.add_references` (the `edge library add` code); probes: "
            f"{n} spectra of their other specimens.",
            "",
            md_table(
                ["measure", "hybrid (edge)", "correlation, same library", "goal"],
                [
                    ["new minerals, top-1 (spectra)", f"{k / n:.3f}", f"{kc / n:.3f}", ">= 0.80"],
                    [
                        "new minerals, 95 % CI",
                        f"{wilson(k, n)[0]:.3f}-{wilson(k, n)[1]:.3f}",
                        f"{wilson(kc, n)[0]:.3f}-{wilson(kc, n)[1]:.3f}",
                        "",
                    ],
                    [
                        "new minerals, mean per mineral",
                        f"{res['new_minerals']['hybrid_accuracy_mineral_mean']:.3f}",
                        f"{res['new_minerals']['corr_accuracy_mineral_mean']:.3f}",
                        "",
                    ],
                    [
                        f"other minerals ({o['n']} known-test), without added",
                        f"{o['accuracy_without_added']:.3f}",
                        f"{o['corr_accuracy_without_added']:.3f}",
                        "",
                    ],
                    [
                        "other minerals, with added",
                        f"{o['accuracy_with_added']:.3f}",
                        f"{o['corr_accuracy_with_added']:.3f}",
                        "unchanged",
                    ],
                ],
            ),
            "",
            f"With the references added, {o['top1_changed']} of {o['n']} known-test answers changed and "
            f"{o['now_called_an_added_mineral']} are now an added mineral. Load average at start "
            f"{res['machine']['loadavg_start_bench']}, end {res['loadavg_end']} (2 shared cores).",
            "",
        ]
    )
    write_results(args.out, "library_add", res, md)
    print(md)


if __name__ == "__main__":
    main()
