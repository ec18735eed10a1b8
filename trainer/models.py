"""Classifiers compared by `trainer cv`, behind one small interface.

A model is a function `(X_train, y_train, X_test, n_classes, seed, groups=None) -> scores`
(`groups`: the specimen of every training row, for models that hold out by specimen) where
scores has shape (n_test, n_classes) and a higher score means a more likely class (probabilities,
decision values or similarities; only the ranking is used). Adding a model = adding one
function to `MODELS`.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

Scores = NDArray[np.float64]
F32 = NDArray[np.float32]
I64 = NDArray[np.int64]
Groups = NDArray[Any]  # specimen id (RRUFF ID) of every row


class ModelFn(Protocol):
    def __call__(
        self, X_train: F32, y_train: I64, X_test: F32, n_classes: int, seed: int, groups: Groups | None = None
    ) -> Scores: ...


def _spread(proba: NDArray[np.float64], classes: NDArray[np.int64], n_classes: int) -> Scores:
    """Put per-fitted-class scores into global class columns (absent classes: -inf)."""
    out = np.full((proba.shape[0], n_classes), -np.inf)
    out[:, classes] = proba
    return out


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
    X_train: F32, y_train: I64, X_test: F32, n_classes: int, seed: int, groups: Groups | None = None
) -> Scores:
    """Search-match: Pearson correlation with every library spectrum; best match per class.

    What RRUFF/CrystalSleuth-style tools do: no training, the library is the model.
    """
    sim = _standardize_rows(X_test) @ _standardize_rows(X_train).T
    return best_per_class(sim, y_train, n_classes)


def knn_scores(
    X_train: F32, y_train: I64, X_test: F32, n_classes: int, seed: int, groups: Groups | None = None
) -> Scores:
    """1-NN (Euclidean), scored by negative distance to each class's nearest spectrum."""
    a = X_test.astype(np.float64)
    b = X_train.astype(np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return best_per_class(-np.sqrt(np.maximum(d2, 0)), y_train, n_classes)


def rf_scores(
    X_train: F32, y_train: I64, X_test: F32, n_classes: int, seed: int, groups: Groups | None = None
) -> Scores:
    from sklearn.ensemble import RandomForestClassifier

    m = RandomForestClassifier(n_estimators=500, n_jobs=-1, random_state=seed)
    m.fit(X_train, y_train)
    return _spread(m.predict_proba(X_test), m.classes_, n_classes)


def svm_scores(
    X_train: F32, y_train: I64, X_test: F32, n_classes: int, seed: int, groups: Groups | None = None
) -> Scores:
    from sklearn.svm import SVC

    m = SVC(kernel="linear", C=100, decision_function_shape="ovr", random_state=seed)
    m.fit(X_train, y_train)
    dec = m.decision_function(X_test)
    if dec.ndim == 1:  # two classes
        dec = np.stack([-dec, dec], axis=1)
    return _spread(dec, m.classes_, n_classes)


def lda_scores(
    X_train: F32, y_train: I64, X_test: F32, n_classes: int, seed: int, groups: Groups | None = None
) -> Scores:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    m = LinearDiscriminantAnalysis()
    m.fit(X_train, y_train)
    return _spread(m.predict_proba(X_test), m.classes_, n_classes)


def _fmcnn(X_train: F32, y_train: I64, X_test: F32, n_classes: int, cfg: Any, groups: Groups | None) -> Scores:
    from trainer.fmcnn import train_fmcnn

    model, _hist = train_fmcnn(X_train, y_train, n_classes, cfg, groups=groups)
    return np.asarray(model.predict(X_test[..., None], verbose=0, batch_size=256), np.float64)


def fmcnn_scores(
    X_train: F32, y_train: I64, X_test: F32, n_classes: int, seed: int, groups: Groups | None = None
) -> Scores:
    from trainer.fmcnn import TrainConfig

    return _fmcnn(X_train, y_train, X_test, n_classes, TrainConfig(seed=seed), groups)


def fmcnn_noaug_scores(
    X_train: F32, y_train: I64, X_test: F32, n_classes: int, seed: int, groups: Groups | None = None
) -> Scores:
    """FMCNN without instrument augmentation: measures what augmentation buys."""
    from trainer.fmcnn import TrainConfig

    return _fmcnn(X_train, y_train, X_test, n_classes, TrainConfig(seed=seed, augment=False), groups)


def fmcnn_spectrum_val_scores(
    X_train: F32, y_train: I64, X_test: F32, n_classes: int, seed: int, groups: Groups | None = None
) -> Scores:
    """FMCNN early-stopped on random validation *spectra* (siblings of training spectra)."""
    from trainer.fmcnn import TrainConfig

    return _fmcnn(X_train, y_train, X_test, n_classes, TrainConfig(seed=seed, val_split="spectrum"), groups)


def fmcnn_specimen_val_scores(
    X_train: F32, y_train: I64, X_test: F32, n_classes: int, seed: int, groups: Groups | None = None
) -> Scores:
    """FMCNN early-stopped on held-out *specimens*: the stopping point tracks unseen specimens."""
    from trainer.fmcnn import TrainConfig

    return _fmcnn(X_train, y_train, X_test, n_classes, TrainConfig(seed=seed, val_split="specimen"), groups)


MODELS: dict[str, ModelFn] = {
    "fmcnn": fmcnn_scores,
    "fmcnn_noaug": fmcnn_noaug_scores,
    "fmcnn_spectrum_val": fmcnn_spectrum_val_scores,
    "fmcnn_specimen_val": fmcnn_specimen_val_scores,
    "svm": svm_scores,
    "knn": knn_scores,
    "rf": rf_scores,
    "lda": lda_scores,
    "corr": corr_scores,
}
