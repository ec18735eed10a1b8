"""Classifiers compared by `trainer cv`, behind one small interface.

A model is a function `(X_train, y_train, X_test, n_classes, seed, groups=None, ctx=None) -> scores`
(`groups`: the specimen of every training row, for models that hold out by specimen; `ctx`: the
fold's `FoldContext`, for models that must know the protocol or share a trained model) where
scores has shape (n_test, n_classes) and a higher score means a more likely class (probabilities,
decision values or similarities; only the ranking is used). Adding a model = adding one
function to `MODELS`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from trainer.library_build import HYBRID_CORR_VIEW

Scores = NDArray[np.float64]
F32 = NDArray[np.float32]
I64 = NDArray[np.int64]
Groups = NDArray[Any]  # specimen id (RRUFF ID) of every row


@dataclass(frozen=True)
class FoldContext:
    """What a CV model may know about its fold beyond the arrays (trainer.cv fills it in)."""

    #: the outer protocol: None (folds stratified by spectrum) or "specimen" (grouped)
    group_by: str | None = None
    #: where trained fold models are kept, so that models built on the same CNN (fmcnn and the
    #: hybrid) train it once per fold and a resumed run reuses it; None keeps nothing
    model_dir: Path | None = None
    #: the dataset and fold settings (trainer.cv.fold_fingerprint): a kept model of other data
    #: is never picked up
    fingerprint: str = ""
    repeat: int = 0
    fold: int = 0

    def model_path(self, kind: str, identity: str) -> Path | None:
        if self.model_dir is None:
            return None
        tag = hashlib.sha256(identity.encode()).hexdigest()[:10]
        return self.model_dir / f"{self.fingerprint}-{kind}-{tag}-r{self.repeat}f{self.fold}.keras"


class ModelFn(Protocol):
    def __call__(
        self,
        X_train: F32,
        y_train: I64,
        X_test: F32,
        n_classes: int,
        seed: int,
        groups: Groups | None = None,
        ctx: FoldContext | None = None,
    ) -> Scores: ...


def _spread(proba: NDArray[np.float64], classes: NDArray[np.int64], n_classes: int) -> Scores:
    """Put per-fitted-class scores into global class columns (absent classes: -inf)."""
    out = np.full((proba.shape[0], n_classes), -np.inf)
    out[:, classes] = proba
    return out


def spread_decision(dec: NDArray[np.float64], classes: NDArray[np.int64], n_classes: int) -> Scores:
    """`_spread` for an sklearn decision_function, whose two-class form is one column."""
    if dec.ndim == 1:
        dec = np.stack([-dec, dec], axis=1)
    return _spread(dec, classes, n_classes)


def best_per_class(sim: NDArray[np.float64], y_train: NDArray[np.int64], n_classes: int) -> Scores:
    """For each test row and class, the best similarity among that class's training rows."""
    out = np.full((sim.shape[0], n_classes), -np.inf)
    order = np.argsort(y_train, kind="stable")
    ys = y_train[order]
    starts = np.flatnonzero(np.r_[True, ys[1:] != ys[:-1]])
    out[:, ys[starts]] = np.maximum.reduceat(sim[:, order], starts, axis=1)
    return out


def _standardize_rows(X: NDArray[np.float32]) -> NDArray[np.float64]:
    Z = X.astype(np.float64) - X.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(Z, axis=1, keepdims=True)
    return Z / np.where(norm == 0, 1.0, norm)


def corr_scores(
    X_train: F32,
    y_train: I64,
    X_test: F32,
    n_classes: int,
    seed: int,
    groups: Groups | None = None,
    ctx: FoldContext | None = None,
) -> Scores:
    """Search-match: Pearson correlation with every library spectrum; best match per class.

    What RRUFF/CrystalSleuth-style tools do: no training, the library is the model.
    """
    sim = _standardize_rows(X_test) @ _standardize_rows(X_train).T
    return best_per_class(sim, y_train, n_classes)


def corr_sqrt_d1_scores(
    X_train: F32,
    y_train: I64,
    X_test: F32,
    n_classes: int,
    seed: int,
    groups: Groups | None = None,
    ctx: FoldContext | None = None,
) -> Scores:
    """Search-match as `corr_scores`, correlating the square roots of the spectra and their
    slopes instead of the spectra (edge.corr_view "sqrt_d1": the hybrid's library view)."""
    from edge.corr_view import correlations

    return best_per_class(correlations(X_test, X_train, "sqrt_d1"), y_train, n_classes)


def knn_scores(
    X_train: F32,
    y_train: I64,
    X_test: F32,
    n_classes: int,
    seed: int,
    groups: Groups | None = None,
    ctx: FoldContext | None = None,
) -> Scores:
    """1-NN (Euclidean), scored by negative distance to each class's nearest spectrum."""
    a = X_test.astype(np.float64)
    b = X_train.astype(np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return best_per_class(-np.sqrt(np.maximum(d2, 0)), y_train, n_classes)


def rf_scores(
    X_train: F32,
    y_train: I64,
    X_test: F32,
    n_classes: int,
    seed: int,
    groups: Groups | None = None,
    ctx: FoldContext | None = None,
) -> Scores:
    from sklearn.ensemble import RandomForestClassifier

    m = RandomForestClassifier(n_estimators=500, n_jobs=-1, random_state=seed)
    m.fit(X_train, y_train)
    return _spread(m.predict_proba(X_test), m.classes_, n_classes)


def svm_scores(
    X_train: F32,
    y_train: I64,
    X_test: F32,
    n_classes: int,
    seed: int,
    groups: Groups | None = None,
    ctx: FoldContext | None = None,
) -> Scores:
    from sklearn.svm import SVC

    m = SVC(kernel="linear", C=100, decision_function_shape="ovr", random_state=seed)
    m.fit(X_train, y_train)
    # In row chunks: libsvm computes every one-vs-one decision (n_classes^2 / 2 per row, 723 k
    # for 1,203 classes) before the ovr reduction; 3,300 test rows at once (a fold with its
    # shifted copies) took 23 GB and were killed by the OOM killer.
    dec = np.concatenate([m.decision_function(X_test[i : i + 128]) for i in range(0, len(X_test), 128)])
    return spread_decision(dec, m.classes_, n_classes)


def lda_scores(
    X_train: F32,
    y_train: I64,
    X_test: F32,
    n_classes: int,
    seed: int,
    groups: Groups | None = None,
    ctx: FoldContext | None = None,
) -> Scores:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    m = LinearDiscriminantAnalysis()
    m.fit(X_train, y_train)
    return _spread(m.predict_proba(X_test), m.classes_, n_classes)


def fold_fmcnn(
    X_train: F32,
    y_train: I64,
    n_classes: int,
    cfg: Any,
    groups: Groups | None = None,
    ctx: FoldContext | None = None,
    *,
    kind: str = "fmcnn",
) -> Any:
    """The fold's FMCNN trained with `cfg` (trainer.fmcnn.TrainConfig), or the one an earlier
    model of the same fold kept in `ctx.model_dir` (same data, fold, training config and
    `kind`: which rows of the fold it was trained on)."""
    from trainer.fmcnn import train_fmcnn

    path = ctx.model_path(kind, _train_identity(cfg)) if ctx is not None else None
    if path is not None and path.exists():
        import keras

        return keras.models.load_model(path, compile=False)
    model, _hist = train_fmcnn(X_train, y_train, n_classes, cfg, groups=groups)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".partial.keras")
        model.save(tmp)
        tmp.replace(path)  # a killed run leaves no half-written model to be picked up
    return model


def _train_identity(cfg: Any) -> str:
    d = cfg.to_dict()
    d.pop("seed")
    return json.dumps(d, sort_keys=True, default=str)


def _fmcnn(**overrides: Any) -> ModelFn:
    """FMCNN trained with `TrainConfig(seed=seed, **overrides)`, scored by its softmax."""

    def scores(
        X_train: F32,
        y_train: I64,
        X_test: F32,
        n_classes: int,
        seed: int,
        groups: Groups | None = None,
        ctx: FoldContext | None = None,
    ) -> Scores:
        from trainer.fmcnn import TrainConfig

        model = fold_fmcnn(X_train, y_train, n_classes, TrainConfig(seed=seed, **overrides), groups, ctx)
        return np.asarray(model.predict(X_test[..., None], verbose=0, batch_size=256), np.float64)

    def identity() -> str:
        # What a cached CV fold of this model depends on besides the data: the training config.
        from trainer.fmcnn import TrainConfig

        return _train_identity(TrainConfig(**overrides))

    scores.identity = identity  # type: ignore[attr-defined]
    return scores


MODELS: dict[str, ModelFn] = {
    "fmcnn": _fmcnn(),
    # Without instrument augmentation: measures what augmentation buys.
    "fmcnn_noaug": _fmcnn(augment=False),
    # Early-stopped on held-out *specimens* rather than random spectra (siblings of training
    # spectra): does the stopping point then track unseen specimens better?
    "fmcnn_specimen_val": _fmcnn(val_split="specimen"),
    "svm": svm_scores,
    "knn": knn_scores,
    "rf": rf_scores,
    "lda": lda_scores,
    "corr": corr_scores,
    "corr_sqrt_d1": corr_sqrt_d1_scores,
}


def _lazy(attr: str, identity: str = "", module: str = "trainer.hybrid") -> ModelFn:
    """A model defined in `module` (imported on use: it imports the edge library search).
    `identity` names the recipe, so a CV fold cached by an earlier recipe is redone."""

    def scores(
        X_train: F32,
        y_train: I64,
        X_test: F32,
        n_classes: int,
        seed: int,
        groups: Groups | None = None,
        ctx: FoldContext | None = None,
    ) -> Scores:
        import importlib

        fn: ModelFn = getattr(importlib.import_module(module), attr)
        return fn(X_train, y_train, X_test, n_classes, seed, groups=groups, ctx=ctx)

    if identity:
        scores.identity = lambda: identity  # type: ignore[attr-defined]
    return scores


# Issue 12: CNN + shift-tolerant library search fused (library = the training fold only).
# v2 (2026-12-04): the CNN is the fold's FMCNN itself, and the fusion is fitted on its
# early-stopping specimens scored the way the protocol scores a test spectrum (trainer.hybrid).
# v6 tables (2026-12-06): plus the calibrated-axis gate (edge.alignment.calibrated_view).
# v7 tables (2026-12-06): the fusion's weight grid up to 800 (trainer.hybrid.W_GRID says why).
# v9 tables (2026-12-08): the library searched with the sqrt_d1 correlation view
# (trainer.library_build.HYBRID_CORR_VIEW); "pearson" before.
MODELS["hybrid"] = _lazy(
    "hybrid_scores",
    identity="hybrid v2: the fold's FMCNN; fusion fitted on its early-stopping specimens against the training "
    "fold without what the protocol holds out; weights by log loss; aligned CNN (3); better of moved and unmoved "
    "views; calibrated-axis gate chosen on the same specimens (10 cm-1 budget 0.02); weight grid to 800; "
    f"correlation view {HYBRID_CORR_VIEW}",
)
# The export's own split inside each fold: a CNN trained without calibration specimens, the
# fusion fitted on them (hidden as the protocol hides a test spectrum). A second CNN per fold.
MODELS["hybrid_cal"] = _lazy(
    "hybrid_cal_scores",
    identity="hybrid_cal: FMCNN trained without calibration specimens (0.1); fusion fitted on them against the "
    "training fold without what the protocol holds out; weights by log loss; aligned CNN (3); better of moved "
    "and unmoved views; calibrated-axis gate chosen on the same specimens (10 cm-1 budget 0.02); weight grid to 800; "
    f"correlation view {HYBRID_CORR_VIEW}",
)
MODELS["corr_lag"] = _lazy("corr_lag_scores")
# The same hybrid, its fusion fitted on every training row scored out of fold by CNNs trained on
# the other parts (trainer.hybrid_xfit): three more CNNs per fold.
MODELS["hybrid_xfit"] = _lazy(
    "hybrid_xfit_scores",
    identity="hybrid_xfit v1: the fold's FMCNN and library; fusion (hybrid v2's grids and criteria) fitted on "
    "every training row scored out of fold by 3 FMCNNs trained on the other parts (split as the protocol) against "
    "the training fold without what the protocol holds out; "
    f"correlation view {HYBRID_CORR_VIEW}",
    module="trainer.hybrid_xfit",
)
