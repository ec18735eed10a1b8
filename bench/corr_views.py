"""Which view of a spectrum should the correlation search compare? (issue 12)

Search-match scores a class by the best zero-lag correlation of the test spectrum with one of
the class's training spectra (`trainer cv --models corr`). This bench keeps that and changes
only what is correlated (edge/corr_view.py):

- pearson: the preprocessed spectrum (what `corr` and every bundle before 2026-12-08 use);
- sqrt: its square root (negative values clipped);
- d1: its slope (9-point Savitzky-Golay first derivative);
- pearson_d1: the mean of the pearson and d1 correlations;
- sqrt_d1: the mean of the correlations of the square root and of its slope (the edge's view).

The candidates were first tried on these same test folds (2026-12-08), so those per-view
test numbers choose nothing by themselves. What counts is the **nested** column: in every
outer fold the view is chosen by leave-out accuracy on the training fold alone (each training
spectrum searched against the rest of the training fold without what the protocol hides: the
spectrum itself, or its whole specimen when grouped; ties go to the simpler view, in the
order above), and the chosen view is then scored on the test fold. Same folds as `trainer cv`
(trainer.cv.make_folds, seed 0, repeat 0), so the numbers sit beside the CV tables.

    .venv/bin/python bench/corr_views.py            # all four protocols, ~2 min
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as `python bench/x.py`

import argparse  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from bench.common import DEFAULT_OUT, machine_info, md_table, wilson, write_results  # noqa: E402
from edge.corr_view import slope, standardize, view_matrix  # noqa: E402

VIEWS = ("pearson", "sqrt", "d1", "pearson_d1", "sqrt_d1")
PROTOCOLS = ("min8", "min8-specimen", "paper", "paper-specimen")


def matrix(X: NDArray[np.floating], view: str) -> NDArray[np.float64]:
    """Rows whose dot products are the view's correlations (edge.corr_view for the edge's views)."""
    if view in ("pearson", "sqrt_d1"):
        return view_matrix(X, view).astype(np.float64)  # type: ignore[arg-type]
    x = np.asarray(X, np.float32)
    if view == "sqrt":
        return standardize(np.sqrt(np.maximum(x, 0))).astype(np.float64)
    if view == "d1":
        return standardize(slope(x)).astype(np.float64)
    if view == "pearson_d1":
        return (np.concatenate([standardize(x), standardize(slope(x))], axis=1) / np.sqrt(2)).astype(np.float64)
    raise ValueError(view)


def predict(sim: NDArray[np.float64], y_ref: NDArray[np.int64], n_classes: int) -> NDArray[np.int64]:
    """Class of the best-correlated reference (the per-class maximum's argmax)."""
    from trainer.models import best_per_class

    return np.argmax(best_per_class(sim, y_ref, n_classes), axis=1)


def inner_accuracy(M: NDArray[np.float64], y: NDArray[np.int64], groups: NDArray[Any], grouped: bool, n: int) -> float:
    """Leave-out accuracy on the training fold: each row against the others, minus its specimen
    (grouped) or itself; rows whose class is left with no reference are not counted."""
    sim = M @ M.T
    hide = groups[:, None] == groups[None, :] if grouped else np.eye(len(y), dtype=bool)
    sim[hide] = -np.inf
    pred = predict(sim, y, n)
    # A class with one specimen has nothing left to match when that specimen is hidden.
    has_ref = np.array([np.any((y == y[i]) & ~hide[i]) for i in range(len(y))])
    return float((pred[has_ref] == y[has_ref]).mean())


def run_protocol(proto: str) -> dict[str, Any]:
    from trainer.cli import _load
    from trainer.cv import CVConfig, make_folds, restrict_for_grouping

    sel, grouped = proto.removesuffix("-specimen"), proto.endswith("-specimen")
    ds = _load(None, sel, None)
    if grouped:
        ds = restrict_for_grouping(ds)
    cfg = CVConfig(("corr",), 10, 1, 0, "specimen" if grouped else None, ())
    right = Counter[str]()
    nested_right, n_test, chosen, folds = 0, 0, [], []
    for fold, (tr, te) in enumerate(make_folds(ds, cfg, 0)):
        te = te[np.isin(ds.y[te], np.unique(ds.y[tr]))]
        inner, outer = {}, {}
        for view in VIEWS:
            Mtr = matrix(ds.X[tr], view)
            inner[view] = inner_accuracy(Mtr, ds.y[tr], ds.groups[tr], grouped, ds.n_classes)
            pred = predict(matrix(ds.X[te], view) @ Mtr.T, ds.y[tr], ds.n_classes)
            outer[view] = int((pred == ds.y[te]).sum())
            right[view] += outer[view]
        pick = max(VIEWS, key=lambda v: (inner[v], -VIEWS.index(v)))
        chosen.append(pick)
        nested_right += outer[pick]
        n_test += te.size
        folds.append({"fold": fold, "n_test": int(te.size), "inner": inner, "right": outer, "chosen": pick})
        print(f"{proto} fold {fold}: chose {pick} (inner {inner[pick]:.3f}); right {outer}", file=sys.stderr)
    return {
        "protocol": proto,
        "n_spectra": int(len(ds.y)),
        "n_classes": int(len(np.unique(ds.y))),
        "n_test": n_test,
        "accuracy": {v: right[v] / n_test for v in VIEWS},
        "nested": {"accuracy": nested_right / n_test, "right": nested_right, "chosen": dict(Counter(chosen))},
        "folds": folds,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    head = ["protocol", "spectra", *VIEWS, "nested (chosen on training folds)", "95 % CI", "views chosen"]
    rows = []
    for r in results:
        lo, hi = wilson(r["nested"]["right"], r["n_test"])
        rows.append(
            [
                r["protocol"],
                r["n_test"],
                *(f"{r['accuracy'][v]:.3f}" for v in VIEWS),
                f"**{r['nested']['accuracy']:.3f}**",
                f"{lo:.3f}-{hi:.3f}",
                ", ".join(f"{v} x{k}" for v, k in sorted(r["nested"]["chosen"].items())),
            ]
        )
    return "\n".join(
        [
            "# Correlation views (bench/corr_views.py)",
            "",
            "Search-match accuracy (zero lag, best reference per class) on the `trainer cv` folds "
            "(1x10, seed 0) with different views of the spectrum correlated (edge/corr_view.py). "
            "The per-view columns were looked at before the edge's view was chosen, so they are "
            "not a result on their own; the nested column is: in each outer fold the view is "
            "chosen by leave-out accuracy on the training fold only (the spectrum itself, or its "
            "specimen when grouped, hidden), then scored on the test fold.",
            "",
            md_table(head, rows),
            "",
        ]
    )


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocols", default=",".join(PROTOCOLS))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = ap.parse_args(argv)
    results = [run_protocol(p.strip()) for p in a.protocols.split(",") if p.strip()]
    data = {"views": VIEWS, "protocols": results, "machine": machine_info()}
    for p in write_results(a.out, "corr_views", data, markdown(results)):
        print(f"wrote {p}")


if __name__ == "__main__":
    main(sys.argv[1:])
