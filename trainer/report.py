"""PNG figures: CV comparison with the paper's numbers, and deconvnet attributions (Fig. 5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import load_bundle, load_deconv_weights
from edge.classifier import Classifier
from edge.deconv import attribution, top_peaks
from edge.preprocess import preprocess
from trainer.cv import PAPER_FIGURES
from trainer.rruff import iter_files, parse_filename, parse_rruff_text

FIGURE_MINERALS = ("Quartz", "Calcite", "Forsterite", "Gypsum", "Anatase", "Diopside")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cv_chart(cv_json: Path, out: Path) -> Path:
    plt = _plt()
    data = json.loads(cv_json.read_text())
    summ = data["summary"]
    names = sorted(summ, key=lambda m: -summ[m]["accuracy_mean"])
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(names))
    ax.bar(
        x - 0.2,
        [summ[m]["accuracy_mean"] for m in names],
        0.4,
        yerr=[summ[m]["accuracy_std"] for m in names],
        label="ours (this data)",
    )
    ax.bar(x + 0.2, [PAPER_FIGURES.get(m, np.nan) for m in names], 0.4, label="paper (oriented subset)")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    cfg = data["config"]
    ax.set_title(
        f"{cfg['selection']} selection, {cfg['repeats']}x{cfg['folds']}-fold"
        + (", grouped by specimen" if cfg.get("group_by") else "")
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def attribution_figures(bundle_dir: Path, data: Path, out_dir: Path) -> list[Path]:
    plt = _plt()
    bundle = load_bundle(bundle_dir)
    clf = Classifier(bundle)
    weights = load_deconv_weights(bundle.deconv_path)
    written = []
    wanted = set(FIGURE_MINERALS) & set(bundle.labels)
    seen: set[str] = set()
    for name, raw in iter_files(data):
        info = parse_filename(name)
        if info is None or info.mineral not in wanted - seen or info.data_type != "Processed":
            continue
        s = parse_rruff_text(raw, name)
        prep = preprocess(s.shift_cm1, s.intensity, bundle.spec, corrected=True)
        pred = clf.classify(prep.values)
        attr = attribution(prep.values, weights, pred.class_index)
        peaks = top_peaks(attr, prep.values, bundle.grid_cm1, k=5)
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.plot(bundle.grid_cm1, prep.values, lw=1, label=f"{s.mineral} {s.rruff_id} (input)")
        ax.plot(bundle.grid_cm1, np.maximum(attr, 0) / max(attr.max(), 1e-9), lw=1, label="deconvnet attribution")
        for p in peaks:
            ax.axvline(p.shift_cm1, color="k", lw=0.5, ls=":")
            ax.text(p.shift_cm1, 1.02, f"{p.shift_cm1:.0f}", fontsize=7, ha="center")
        ax.set_xlabel("Raman shift (cm$^{-1}$)")
        ax.set_title(f"predicted {pred.top[0][0]} (p={pred.top[0][1]:.2f})", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        path = out_dir / f"attribution_{s.mineral}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
        seen.add(s.mineral)
    return written
