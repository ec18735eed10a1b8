"""Repeated K-fold cross-validation with the same folds for every model.

Two protocols:
- "stratified" (the paper's): StratifiedKFold on spectra. Spectra of one specimen (RRUFF
  ID) measured at another laser can sit on both sides of a split, which flatters every
  model; it is reported because the paper used it.
- "specimen" (`--group-by specimen`): StratifiedGroupKFold with RRUFF ID groups, restricted
  to classes with at least two specimens (others could never be evaluated). This is the
  honest estimate for a specimen the model has never seen.

Per-fold results are appended to a JSON-lines cache as they finish, so an interrupted run
resumes where it stopped (`--cache`).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trainer.dataset import Dataset
from trainer.errors import InputError
from trainer.models import MODELS, FoldContext
from trainer.temperature import reliability


@dataclass(frozen=True)
class CVConfig:
    models: tuple[str, ...]
    folds: int = 10
    repeats: int = 1
    seed: int = 0
    group_by: str | None = None  # None or "specimen"
    #: Also score every test fold with its shift axis moved by each of these (cm-1; half the
    #: rows +s, half -s), from the same trained model: what an uncalibrated instrument gives.
    shifts_cm1: tuple[float, ...] = ()


@dataclass(frozen=True)
class FoldResult:
    model: str
    repeat: int
    fold: int
    n_test: int
    accuracy: float
    top3: float
    macro_f1: float
    fit_predict_s: float
    #: {"<shift cm-1>": top-1 accuracy on the test fold shifted by that much}, when asked for
    shift_accuracy: dict[str, float] | None = None
    #: the model's training configuration (FMCNN variants); a cached fold of another is redone
    model_identity: str = ""
    #: 10-bin expected calibration error of the top-1 probability on the (unshifted) test
    #: fold, for models whose scores are probabilities (None for similarities and logits)
    ece: float | None = None
    #: [RRUFF file, true mineral, predicted mineral] for every wrong answer on the unshifted
    #: test fold, so a table can say *what* a model confuses and compare two models spectrum by
    #: spectrum (bench/series_confusions.py); None in caches written before it was recorded
    errors: list[list[str]] | None = None


def topk_accuracy(scores: NDArray[np.float64], y: NDArray[np.int64], k: int) -> float:
    if len(y) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((top == y[:, None]).any(axis=1).mean())


def macro_f1(y_true: NDArray[np.int64], y_pred: NDArray[np.int64]) -> float:
    """Macro-F1 over the classes present in y_true (absent classes carry no information)."""
    from sklearn.metrics import f1_score

    if y_true.size == 0:
        return float("nan")
    return float(f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0))


def restrict_for_grouping(ds: Dataset) -> Dataset:
    """Keep classes with >= 2 specimens: a class with one specimen can't be both train and test."""
    keep_classes = {c for c in np.unique(ds.y) if np.unique(ds.groups[ds.y == c]).size >= 2}
    idx = np.flatnonzero(np.isin(ds.y, list(keep_classes)))
    return ds.subset(idx)


def make_folds(ds: Dataset, cfg: CVConfig, repeat: int) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    seed = cfg.seed + repeat
    with warnings.catch_warnings():
        # Classes with fewer members than folds are expected here (median 2-4 per class).
        warnings.simplefilter("ignore", UserWarning)
        if cfg.group_by == "specimen":
            sgkf = StratifiedGroupKFold(n_splits=cfg.folds, shuffle=True, random_state=seed)
            return list(sgkf.split(ds.X, ds.y, ds.groups))
        skf = StratifiedKFold(n_splits=cfg.folds, shuffle=True, random_state=seed)
        return list(skf.split(ds.X, ds.y))


def _cache_key(r: dict[str, Any]) -> tuple[str, int, int]:
    return (r["model"], r["repeat"], r["fold"])


def fold_fingerprint(ds: Dataset, cfg: CVConfig) -> str:
    """What a cached fold result depends on besides (model, repeat, fold): the exact dataset
    (spectra, labels, specimens, class names) and the fold-making settings."""
    import hashlib

    h = hashlib.sha256()
    h.update(json.dumps([cfg.folds, cfg.seed, cfg.group_by, list(ds.X.shape)]).encode())
    h.update(np.ascontiguousarray(ds.X, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(ds.y, dtype=np.int64).tobytes())
    h.update("\0".join(map(str, ds.groups.tolist())).encode())
    h.update("\0".join(ds.labels).encode())
    return h.hexdigest()[:16]


def _read_cache(
    cache: Path, fingerprint: str, test_sizes: dict[tuple[int, int], int]
) -> dict[tuple[str, int, int], FoldResult]:
    """Cached folds of *this* dataset and fold settings; anything else is refused, not mixed in.

    Lines carry the fingerprint of the dataset and settings they were computed on. Lines from
    before fingerprints existed are accepted only where their test size matches the fold's
    (a different selection, seed or data copy gives different folds); otherwise they raise.
    """
    done: dict[tuple[str, int, int], FoldResult] = {}
    for no, line in enumerate(cache.read_text().splitlines(), 1):
        if not line.strip():
            continue
        r = json.loads(line)
        fp = r.pop("fingerprint", None)
        key = _cache_key(r)
        expected = test_sizes.get((r["repeat"], r["fold"]))
        if fp is not None and fp != fingerprint:
            raise InputError(
                f"{cache}:{no}: cached fold was computed on another dataset or fold setting "
                f"(fingerprint {fp}, this run {fingerprint}); use another --cache file or delete it"
            )
        if fp is None and expected is not None and expected != r["n_test"]:
            raise InputError(
                f"{cache}:{no}: cached {key} has {r['n_test']} test spectra, this run's fold has {expected}: "
                "the cache belongs to another dataset, selection or seed; use another --cache file or delete it"
            )
        done[key] = FoldResult(**r)
    return done


def _identity(name: str) -> str:
    fn = getattr(MODELS[name], "identity", None)
    return fn() if fn is not None else ""


def shifted_rows(ds: Dataset, X: NDArray[np.float32], shift_cm1: float) -> NDArray[np.float32]:
    """Rows moved along the shift axis by +/-shift_cm1 (alternating), renormalised to max 1."""
    from trainer.augment import shift_stretch

    step = float(ds.spec.grid_step_cm1)
    sign = np.where(np.arange(len(X)) % 2 == 0, 1.0, -1.0)
    out = shift_stretch(X, sign * shift_cm1 / step, np.zeros(len(X)))
    return (out / np.maximum(out.max(axis=1, keepdims=True), 1e-6)).astype(np.float32)


def run_cv(
    ds: Dataset,
    cfg: CVConfig,
    *,
    cache: Path | None = None,
    on_fold: Callable[[FoldResult], None] | None = None,
    cached_only: bool = False,
    model_dir: Path | None = None,
) -> list[FoldResult]:
    """Every model on every fold (cached folds reused). `model_dir` keeps each fold's trained
    FMCNN, so the hybrid (built on it) does not train it again and a resumed run reuses it."""
    unknown = [m for m in cfg.models if m not in MODELS]
    if unknown:
        raise InputError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    if cfg.folds < 2:
        raise InputError("--folds must be at least 2")
    all_folds = {}
    for repeat in range(cfg.repeats):
        for fold, (tr, te) in enumerate(make_folds(ds, cfg, repeat)):
            # Only test spectra whose class was seen in training can be scored.
            all_folds[(repeat, fold)] = (tr, te[np.isin(ds.y[te], np.unique(ds.y[tr]))])
    fingerprint = fold_fingerprint(ds, cfg)
    done: dict[tuple[str, int, int], FoldResult] = {}
    if cache is not None and cache.exists():
        done = _read_cache(cache, fingerprint, {k: int(te.size) for k, (_, te) in all_folds.items()})
    results: list[FoldResult] = []
    for repeat in range(cfg.repeats):
        for fold in range(cfg.folds):
            tr, te = all_folds[(repeat, fold)]
            for name in cfg.models:
                key = (name, repeat, fold)
                identity = _identity(name)
                if key in done and (
                    done[key].model_identity != identity
                    or (cfg.shifts_cm1 and set(done[key].shift_accuracy or {}) != {f"{s:g}" for s in cfg.shifts_cm1})
                ):
                    del done[key]  # computed with another model config or without these shifts: redo
                if key in done:
                    results.append(done[key])
                    if on_fold:
                        on_fold(done[key])
                    continue
                if cached_only:
                    continue
                t0 = time.perf_counter()
                # One fit per fold; the shifted copies of the test fold are scored with it.
                X_test = np.concatenate([ds.X[te]] + [shifted_rows(ds, ds.X[te], s) for s in cfg.shifts_cm1])
                ctx = FoldContext(cfg.group_by, model_dir, fingerprint, repeat, fold)
                all_scores = MODELS[name](
                    ds.X[tr], ds.y[tr], X_test, ds.n_classes, cfg.seed + repeat, groups=ds.groups[tr], ctx=ctx
                )
                elapsed = time.perf_counter() - t0
                scores = all_scores[: te.size]
                pred = np.argmax(scores, axis=1)
                shift_acc = None
                if cfg.shifts_cm1:
                    shift_acc = {
                        f"{s:g}": float(
                            (np.argmax(all_scores[(i + 1) * te.size : (i + 2) * te.size], 1) == ds.y[te]).mean()
                        )
                        for i, s in enumerate(cfg.shifts_cm1)
                    }
                is_prob = bool(np.all(scores >= 0) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3))
                res = FoldResult(
                    ece=float(reliability(scores, ds.y[te])["ece"]) if is_prob else None,
                    model=name,
                    repeat=repeat,
                    fold=fold,
                    n_test=int(te.size),
                    accuracy=float((pred == ds.y[te]).mean()),
                    top3=topk_accuracy(scores, ds.y[te], 3),
                    macro_f1=macro_f1(ds.y[te], pred),
                    fit_predict_s=elapsed,
                    shift_accuracy=shift_acc,
                    model_identity=identity,
                    errors=[
                        [ds.files[int(i)], ds.labels[int(t)], ds.labels[int(p)]]
                        for i, t, p in zip(te, ds.y[te], pred, strict=True)
                        if t != p
                    ],
                )
                results.append(res)
                if cache is not None:
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    with cache.open("a") as fh:
                        fh.write(json.dumps(asdict(res) | {"fingerprint": fingerprint}) + "\n")
                if on_fold:
                    on_fold(res)
    return results


def summarize(results: list[FoldResult], models: tuple[str, ...]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for m in models:
        rs = [r for r in results if r.model == m]
        if not rs:
            continue
        acc = np.array([r.accuracy for r in rs])
        out[m] = {
            "accuracy_mean": float(acc.mean()),
            "accuracy_std": float(acc.std(ddof=1)) if acc.size > 1 else 0.0,
            "top3_mean": float(np.mean([r.top3 for r in rs])),
            "macro_f1_mean": float(np.mean([r.macro_f1 for r in rs])),
            "fit_predict_s_total": float(sum(r.fit_predict_s for r in rs)),
            "n_folds": len(rs),
        }
        eces = [r.ece for r in rs if r.ece is not None]
        if eces and len(eces) == len(rs):
            out[m]["ece_mean"] = float(np.mean(eces))
        shifts = [r.shift_accuracy for r in rs if r.shift_accuracy]
        if shifts and len(shifts) == len(rs):
            out[m]["shift_accuracy_mean"] = {k: float(np.mean([d[k] for d in shifts])) for k in shifts[0]}
    return out


PAPER_FIGURES = {"fmcnn": 0.988, "svm": 0.964}


def markdown_table(summary: dict[str, dict[str, float]], title: str) -> str:
    lines = [
        f"**{title}**",
        "",
        "| model | accuracy (mean ± std) | top-3 | macro-F1 | folds | time (s) | ECE | paper |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, s in sorted(summary.items(), key=lambda kv: -kv[1]["accuracy_mean"]):
        paper = f"{PAPER_FIGURES[m]:.3f}" if m in PAPER_FIGURES else ""
        ece = f"{s['ece_mean']:.3f}" if "ece_mean" in s else ""
        lines.append(
            f"| {m} | {s['accuracy_mean']:.3f} ± {s['accuracy_std']:.3f} | {s['top3_mean']:.3f} "
            f"| {s['macro_f1_mean']:.3f} | {int(s['n_folds'])} | {s['fit_predict_s_total']:.0f} | {ece} | {paper} |"
        )
    shifted = {m: s["shift_accuracy_mean"] for m, s in summary.items() if "shift_accuracy_mean" in s}
    if shifted:
        keys = list(next(iter(shifted.values())))
        lines += [
            "",
            "Accuracy on the same test folds with the shift axis moved (cm-1; half +s, half -s; no calibration):",
            "",
            "| model | " + " | ".join(keys) + " |",
            "|---|" + "---|" * len(keys),
        ]
        for m, d in shifted.items():
            lines.append(f"| {m} | " + " | ".join(f"{d[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"
