"""Accuracy vs Raman-shift error on the trainer's held-out specimens: bundles vs correlation.

    .venv/bin/python bench/shift_heldout.py [--train-dir DIR] --bundle models/fmcnn-rruff [--bundle OLD ...]

Without --train-dir the split is recovered from the first bundle's manifest (trainer.refit.
bundle_split: same data, selection, seed and split functions as `trainer train`; refused if the
counts differ). DIR is a `trainer train` output (data.npz: preprocessed X, y, is_val, and is_cal when the
export held calibration specimens out). Every held-out row is moved by +/-s cm-1 on the
model grid (half the rows +s, half -s; linear interpolation, trainer.augment.shift_stretch;
points moved in from outside the grid read 0), which is what a spectrometer whose calibration
is off by s does to the model input. For each bundle, two answers through the edge's own code:
"cnn" (edge.classifier, the int8 model alone) and "hybrid" (edge.pipeline.Analyzer.evidence:
the fused CNN + embedding + correlation top-1 the edge reports); and correlation search-match
against the training rows (trainer.models.corr_scores, library = the rows neither held out
nor kept for calibration) on the same shifted rows. The held-out split is by specimen
(trainer train's default); those rows were watched by early stopping, and nothing about shift
was chosen on them. ECE (10 bins, top-1 probability) is reported for the unshifted rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.bundle import load_bundle  # noqa: E402
from edge.classifier import Classifier  # noqa: E402
from edge.pipeline import Analyzer  # noqa: E402
from trainer.augment import shift_stretch  # noqa: E402
from trainer.models import corr_scores  # noqa: E402
from trainer.temperature import reliability  # noqa: E402

SHIFTS_CM1 = (0, 2, 5, 10, 15, 20, 30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-dir", type=Path, default=None)
    ap.add_argument("--bundle", type=Path, action="append", required=True)
    ap.add_argument("--out", type=Path, default=Path("bench/results/shift_heldout"))
    a = ap.parse_args(argv)
    if a.train_dir is not None:
        z = np.load(a.train_dir / "data.npz")
        X, y, is_val = z["X"], z["y"], z["is_val"]
        is_cal = z["is_cal"] if "is_cal" in z.files else np.zeros_like(is_val)
    else:
        from trainer.refit import bundle_split
        from trainer.rruff import DEFAULT_RRUFF_PATH

        ds, is_val, is_cal = bundle_split(load_bundle(a.bundle[0]).manifest, DEFAULT_RRUFF_PATH)
        X, y = ds.X, ds.y
    in_lib = ~is_val & ~is_cal
    Xh, yh = X[is_val], y[is_val]
    sign = np.where(np.arange(yh.size) % 2 == 0, 1.0, -1.0)
    n_classes = int(y.max()) + 1
    clfs = {str(b): Classifier(load_bundle(b)) for b in a.bundle}
    analyzers = {str(b): Analyzer(load_bundle(b)) for b in a.bundle}
    rows = []
    ece: dict[str, float] = {}
    for s in SHIFTS_CM1:
        Xs = shift_stretch(Xh, sign * s, np.zeros(yh.size))
        Xs = Xs / np.maximum(Xs.max(axis=1, keepdims=True), 1e-6)
        row: dict[str, float] = {"shift_cm1": s}
        for name, clf in clfs.items():
            preds = [clf.classify(x) for x in Xs]
            row[f"{name} cnn"] = float(np.mean([p.class_index == t for p, t in zip(preds, yh, strict=True)]))
            fused = [analyzers[name].evidence(x).fused for x in Xs]
            if all(f is not None for f in fused):
                pf = np.stack([f.probabilities for f in fused])  # type: ignore[union-attr]
                row[f"{name} hybrid"] = float((pf.argmax(1) == yh).mean())
                if s == 0:
                    ece[f"{name} hybrid"] = float(reliability(pf, yh)["ece"])
            if s == 0:
                ece[f"{name} cnn"] = float(reliability(np.stack([p.probabilities for p in preds]), yh)["ece"])
        row["corr"] = float((corr_scores(X[in_lib], y[in_lib], Xs, n_classes, 0).argmax(1) == yh).mean())
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {
        "n_heldout": int(yh.size),
        "train_dir": str(a.train_dir) if a.train_dir else "split from the bundle manifest",
        "rows": rows,
        "ece": ece,
        "note": __doc__,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    names = [k for k in rows[0] if k != "shift_cm1"]
    md = [
        f"Top-1 accuracy vs shift error on {yh.size} held-out spectra of held-out specimens (bench/shift_heldout.py)",
        "",
        "| shift (cm-1) | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    md += [f"| {r['shift_cm1']} | " + " | ".join(f"{r[n]:.3f}" for n in names) + " |" for r in rows]
    md += ["", "ECE of the top-1 probability, unshifted: " + ", ".join(f"{k} {v:.3f}" for k, v in ece.items())]
    a.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
