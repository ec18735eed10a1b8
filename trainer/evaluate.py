"""Score a bundle on RRUFF files exactly as the edge runs it (LiteRT + edge.preprocess)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import load_bundle
from edge.classifier import Classifier
from edge.errors import SpectrumError
from edge.pipeline import classify_library_spectrum
from trainer.cv import macro_f1
from trainer.rruff import load_rruff


def evaluate_bundle(bundle_dir: str | Path, data: str | Path, out: Path | None = None) -> dict[str, Any]:
    bundle = load_bundle(bundle_dir)
    clf = Classifier(bundle)
    index = {m: i for i, m in enumerate(bundle.labels)}
    spectra, load_report = load_rruff(data)
    spectra = [s for s in spectra if s.data_type == "Processed"]
    y_true, y_pred, top3_hit, unknown_flags = [], [], [], []
    n_unknown_label = 0
    n_unreadable = 0
    for s in spectra:
        if s.mineral not in index:
            n_unknown_label += 1
            continue
        try:
            pred = classify_library_spectrum(clf, s.shift_cm1, s.intensity, k=3)
        except SpectrumError:
            n_unreadable += 1
            continue
        truth = index[s.mineral]
        top_idx = [index[m] for m, _p in pred.top]
        y_true.append(truth)
        y_pred.append(pred.class_index)
        top3_hit.append(truth in top_idx)
        unknown_flags.append(pred.unknown)
    yt, yp = np.array(y_true, dtype=np.int64), np.array(y_pred, dtype=np.int64)
    per_class: dict[str, dict[str, float]] = {}
    for c in np.unique(yt):
        m = yt == c
        per_class[bundle.labels[c]] = {"n": int(m.sum()), "accuracy": float((yp[m] == c).mean())}
    report: dict[str, Any] = {
        "bundle": str(bundle_dir),
        "model": {"name": bundle.name, "sha256": bundle.sha256},
        "runtime": clf.runtime,
        "data": str(data),
        "n": int(yt.size),
        "n_unknown_label": n_unknown_label,
        "n_unreadable": n_unreadable,
        "n_files": load_report.n_files,
        "skipped_files": dict(load_report.skipped),
        "accuracy": float((yt == yp).mean()) if yt.size else float("nan"),
        "top3": float(np.mean(top3_hit)) if top3_hit else float("nan"),
        "macro_f1": macro_f1(yt, yp) if yt.size else float("nan"),
        "flagged_unknown_fraction": float(np.mean(unknown_flags)) if unknown_flags else float("nan"),
        "accuracy_when_not_flagged": float((yt == yp)[~np.array(unknown_flags)].mean())
        if unknown_flags and not all(unknown_flags)
        else float("nan"),
        "per_class": per_class,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        if yt.size:
            _confusion_png(yt, yp, bundle.labels, out.with_suffix(".confusion.png"))
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
