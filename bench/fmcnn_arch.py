"""Choosing FMCNN depth/width/augmentation by measurement on held-out *specimens*.

    .venv/bin/python bench/fmcnn_arch.py [--variants base,fire2,...] [--epochs 80]

One specimen-grouped split of the paper selection: the validation rows are whole RRUFF
specimens (10 % of each class's specimens, trainer.fmcnn.validation_rows with
val_split="specimen"), never seen in training. They are also what early stopping watches,
so the figures are slightly optimistic for every variant alike; they are used to *choose*
the architecture, and the chosen one is then measured on the grouped CV folds
(`trainer cv --group-by specimen`), which played no part in the choice.

For each variant: float Keras accuracy on the held-out specimens with the shift axis moved by
0, 10 and 20 cm-1 (half +s, half -s), parameter count, epochs and training time; correlation
search-match against the training rows on the same shifted rows as the reference.
Results append to bench/results/fmcnn_arch.jsonl (one line per variant; a rerun skips
variants already there) and a table is written to bench/results/fmcnn_arch.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.augment import AugmentConfig, shift_stretch  # noqa: E402
from trainer.fmcnn import ArchConfig, TrainConfig, train_fmcnn, validation_rows  # noqa: E402
from trainer.models import corr_scores  # noqa: E402

SHIFTS_CM1 = (0, 10, 20)
RESULTS = Path("bench/results/fmcnn_arch")

VARIANTS: dict[str, dict[str, object]] = {
    "base": {},
    "base_shift50": {"aug": {"shift_fraction": 0.5}},
    "fire2": {"arch": {"fires": 2, "pool": 8}},
    "fire2_wide": {"arch": {"fires": 2, "pool": 8, "conv_filters": 24, "squeeze": 12, "expand": 20}},
    "fire2_pool4x4": {"arch": {"fires": 2, "pool_first": 4, "pool": 4, "bottleneck": 64}},
    "fire2_wide_ls": {
        "arch": {"fires": 2, "pool": 8, "conv_filters": 24, "squeeze": 12, "expand": 20},
        "train": {"label_smoothing": 0.05},
    },
    "base_s50_acc": {"aug": {"shift_fraction": 0.5}, "train": {"monitor": "val_accuracy", "patience": 20}},
    "fire2_wide_s50_acc": {
        "arch": {"fires": 2, "pool": 8, "conv_filters": 24, "squeeze": 12, "expand": 20},
        "aug": {"shift_fraction": 0.5},
        "train": {"monitor": "val_accuracy", "patience": 20},
    },
}


def load_paper(cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        return z["X"], z["y"], z["groups"]
    from trainer.dataset import from_spectra
    from trainer.rruff import DEFAULT_RRUFF_PATH, load_rruff, select

    spectra, _ = load_rruff(Path(os.environ.get("RAMAN_RRUFF", DEFAULT_RRUFF_PATH)))
    chosen, counts = select(spectra, "paper")
    ds = from_spectra(chosen, counts=counts)
    np.savez(cache, X=ds.X, y=ds.y, groups=ds.groups.astype(str))
    return ds.X, ds.y, ds.groups.astype(str)


def shifted(X: np.ndarray, s: float) -> np.ndarray:
    sign = np.where(np.arange(len(X)) % 2 == 0, 1.0, -1.0)
    Xs = shift_stretch(X, sign * s, np.zeros(len(X)))
    return Xs / np.maximum(Xs.max(axis=1, keepdims=True), 1e-6)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/raman_paper_ds.npz"))
    ap.add_argument("--save", type=Path, default=None, help="Directory to keep each variant's model.keras in.")
    a = ap.parse_args(argv)
    X, y, groups = load_paper(a.cache)
    n_classes = int(y.max()) + 1
    base_cfg = TrainConfig(epochs=a.epochs, val_split="specimen", patience=12)
    is_val = validation_rows(y, base_cfg, np.random.default_rng(base_cfg.seed), groups)
    jsonl = RESULTS.with_suffix(".jsonl")
    done = {json.loads(line)["variant"] for line in jsonl.read_text().splitlines()} if jsonl.exists() else set()
    Xtr, ytr, Xva, yva = X[~is_val], y[~is_val], X[is_val], y[is_val]
    corr = {
        s: float((corr_scores(Xtr, ytr, shifted(Xva, s), n_classes, 0).argmax(1) == yva).mean()) for s in SHIFTS_CM1
    }
    for name in a.variants.split(","):
        if name in done:
            continue
        v = VARIANTS[name]
        cfg = replace(
            base_cfg,
            arch=replace(ArchConfig(), **v.get("arch", {})),  # type: ignore[arg-type]
            augment_config=replace(AugmentConfig(), **v.get("aug", {})),  # type: ignore[arg-type]
            **v.get("train", {}),  # type: ignore[arg-type]
        )
        t0 = time.perf_counter()
        model, hist = train_fmcnn(X, y, n_classes, cfg, groups=groups)
        train_s = time.perf_counter() - t0
        row: dict[str, object] = {
            "variant": name,
            "spec": v,
            "params": int(model.count_params()),
            "best_epoch": hist["best_epoch"],
            "epochs_run": len(hist["epochs"]),
            "train_s": round(train_s, 1),
            "n_heldout": int(yva.size),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        for s in SHIFTS_CM1:
            pred = model.predict(shifted(Xva, s)[..., None], verbose=0, batch_size=256).argmax(1)
            row[f"acc_{s}"] = float((pred == yva).mean())
            row[f"corr_{s}"] = corr[s]
        if a.save is not None:
            a.save.mkdir(parents=True, exist_ok=True)
            model.save(a.save / f"{name}.keras")
            np.save(a.save / "is_val.npy", is_val)
        print(json.dumps(row), flush=True)
        with jsonl.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    lines = [
        f"FMCNN variants, paper selection, {rows[0]['n_heldout']} spectra of held-out specimens "
        "(bench/fmcnn_arch.py; float Keras; used to choose, see the docstring)",
        "",
        "| variant | params | acc 0 | acc 10 | acc 20 | corr 0 | corr 10 | corr 20 | epochs | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['params']} | {r['acc_0']:.3f} | {r['acc_10']:.3f} | {r['acc_20']:.3f} "
            f"| {r['corr_0']:.3f} | {r['corr_10']:.3f} | {r['corr_20']:.3f} | {r['best_epoch']}/{r['epochs_run']} "
            f"| {r['train_s']:.0f} |"
        )
    RESULTS.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
