"""Fit the hybrid's fusion (edge.fusion.FusionParams) on held-out spectra, and the CV model.

Fitting never sees test folds. In `trainer cv --models hybrid` the CNN is the fold's FMCNN
(the very model of the `fmcnn` column, shared through `trainer cv --model-dir`): trained on
the training fold with whole specimens held out for early stopping. The fusion is fitted on
those held-out specimens, each spectrum scored the way the protocol scores a test spectrum:
against the library of the whole training fold without the spectrum itself (stratified
protocol: a test spectrum's sibling spectra of the same specimen are in the library) or
without its whole specimen (grouped protocol, and `trainer export`: a new specimen). The
test fold is then scored with the CNN and the library of the whole training fold.

Before 2026-12-04 (identity "hybrid: fusion fitted on calibration specimens ...") the hybrid
trained a CNN of its own without a calibration tenth of the specimens and always fitted the
fusion against a library without them: on the stratified protocol it then under-weighted the
correlation that finds a test spectrum's sibling (3 folds: hybrid 0.791, correlation 0.804).
The early-stopping specimens chose the CNN's epoch, so its log-probabilities on them are
slightly optimistic; the export keeps a separate calibration set (`calibration_rows`).

The fit: grid search of the correlation weight (CNN weight 1, embedding weight on the same
grid when embeddings exist) for the lowest log loss on the held-out rows, each candidate at
its own best temperature (ties broken by accuracy); then the temperature minimising the
top-label Brier score (trainer.temperature: the number a result reports); then the unknown
score (fused top-1 probability or
fused top-1 logit: the one with the higher AUROC between the held-out spectra and the same
spectra with their own mineral removed from the CNN and the library) and its threshold =
the value that keeps `keep_fraction` of the held-out known spectra.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.alignment import aligned, better_view, calibrated_view
from edge.fusion import FusionParams, fused_logits, softmax
from edge.library import ReferenceLibrary
from trainer.library_build import HYBRID_CORR_VIEW, library_from_arrays
from trainer.temperature import fit_temperature, reliability

#: edge.alignment: the CNN sees a spectrum moved onto its best match when |lag| >= 3 points
#: (3 cm-1). On the shipped bundle's held-out specimens (unshifted / 10 / 20 cm-1 off) it
#: took the fused top-1 from 0.785 / 0.687 / 0.500 to 0.757 / 0.752 / 0.720; 6 points gave the
#: same (0.762 / 0.748 / 0.720), and keeping the more confident of the moved and unmoved CNN
#: answers less (0.771 / 0.724 / 0.673).
ALIGN_MIN_LAG_PTS = 3

#: edge.alignment.CNN_VIEWS: a moved spectrum is scored moved and unmoved, each class keeping
#: the better score. Chosen on the early-stopping specimens of grouped CV training folds
#: (never their test folds); edge/alignment.py has the numbers.
CNN_VIEWS = "both"

#: Correlation and embedding weights tried (the CNN's is 1). Up to 200 until 2026-12-06, when all
#: 10 folds of the paper-selection v6 CV chose w_emb 200, the grid's edge, on their early-stopping
#: specimens: the fit wanted more embedding than the grid offered. Extended to 800 (v7 CV tables:
#: paper accuracy 0.823 -> 0.825, and 8 of 10 folds still chose 800); with weights this large the
#: fused temperature grows with them (T_MAX).
W_GRID = (0.0, 5.0, 10.0, 20.0, 30.0, 50.0, 80.0, 120.0, 200.0, 300.0, 500.0, 800.0)
#: Temperature search range of the fusion fit (50 before 2026-12-06; weights 4x larger need
#: temperatures 4x larger to say the same thing).
T_MIN, T_MAX = 0.1, 200.0

#: edge.alignment.calibrated_view: the gaps tried (-1: never gate). The fit keeps the one with
#: the best accuracy on the held-out rows (ties: the smaller gap, so no gate unless it gains)
#: among those that lose at most GAP_SHIFT_BUDGET on the same rows moved by +-GAP_SHIFT_CM1
#: (half each way) against no gate: a calibrated axis is the normal case (`edge calibrate`),
#: and a gate must not give up the shift tolerance that alignment bought. On the shipped
#: bundle's held-out specimens a gap of 0.03 gained 0.014 unshifted and lost 0.014 at 10 and
#: 20 cm-1 (bench/results/calibrated_gate.md).
GAP_GRID = (-1.0, 0.0, 0.01, 0.02, 0.03, 0.05)
GAP_SHIFT_CM1 = 10.0
GAP_SHIFT_BUDGET = 0.02


def corr_per_class(lib: ReferenceLibrary, X: NDArray[np.float32], n_classes: int) -> NDArray[np.float64]:
    """Best shift-tolerant correlation per class for every row (the edge's own search)."""
    return library_scores(lib, X, n_classes)[0]


def library_scores(
    lib: ReferenceLibrary,
    X: NDArray[np.float32],
    n_classes: int,
    align_min_lag_pts: int = 0,
    hide: NDArray[np.bool_] | None = None,
    calibrated_gap: float = -1.0,
) -> tuple[NDArray[np.float64], NDArray[np.float32], NDArray[np.int32]]:
    """(best correlation per class, the CNN's input, the lag it was moved by) for every row, as
    edge.pipeline.Analyzer computes them: zero-lag similarities and no move when the axis looks
    calibrated (edge.alignment.calibrated_view), else the CNN input is the row moved onto its
    best match (edge.alignment.aligned).

    `hide[i]` (one row per query, one column per reference) marks references query i must not
    see (itself, or its specimen): they are dropped after the search, as if absent."""
    out = np.empty((X.shape[0], n_classes), np.float64)
    Xc = np.empty_like(X, dtype=np.float32)
    moved = np.zeros(X.shape[0], np.int32)
    for i, x in enumerate(X):
        sim, lag, sim0 = lib.search(x)
        if hide is not None:
            sim = np.where(hide[i], np.float32(-np.inf), sim)
            sim0 = np.where(hide[i], np.float32(-np.inf), sim0)
        sim, lag = calibrated_view(sim, lag, sim0, calibrated_gap)
        out[i] = lib.per_class(sim, n_classes)
        Xc[i], moved[i] = aligned(x, sim, lag, align_min_lag_pts)
    return out, Xc, moved


def cnn_views(
    score: Any, X: NDArray[np.float32], Xc: NDArray[np.float32], moved: NDArray[np.int32], views: str
) -> tuple[NDArray[np.float64] | None, ...]:
    """`score(rows, index) -> per-class scores` (a tuple: CNN log p, embedding similarity per
    class, ...; None for a term that is absent) of the CNN inputs `Xc`, with the rows that were
    moved also scored unmoved and each class keeping its better score when `views` is "both"
    (edge.alignment.better_view, as the edge). `index`: the query rows scored, for a score that
    needs per-query data (e.g. the references each query must not see)."""
    out = [None if a is None else np.asarray(a, np.float64) for a in score(Xc, np.arange(X.shape[0]))]
    rows = np.flatnonzero(moved != 0)
    if views == "both" and rows.size:
        for o, a in zip(out, score(X[rows], rows), strict=True):
            if o is not None and a is not None:
                o[rows] = better_view(o[rows], a)
    return tuple(out)


def _log_loss(p: NDArray[np.float64], y: NDArray[np.int64]) -> float:
    return float(-np.mean(np.log(np.maximum(p[np.arange(y.size), y], 1e-12))))


def _auroc(known: NDArray[np.float64], unknown: NDArray[np.float64]) -> float:
    """P(known score > unknown score), ties half (Mann-Whitney U / n1 n2)."""
    if not known.size or not unknown.size:
        return float("nan")
    allv = np.concatenate([known, unknown])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(allv.size)
    sv = allv[order]
    # average ranks of ties
    _, first, counts = np.unique(sv, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    r = ranks[: known.size].sum()
    return float((r - known.size * (known.size + 1) / 2) / (known.size * unknown.size))


def _without_true_class(
    log_p: NDArray[np.float64], corr: NDArray[np.float64], emb: NDArray[np.float64] | None, y: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64] | None]:
    """Held-out rows as if their mineral were unknown: its CNN probability removed (the rest
    renormalised) and its references gone from the library."""
    rows = np.arange(y.size)
    p_true = np.exp(log_p[rows, y])
    lp = log_p - np.log(np.maximum(1.0 - p_true, 1e-12))[:, None]
    lp[rows, y] = -np.inf
    c = corr.copy()
    c[rows, y] = -np.inf
    e = None
    if emb is not None:
        e = emb.copy()
        e[rows, y] = -np.inf
    return lp, c, e


def fit_fusion(
    log_p: NDArray[np.float64],
    corr: NDArray[np.float64],
    y: NDArray[np.int64],
    emb: NDArray[np.float64] | None = None,
    keep_fraction: float = 0.95,
    align_min_lag_pts: int = 0,
    cnn_views: str = "moved",
    corr_view: str = "pearson",
) -> tuple[FusionParams, dict[str, Any]]:
    """Fusion weights, temperature and unknown threshold from held-out rows (y = true class).
    `corr_view`: the library search's view the correlations came from (written with the fit)."""
    n_classes = log_p.shape[1]
    # Weights by log loss, not accuracy: on a few hundred held-out spectra accuracy moves in
    # steps of one spectrum, so the accuracy-best weights were the luckiest ones. On the
    # shipped bundle's 238 calibration spectra they were w_corr 120 (calibration accuracy 0.790,
    # held-out 0.734); the log-loss choice was w_corr 10 (0.769 / 0.785).
    best: tuple[float, float, float, float] | None = None  # (loss, -acc, w_corr, w_emb)
    for w_corr in W_GRID:
        for w_emb in W_GRID if emb is not None else (0.0,):
            p = FusionParams(w_corr=w_corr, w_emb=w_emb)
            s = fused_logits(p, n_classes, log_p, corr, emb)
            t_nll = fit_temperature(s, y, T_MIN, T_MAX, criterion="nll")
            acc = float((s.argmax(axis=1) == y).mean())
            key = (_log_loss(softmax(s, t_nll), y), -acc, w_corr, w_emb)
            if best is None or key < best:
                best = key
    assert best is not None
    _, neg_acc, w_corr, w_emb = best
    s = fused_logits(FusionParams(w_corr=w_corr, w_emb=w_emb), n_classes, log_p, corr, emb)
    # Fused temperature by the top-label Brier score (trainer.temperature says why not NLL).
    t = fit_temperature(s, y, T_MIN, T_MAX, criterion="top_label_brier")
    # Unknown score: the one that best separates the held-out known spectra from the same
    # spectra with their own mineral removed (CNN renormalised without it, its references
    # gone: what a never-seen mineral looks like to the library, simulated for the CNN).
    fp = FusionParams(w_corr=w_corr, w_emb=w_emb)
    known = {"top_p": softmax(s, t).max(axis=1), "top_logit": s.max(axis=1)}
    s_out = fused_logits(fp, n_classes, *_without_true_class(log_p, corr, emb, y))
    pseudo = {"top_p": softmax(s_out, t).max(axis=1), "top_logit": s_out.max(axis=1)}
    aurocs = {k: _auroc(known[k], pseudo[k]) for k in known}
    score = max(aurocs, key=lambda k: (aurocs[k], k == "top_p"))
    thr = float(np.quantile(known[score], 1.0 - keep_fraction)) if y.size else 0.0
    params = FusionParams(
        w_cnn=1.0,
        w_emb=w_emb,
        w_corr=w_corr,
        temperature=float(t),
        unknown_threshold=thr,
        unknown_keep_fraction=keep_fraction,
        unknown_score=score,
        align_min_lag_pts=align_min_lag_pts,
        cnn_views=cnn_views,
        corr_view=corr_view,
    )
    info = {
        "unknown_score_auroc_class_removed": aurocs,
        "unknown_flagged_class_removed": float(np.mean(pseudo[score] < thr)) if y.size else float("nan"),
        "n_heldout": int(y.size),
        "heldout_accuracy": -neg_acc,
        "heldout_accuracy_cnn": float((log_p.argmax(axis=1) == y).mean()),
        "heldout_accuracy_corr": float((corr.argmax(axis=1) == y).mean()),
    }
    if emb is not None:
        info["heldout_accuracy_emb"] = float((emb.argmax(axis=1) == y).mean())
    # A weight at the grid's top means the fit wanted more than W_GRID offers: worth a look.
    info["weight_at_grid_edge"] = bool(max(w_corr, w_emb) >= W_GRID[-1])
    return params, info


def fit_gated_fusion(
    comps: Any, X: NDArray[np.float32], y: NDArray[np.int64], **fit_kw: Any
) -> tuple[FusionParams, dict[str, Any]]:
    """`fit_fusion` for every gap of GAP_GRID, the gap chosen as GAP_GRID says.

    `comps(X, gap) -> (CNN log p, correlation per class, embedding per class or None)` of the
    rows X, computed as the edge does with that `calibrated_gap`."""
    from trainer.augment import shift_stretch

    sign = np.where(np.arange(y.size) % 2 == 0, 1.0, -1.0)
    Xs = shift_stretch(X, sign * GAP_SHIFT_CM1, np.zeros(y.size))
    Xs = Xs / np.maximum(Xs.max(axis=1, keepdims=True), 1e-6)
    shifted_key = f"accuracy_{GAP_SHIFT_CM1:g}cm1"
    tried: list[dict[str, Any]] = []
    best: tuple[float, FusionParams, dict[str, Any]] | None = None
    for gap in GAP_GRID:
        log_p, corr, emb = comps(X, gap)
        params, info = fit_fusion(log_p, corr, y, emb, **fit_kw)
        params = replace(params, calibrated_gap=gap)
        lp_s, corr_s, emb_s = comps(Xs, gap)
        acc_s = float((fused_logits(params, log_p.shape[1], lp_s, corr_s, emb_s).argmax(axis=1) == y).mean())
        tried.append({"gap": gap, "accuracy": info["heldout_accuracy"], shifted_key: acc_s})
        within = acc_s >= tried[0][shifted_key] - GAP_SHIFT_BUDGET
        if within and (best is None or info["heldout_accuracy"] > best[0]):
            best = (info["heldout_accuracy"], params, info)
    assert best is not None  # the first gap (no gate) is always within its own budget
    _, params, info = best
    info["calibrated_gap_tried"] = tried
    return params, info


def hybrid_scores(
    X_train: NDArray[np.float32],
    y_train: NDArray[np.int64],
    X_test: NDArray[np.float32],
    n_classes: int,
    seed: int,
    groups: NDArray[Any] | None = None,
    ctx: Any = None,
    extra_term: Any = None,
) -> NDArray[np.float64]:
    """`trainer cv` model: FMCNN + embedding search + shift-tolerant correlation, fused (as the
    edge fuses them); library = training fold. `ctx` (trainer.models.FoldContext) gives the
    protocol and the fold's kept FMCNN.

    `extra_term` (experiments only, bench/hybrid_svm.py): another `trainer cv` model, trained on
    the fold without the early-stopping rows; its scores of those rows and of X_test become
    `_fused_on`'s extra evidence term. None: the hybrid as the edge runs it."""
    from trainer.fmcnn import TrainConfig, validation_rows
    from trainer.models import fold_fmcnn

    if groups is None:
        groups = np.arange(y_train.size)
    cfg = TrainConfig(seed=seed)  # the `fmcnn` model's own configuration
    model = fold_fmcnn(X_train, y_train, n_classes, cfg, groups, ctx)
    # The rows train_fmcnn held out for early stopping (its first draw from this stream).
    is_cal = validation_rows(y_train, cfg, np.random.default_rng(cfg.seed), groups)
    extra = None
    if extra_term is not None:

        def extra(cal: NDArray[np.bool_]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
            # One fit on the rows the fusion does not fit on; it scores the fusion's rows and the test.
            rows = np.concatenate([X_train[cal], X_test])
            both = extra_term(X_train[~cal], y_train[~cal], rows, n_classes, seed)
            n_cal = int(cal.sum())
            return both[:n_cal], both[n_cal:]

    return _fused_on(model, is_cal, X_train, y_train, X_test, n_classes, groups, ctx, extra=extra)


def hybrid_cal_scores(
    X_train: NDArray[np.float32],
    y_train: NDArray[np.int64],
    X_test: NDArray[np.float32],
    n_classes: int,
    seed: int,
    groups: NDArray[Any] | None = None,
    ctx: Any = None,
) -> NDArray[np.float64]:
    """`trainer cv` model: as `hybrid_scores`, but the CNN is trained without a calibration
    tenth of the specimens (`trainer export`'s split: they see neither the gradient nor early
    stopping) and the fusion is fitted on them, hidden as the protocol hides a test spectrum.
    Costs a second CNN per fold (kept in `ctx.model_dir` under its own name)."""
    from trainer.fmcnn import CALIB_FRACTION, TrainConfig, calibration_rows
    from trainer.models import fold_fmcnn

    if groups is None:
        groups = np.arange(y_train.size)
    is_cal = calibration_rows(y_train, groups, CALIB_FRACTION, seed)
    cfg = TrainConfig(seed=seed)
    model = fold_fmcnn(X_train[~is_cal], y_train[~is_cal], n_classes, cfg, groups[~is_cal], ctx, kind="fmcnn-cal")
    return _fused_on(model, is_cal, X_train, y_train, X_test, n_classes, groups, ctx)


def _fused_on(
    model: Any,
    is_cal: NDArray[np.bool_],
    X_train: NDArray[np.float32],
    y_train: NDArray[np.int64],
    X_test: NDArray[np.float32],
    n_classes: int,
    groups: NDArray[Any],
    ctx: Any,
    extra: Any = None,
) -> NDArray[np.float64]:
    """Fused probabilities of X_test: library = the whole training fold, fusion fitted on the
    `is_cal` rows, each scored against the library without what the protocol hides.

    `extra(cal_rows_mask) -> (scores of the is_cal rows, scores of X_test)`, each (n, n_classes):
    a further evidence term for experiments (bench/hybrid_svm.py), added to the fitted fusion's
    logits with its own weight and a refitted temperature, both chosen on the is_cal rows by log
    loss. Not on the edge: None (every model of `trainer cv`) leaves the fusion as it is."""
    lib = embedded_library(model, X_train, y_train, groups, n_classes)
    params = FusionParams(corr_view=lib.params.view)  # notes' naive fusion when no specimen could be held out
    if is_cal.any():
        cal = np.flatnonzero(is_cal)
        comps = heldout_components(model, lib, hidden_references(ctx, groups, cal), n_classes)
        params, info = fit_gated_fusion(
            comps,
            X_train[cal],
            y_train[cal],
            align_min_lag_pts=ALIGN_MIN_LAG_PTS,
            cnn_views=CNN_VIEWS,
            corr_view=lib.params.view,
        )
        log_fusion(params, info)
    s = fused_test_logits(model, lib, params, X_test, n_classes)
    if extra is not None and is_cal.any():
        x_cal, x_test = extra(is_cal)
        s_cal = fused_logits(params, n_classes, *comps(X_train[cal], params.calibrated_gap))
        return with_extra_term(s, s_cal, x_cal, y_train[cal], x_test)
    return softmax(s, params.temperature)


def with_extra_term(s_test: Any, s_fit: Any, x_fit: Any, y_fit: NDArray[np.int64], x_test: Any) -> NDArray[np.float64]:
    """Probabilities of the fused test logits plus an extra evidence term, its weight and the
    temperature chosen on the held-out rows (`fit_extra_weight`: fused logits `s_fit`, the
    term's scores `x_fit`, true classes `y_fit`); logged to stderr like the fusion fit."""
    w_x, t_x = fit_extra_weight(s_fit, np.asarray(x_fit, np.float64), y_fit)
    print(f"hybrid extra term: weight {w_x:g}, T {t_x:.2f}", file=sys.stderr, flush=True)
    x_t = np.asarray(x_test, np.float64)
    return softmax(s_test + w_x * np.where(np.isfinite(x_t), x_t, 0.0), t_x)


def _labels(n_classes: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(n_classes))


def _log_p(model: Any, X: NDArray[np.float32]) -> NDArray[np.float64]:
    # FMCNN outputs logits since issue 11 (softmax before): _probabilities handles both.
    return np.log(np.maximum(_probabilities(model, X), 1e-12))


def protocol_is_grouped(ctx: Any) -> bool:
    """Whether the CV protocol (trainer.models.FoldContext) keeps whole specimens together; no
    context counts as grouped (`trainer export`: a new specimen)."""
    return ctx is None or getattr(ctx, "group_by", None) == "specimen"


def embedded_library(
    model: Any, X: NDArray[np.float32], y: NDArray[np.int64], groups: NDArray[Any], n_classes: int
) -> ReferenceLibrary:
    """The library of rows X with `model`'s embeddings, as on the edge: the bottleneck vector
    (float here; the edge's int8), library rows embedded as they are."""
    return library_from_arrays(
        X, y, _labels(n_classes), groups, embedding=keras_embeddings(model, X), view=HYBRID_CORR_VIEW
    )


def hidden_references(ctx: Any, groups: NDArray[Any], rows: NDArray[np.int64]) -> NDArray[np.bool_]:
    """(len(rows), n_train) mask of the references each held-out row must not see: what a
    test spectrum of this protocol could not find in the library, its specimen (grouped) or
    only itself (stratified)."""
    key = groups if protocol_is_grouped(ctx) else np.arange(groups.size)
    return np.asarray(key[rows][:, None] == key[None, :])


def heldout_components(model: Any, lib: ReferenceLibrary, hide: NDArray[np.bool_], n_classes: int) -> Any:
    """`comps(Xq, gap) -> (CNN log p, correlation per class, embedding per class)` of held-out
    rows Xq (row i of Xq hides the references `hide[i]` marks), computed as the edge does with
    that `calibrated_gap`: fit_gated_fusion's input. The embedding search, as on the edge: the
    bottleneck vector (float here; the edge's int8); library rows embedded as they are, queries
    after alignment to their best match."""

    def scores_v(rows: NDArray[np.float32], idx: NDArray[np.int64]) -> tuple[Any, Any]:
        emb = emb_per_class(lib, keras_embeddings(model, rows), n_classes, hide[idx])
        return _log_p(model, rows), emb

    def comps(Xq: NDArray[np.float32], gap: float) -> tuple[Any, Any, Any]:
        corr_v, Xv, mv = library_scores(lib, Xq, n_classes, ALIGN_MIN_LAG_PTS, hide, gap)
        lp_v, emb_v = cnn_views(scores_v, Xq, Xv, mv, CNN_VIEWS)
        return lp_v, corr_v, emb_v

    return comps


def log_fusion(params: FusionParams, info: dict[str, Any]) -> None:
    """One line per fold in the run's log: what the fit chose, and what the gaps gave."""
    edge = " (a weight at the grid edge)" if info["weight_at_grid_edge"] else ""
    print(
        f"hybrid fusion: w_corr {params.w_corr:g}, w_emb {params.w_emb:g}, T {params.temperature:.2f}, "
        f"calibrated_gap {params.calibrated_gap:g}{edge}; "
        f"tried {json.dumps(info['calibrated_gap_tried'])}",
        file=sys.stderr,
        flush=True,
    )


def fused_test_logits(
    model: Any, lib: ReferenceLibrary, params: FusionParams, X_test: NDArray[np.float32], n_classes: int
) -> NDArray[np.float64]:
    """Fused logits (before the temperature) of test rows against the whole library, as the edge."""
    corr_t, Xt, mt = library_scores(
        lib, X_test, n_classes, params.align_min_lag_pts, calibrated_gap=params.calibrated_gap
    )

    def scores_t(rows: NDArray[np.float32], idx: NDArray[np.int64]) -> tuple[Any, Any]:
        emb = emb_per_class(lib, keras_embeddings(model, rows), n_classes) if params.w_emb else None
        return _log_p(model, rows), emb

    lp_t, emb_t = cnn_views(scores_t, X_test, Xt, mt, params.cnn_views)
    return fused_logits(params, n_classes, lp_t, corr_t, emb_t)


#: Weights tried for an experimental extra evidence term (`_fused_on`'s `extra`).
EXTRA_W_GRID = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


def fit_extra_weight(s: NDArray[np.float64], x: NDArray[np.float64], y: NDArray[np.int64]) -> tuple[float, float]:
    """(weight, temperature) of `s + weight * x` with the lowest log loss on held-out rows (each
    weight at its own NLL temperature; ties: the smaller weight), then the temperature by the
    top-label Brier score, as `fit_fusion` does. Non-finite x counts as no evidence (0)."""
    x = np.where(np.isfinite(x), x, 0.0)
    best: tuple[float, float] | None = None
    for w in EXTRA_W_GRID:
        z = s + w * x
        t = fit_temperature(z, y, T_MIN, T_MAX, criterion="nll")
        key = (_log_loss(softmax(z, t), y), w)
        if best is None or key < best:
            best = key
    assert best is not None
    w = best[1]
    return w, fit_temperature(s + w * x, y, T_MIN, T_MAX, criterion="top_label_brier")


def keras_embeddings(model: Any, X: NDArray[np.float32]) -> NDArray[np.float32]:
    """L2-normalised bottleneck vectors of a Keras FMCNN (the edge's embedding, in float)."""
    import keras

    sub = keras.Model(model.inputs, model.get_layer("bottleneck").output)
    e = np.asarray(sub.predict(X[..., None], verbose=0, batch_size=256), np.float32)
    return (e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def corr_lag_scores(
    X_train: NDArray[np.float32],
    y_train: NDArray[np.int64],
    X_test: NDArray[np.float32],
    n_classes: int,
    seed: int,
    groups: NDArray[Any] | None = None,
    ctx: Any = None,
) -> NDArray[np.float64]:
    """`trainer cv` model: the hybrid's library search alone (shift-tolerant correlation)."""
    lib = library_from_arrays(X_train, y_train, _labels(n_classes), groups)
    return corr_per_class(lib, X_test, n_classes)


def _probabilities(model: Any, X: NDArray[np.float32]) -> NDArray[np.float64]:
    """Class probabilities of a Keras model whose first output is a softmax or logits."""
    out = model.predict(X[..., None], verbose=0, batch_size=256)
    y = np.asarray(out[0] if isinstance(out, list | tuple) else out, np.float64)
    if np.allclose(y.sum(axis=1), 1.0, atol=1e-3) and (y >= 0).all():
        return y
    return softmax(y)


def edge_outputs(clf: Any, X: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    """(logits, embeddings or None) of every row through the edge's own int8 interpreter."""
    logits, embs = [], []
    for x in X:
        pred = clf.classify(x, k=1)
        logits.append(clf.logits(x) if pred.logits is None else pred.logits)
        embs.append(pred.embedding)
    n = len(clf.bundle.labels)
    lg = np.stack(logits) if logits else np.zeros((0, n), np.float32)
    has_emb = bool(embs) and all(e is not None for e in embs)
    return lg, (np.stack(embs) if has_emb else None)


def emb_per_class(
    lib: ReferenceLibrary, E: NDArray[np.float32], n_classes: int, hide: NDArray[np.bool_] | None = None
) -> NDArray[np.float64]:
    """Best cosine similarity per class for every row's embedding (the edge's own search);
    `hide` as in `library_scores`."""
    out = np.empty((E.shape[0], n_classes), np.float64)
    for i, e in enumerate(E):
        sim = lib.embedding_similarities(e)
        if hide is not None:
            sim = np.where(hide[i], np.float32(-np.inf), sim)
        out[i] = lib.per_class(sim, n_classes)
    return out


def write_hybrid(bundle_dir: Any, model: Any, train: Any, heldout: Any, cnn_temperature: float) -> dict[str, Any]:
    """`trainer export` step: the library of the training rows and the fusion fitted on the
    held-out rows, written into the bundle directory. Returns the manifest sections.

    Everything goes through the int8 model as the edge runs it (edge.classifier on the
    provisional bundle in `bundle_dir`): the library's embeddings (when the model has an
    embedding output) and the held-out CNN log-probabilities, at the temperature the export
    fits on the same held-out int8 logits (trainer.temperature.fit_temperature). `model`
    (the Keras model) is not used: the edge never sees it."""
    from edge.bundle import load_bundle
    from edge.classifier import Classifier
    from edge.library import save_library
    from trainer.library_build import library_from_dataset

    del model
    clf = Classifier(load_bundle(bundle_dir))
    _lt, emb_train = edge_outputs(clf, train.X)
    lib = library_from_dataset(train, embedding=emb_train, view=HYBRID_CORR_VIEW)
    params, info = fit_hybrid(clf, lib, heldout, cnn_temperature)
    hashes = save_library(lib, bundle_dir)
    size = {k: (Path(bundle_dir) / k).stat().st_size for k in hashes}
    return {
        "fusion": params.to_dict()
        | {"fitted_on": f"{heldout.y.size} held-out spectra, library of {len(lib)} training spectra"},
        "library": {
            "file": "library.npz",
            "format": "raman-edge-library/2",
            "n_references": len(lib),
            "embedding": lib.has_embedding,
            "size_bytes": size,
            "fit": info,
        },
    }


def fit_hybrid(
    clf: Any, lib: ReferenceLibrary, heldout: Any, cnn_temperature: float
) -> tuple[FusionParams, dict[str, Any]]:
    """The fusion fitted on `heldout` (a Dataset of specimens the library and the CNN's
    training never saw) through the edge's own int8 model `clf` and library search `lib`, with
    the CNN log-probabilities at the bundle's own temperature (the manifest's `temperature`,
    which the edge applies before fusing)."""
    comps = fusion_inputs(clf, lib, cnn_temperature, ALIGN_MIN_LAG_PTS, CNN_VIEWS)
    params, info = fit_gated_fusion(
        comps,
        heldout.X,
        heldout.y,
        align_min_lag_pts=ALIGN_MIN_LAG_PTS,
        cnn_views=CNN_VIEWS,
        corr_view=lib.params.view,
    )
    info["cnn_temperature"] = float(cnn_temperature)
    return params, info


def fusion_inputs(
    clf: Any, lib: ReferenceLibrary, cnn_temperature: float, align_min_lag_pts: int, views: str = "moved"
) -> Any:
    """`values (n, grid) -> (CNN log p, correlation per class, embedding per class or None)`,
    as the edge computes them (edge.pipeline.Analyzer.evidence), for many rows at once."""
    n = len(clf.bundle.labels)

    def cnn(X: NDArray[np.float32]) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        logits, emb_h = edge_outputs(clf, X)
        log_p = np.log(np.maximum(softmax(logits, float(cnn_temperature)), 1e-12))
        emb = emb_per_class(lib, emb_h, n) if (emb_h is not None and lib.has_embedding) else None
        return log_p, emb

    def comps(X: NDArray[np.float32], calibrated_gap: float = -1.0) -> tuple[Any, Any, Any]:
        corr, X_cnn, moved = library_scores(lib, X, n, align_min_lag_pts, calibrated_gap=calibrated_gap)
        log_p, emb = cnn_views(lambda rows, _idx: cnn(rows), X, X_cnn, moved, views)
        return log_p, corr, emb

    return comps


def fit_noisy_fusion(bundle_dir: Any, calibration: Any, seed: int = 0) -> tuple[FusionParams, dict[str, Any]]:
    """The bundle's fusion (manifest as written in `bundle_dir`) plus a `noisy` set fitted on
    emulated raw readouts of `calibration` (trainer.noisy_fusion), through the edge's own raw
    path on this bundle."""
    from edge.bundle import load_bundle
    from edge.pipeline import Analyzer
    from trainer.noisy_fusion import fit_noisy

    an = Analyzer(load_bundle(bundle_dir))
    clean = replace(an.fusion, noisy=None, noisy_below_snr=0.0)
    assert an.library is not None
    t_cnn = an.classifier.temperature if an.classifier.temperature is not None else 1.0
    comps = fusion_inputs(an.classifier, an.library, t_cnn, clean.align_min_lag_pts, clean.cnn_views)
    return fit_noisy(clean, comps, an, calibration.X, calibration.y, seed)


def fused_reliability(analyzer: Any, heldout: Any) -> dict[str, Any]:
    """Accuracy and ECE of the fused top-1 (what a result reports) on `heldout`, through the
    edge's own identification path (`analyzer`: an edge.pipeline.Analyzer on the bundle)."""
    probs = np.stack([analyzer.evidence(x).fused.probabilities for x in heldout.X])
    rep = reliability(probs, heldout.y)
    return {k: rep[k] for k in ("ece", "mean_confidence", "accuracy")} | {"n": int(heldout.y.size)}
