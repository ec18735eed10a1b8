"""Build the edge reference library from training spectra (one row per training spectrum)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.library import ReferenceLibrary, build_library
from trainer.dataset import Dataset


def library_from_arrays(
    X: NDArray[np.float32],
    y: NDArray[np.int64],
    labels: tuple[str, ...],
    groups: NDArray[Any] | None = None,
    laser_nm: NDArray[np.int64] | None = None,
    embedding: NDArray[np.float32] | None = None,
) -> ReferenceLibrary:
    n = y.size
    ids = [str(g) for g in groups] if groups is not None else [f"row{i}" for i in range(n)]
    lasers = laser_nm if laser_nm is not None else np.zeros(n, np.int64)
    return build_library(labels, y, ids, lasers, X, embedding)


def library_from_dataset(
    ds: Dataset, rows: NDArray[np.int64] | None = None, embedding: NDArray[np.float32] | None = None
) -> ReferenceLibrary:
    """The library of `ds` (or of its `rows`, e.g. a CV training fold only)."""
    idx = np.arange(ds.y.size) if rows is None else np.asarray(rows)
    return library_from_arrays(ds.X[idx], ds.y[idx], ds.labels, ds.groups[idx], ds.laser_nm[idx], embedding)
