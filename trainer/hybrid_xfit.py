"""The hybrid with its fusion fitted on cross-fitted rows of the whole training fold (issue 12).

`trainer cv --models hybrid` fits the fusion on the FMCNN's early-stopping specimens only: a
tenth of the training fold. On a small selection they are few and mostly right (min8: 0.87-1.00
fused accuracy per fold, a handful of errors or none; bench/results/hybrid_svm.md), so the fit
has almost nothing to learn the weights from, and in half the grouped folds it sharpened the
temperature to its floor instead.

`hybrid_xfit` fits the same fusion (trainer.hybrid.fit_gated_fusion: the same weight and gap
grids, the same criteria) on every row of the training fold, each scored out of fold: the
training fold is split into INNER_FOLDS parts the way the outer protocol splits (by spectrum,
or by specimen when grouped); for each part an FMCNN (the `fmcnn` model's own configuration,
its own early stopping) is trained on the other parts, and the part's rows are scored by that
CNN and by the library of the whole training fold, embedded by that CNN, without what the
protocol hides (the row itself, or its specimen). The test fold is then scored exactly as
`hybrid` scores it: the fold's FMCNN (the `fmcnn` column's model) and the library of the whole
training fold. This is stacking; the test fold chooses nothing. It costs INNER_FOLDS more CNN
trainings per fold (kept in `trainer cv --model-dir` like the fold's own).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.fusion import fused_logits, softmax
from trainer.hybrid import (
    ALIGN_MIN_LAG_PTS,
    CNN_VIEWS,
    embedded_library,
    fit_gated_fusion,
    fused_test_logits,
    heldout_components,
    hidden_references,
    log_fusion,
    protocol_is_grouped,
    with_extra_term,
)
from trainer.library_build import HYBRID_CORR_VIEW

#: Parts of the training fold, each scored by a CNN trained on the others. 3, not 5: on this
#: machine an FMCNN on two-thirds of a min8 fold trains in about a minute, and 5 parts would
#: double the cost for CNNs trained on 80 % instead of 67 % of the fold.
INNER_FOLDS = 3


def inner_folds(y: NDArray[np.int64], groups: NDArray[Any], grouped: bool, k: int, seed: int) -> NDArray[np.int64]:
    """Part index (0..k-1) of every training row: stratified by class, whole specimens together
    when `grouped` (as the outer protocol splits)."""
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    part = np.empty(y.size, np.int64)
    with warnings.catch_warnings():
        # Classes with fewer members than parts are spread as far as they go: expected here.
        warnings.simplefilter("ignore", UserWarning)
        if grouped:
            splits = StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(y, y, groups)
        else:
            splits = StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y)
        for i, (_, held) in enumerate(splits):
            part[held] = i
    return part


def crossfit_components(parts: list[tuple[NDArray[np.int64], Any]]) -> Any:
    """`comps(Xq, gap)` over the concatenation of every part's rows (in `parts` order), each
    part's rows computed by its own `trainer.hybrid.heldout_components`."""

    def comps(Xq: NDArray[np.float32], gap: float) -> tuple[Any, Any, Any]:
        outs: list[list[NDArray[np.float64]]] = [[], [], []]
        start = 0
        for rows, part_comps in parts:
            stop = start + rows.size
            for o, a in zip(outs, part_comps(Xq[start:stop], gap), strict=True):
                o.append(np.asarray(a, np.float64))
            start = stop
        lp, corr, emb = (np.concatenate(o) for o in outs)
        return lp, corr, emb

    return comps


def hybrid_xfit_scores(
    X_train: NDArray[np.float32],
    y_train: NDArray[np.int64],
    X_test: NDArray[np.float32],
    n_classes: int,
    seed: int,
    groups: NDArray[Any] | None = None,
    ctx: Any = None,
    extra_term: Any = None,
) -> NDArray[np.float64]:
    """`trainer cv` model: the hybrid, its fusion fitted on the cross-fitted training fold.

    `extra_term` (experiments only, bench/hybrid_svm.py): another `trainer cv` model, cross-fitted
    on the same parts; its out-of-fold scores join the fitted fusion with a weight and
    temperature chosen on the same rows (trainer.hybrid.fit_extra_weight), and its model of the
    whole training fold scores the test fold. None: the hybrid as the edge runs it."""
    from trainer.fmcnn import TrainConfig
    from trainer.models import fold_fmcnn

    if groups is None:
        groups = np.arange(y_train.size)
    cfg = TrainConfig(seed=seed)  # the `fmcnn` model's own configuration
    part = inner_folds(y_train, groups, protocol_is_grouped(ctx), INNER_FOLDS, seed)
    parts = []
    for k in range(INNER_FOLDS):
        held = np.flatnonzero(part == k)
        rest = part != k
        m_k = fold_fmcnn(
            X_train[rest], y_train[rest], n_classes, cfg, groups[rest], ctx, kind=f"fmcnn-xfit{k}of{INNER_FOLDS}"
        )
        lib_k = embedded_library(m_k, X_train, y_train, groups, n_classes)
        parts.append((held, heldout_components(m_k, lib_k, hidden_references(ctx, groups, held), n_classes)))
    rows = np.concatenate([held for held, _ in parts])
    comps = crossfit_components(parts)
    params, info = fit_gated_fusion(
        comps,
        X_train[rows],
        y_train[rows],
        align_min_lag_pts=ALIGN_MIN_LAG_PTS,
        cnn_views=CNN_VIEWS,
        corr_view=HYBRID_CORR_VIEW,
    )
    log_fusion(params, info)
    model = fold_fmcnn(X_train, y_train, n_classes, cfg, groups, ctx)
    lib = embedded_library(model, X_train, y_train, groups, n_classes)
    s = fused_test_logits(model, lib, params, X_test, n_classes)
    if extra_term is None:
        return softmax(s, params.temperature)
    x_rows = np.concatenate(
        [
            np.asarray(extra_term(X_train[part != k], y_train[part != k], X_train[held], n_classes, seed), np.float64)
            for k, (held, _) in enumerate(parts)
        ]
    )
    s_rows = fused_logits(params, n_classes, *comps(X_train[rows], params.calibrated_gap))
    return with_extra_term(s, s_rows, x_rows, y_train[rows], extra_term(X_train, y_train, X_test, n_classes, seed))
