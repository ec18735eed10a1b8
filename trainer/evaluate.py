"""Score a bundle on RRUFF files exactly as the edge runs it: `edge.pipeline.Analyzer`.

Every spectrum goes through `Analyzer.analyze_corrected`, the call `edge classify` makes for a
RRUFF Processed file (edge/offline.py): the same preprocessing, quality gate (coverage),
LiteRT interpreter and identification (`Analyzer.identify`: the CNN alone, or the hybrid when
the bundle ships a library / `library_dir` adds references). So evaluation = edge classify =
the daemon = the benchmarks. A spectrum the edge would reject is counted in `n_rejected`
(with its reason) and left out of the accuracy, as a rejected spot gives no answer.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import load_bundle
from edge.library_cli import open_added
from edge.pipeline import Analyzer
from trainer.cv import macro_f1
from trainer.rruff import load_rruff


def evaluate_bundle(
    bundle_dir: str | Path, data: str | Path, out: Path | None = None, *, library_dir: str | Path | None = None
) -> dict[str, Any]:
    bundle = load_bundle(bundle_dir)
    added = open_added(bundle, Path(library_dir).resolve()) if library_dir is not None else None
    analyzer = Analyzer(bundle, library=added)
    names = analyzer.library.minerals if analyzer.library is not None else bundle.labels
    index = {m: i for i, m in enumerate(names)}
    spectra, load_report = load_rruff(data)
    spectra = [s for s in spectra if s.data_type == "Processed"]
    y_true, y_pred, top3_hit, unknown_flags = [], [], [], []
    n_unknown_label = 0
    rejected: Counter[str] = Counter()
    for s in spectra:
        if s.mineral not in index:
            n_unknown_label += 1
            continue
        a = analyzer.analyze_corrected(s.shift_cm1, s.intensity)
        if a.status != "ok" or not a.top:
            rejected[(a.reason or "rejected").split(":")[0]] += 1
            continue
        truth = index[s.mineral]
        y_true.append(truth)
        y_pred.append(index[a.top[0][0]])
        top3_hit.append(s.mineral in [m for m, _p in a.top[:3]])
        unknown_flags.append(a.unknown)
    yt, yp = np.array(y_true, dtype=np.int64), np.array(y_pred, dtype=np.int64)
    flags = np.array(unknown_flags, bool)
    per_class: dict[str, dict[str, float]] = {}
    for c in np.unique(yt):
        m = yt == c
        per_class[names[c]] = {"n": int(m.sum()), "accuracy": float((yp[m] == c).mean())}
    report: dict[str, Any] = {
        "bundle": str(bundle_dir),
        "model": {"name": bundle.name, "sha256": bundle.sha256},
        "runtime": analyzer.classifier.runtime,
        "identification": "hybrid" if analyzer.library is not None and len(analyzer.library) else "cnn",
        "library": None
        if analyzer.library is None
        else {"n_references": len(analyzer.library), "added_from": str(library_dir) if library_dir else None},
        "data": str(data),
        "n": int(yt.size),
        "n_unknown_label": n_unknown_label,
        "n_rejected": int(sum(rejected.values())),
        "rejected_reasons": dict(rejected),
        "n_unreadable": int(rejected.get("invalid_spectrum", 0)),
        "n_files": load_report.n_files,
        "skipped_files": dict(load_report.skipped),
        "accuracy": float((yt == yp).mean()) if yt.size else float("nan"),
        "top3": float(np.mean(top3_hit)) if top3_hit else float("nan"),
        "macro_f1": macro_f1(yt, yp) if yt.size else float("nan"),
        "flagged_unknown_fraction": float(flags.mean()) if flags.size else float("nan"),
        "accuracy_when_not_flagged": (
            float((yt == yp)[~flags].mean()) if flags.size and not flags.all() else float("nan")
        ),
        "per_class": per_class,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        if yt.size:
            _confusion_png(yt, yp, names, out.with_suffix(".confusion.png"))
    return report


def _confusion_png(yt: np.ndarray, yp: np.ndarray, labels: tuple[str, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = np.unique(np.concatenate([yt, yp]))
    pos = {c: i for i, c in enumerate(classes)}
    cm = np.zeros((classes.size, classes.size))
    for t, p in zip(yt, yp, strict=False):
        cm[pos[t], pos[p]] += 1
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(np.log1p(cm), cmap="viridis", interpolation="nearest")
    if classes.size <= 40:
        names = [labels[c] for c in classes]
        ax.set_xticks(range(classes.size), names, rotation=90, fontsize=6)
        ax.set_yticks(range(classes.size), names, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion (log counts), {classes.size} classes, accuracy {(yt == yp).mean():.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
