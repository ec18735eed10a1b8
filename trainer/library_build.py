"""Build the edge reference library from training spectra (one row per training spectrum)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.corr_view import CorrView
from edge.library import ReferenceLibrary, SearchParams, build_library
from trainer.dataset import Dataset

#: The correlation view of the hybrid's library search (edge/corr_view.py), in `trainer cv
#: --models hybrid*` and in `trainer export`. "sqrt_d1" since 2026-12-08: of five views, the one
#: leave-out search-match accuracy on the training fold alone chose most often (28 of 40 outer
#: folds: all 20 of the paper selection's, 8 of 10 on min8 grouped; on min8 stratified
#: pearson_d1 5, sqrt 4, sqrt_d1 1), and ahead of plain Pearson on every protocol's test folds
#: (bench/results/corr_views.md). One view for every protocol: the bundle ships one.
HYBRID_CORR_VIEW: CorrView = "sqrt_d1"


def library_from_arrays(
    X: NDArray[np.float32],
    y: NDArray[np.int64],
    labels: tuple[str, ...],
    groups: NDArray[Any] | None = None,
    laser_nm: NDArray[np.int64] | None = None,
    embedding: NDArray[np.float32] | None = None,
    view: CorrView = "pearson",
) -> ReferenceLibrary:
    n = y.size
    ids = [str(g) for g in groups] if groups is not None else [f"row{i}" for i in range(n)]
    lasers = laser_nm if laser_nm is not None else np.zeros(n, np.int64)
    return build_library(labels, y, ids, lasers, X, embedding, SearchParams(view=view))


def library_from_dataset(
    ds: Dataset,
    rows: NDArray[np.int64] | None = None,
    embedding: NDArray[np.float32] | None = None,
    view: CorrView = "pearson",
) -> ReferenceLibrary:
    """The library of `ds` (or of its `rows`, e.g. a CV training fold only)."""
    idx = np.arange(ds.y.size) if rows is None else np.asarray(rows)
    return library_from_arrays(ds.X[idx], ds.y[idx], ds.labels, ds.groups[idx], ds.laser_nm[idx], embedding, view)
