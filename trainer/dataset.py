"""RRUFF spectra -> model-ready arrays, through the one shared preprocessing module."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge.errors import SpectrumError
from edge.preprocess import PreprocessSpec, preprocess
from trainer.rruff import RamanSpectrum, SelectionCounts, load_rruff, select


@dataclass(frozen=True)
class Dataset:
    X: NDArray[np.float32]  # (n, grid_n), preprocessed model input
    y: NDArray[np.int64]  # index into labels
    labels: tuple[str, ...]  # sorted mineral names
    groups: NDArray[np.str_]  # RRUFF ID (specimen) per row
    files: tuple[str, ...]
    laser_nm: NDArray[np.int64]  # 0 where unknown
    coverage: NDArray[np.float64]
    spec: PreprocessSpec
    counts: SelectionCounts | None = None

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def subset(self, idx: NDArray[np.int64]) -> Dataset:
        return Dataset(
            self.X[idx],
            self.y[idx],
            self.labels,
            self.groups[idx],
            tuple(self.files[i] for i in idx),
            self.laser_nm[idx],
            self.coverage[idx],
            self.spec,
            self.counts,
        )


def from_spectra(
    spectra: list[RamanSpectrum],
    spec: PreprocessSpec | None = None,
    labels: tuple[str, ...] | None = None,
    counts: SelectionCounts | None = None,
) -> Dataset:
    """Preprocess library spectra (RRUFF Processed => corrected=True)."""
    spec = spec or PreprocessSpec()
    rows, keep = [], []
    cov = []
    for _i, s in enumerate(spectra):
        try:
            p = preprocess(s.shift_cm1, s.intensity, spec, corrected=s.data_type == "Processed")
        except SpectrumError:
            continue  # e.g. a spectrum entirely outside the grid; counted by the caller
        rows.append(p.values)
        cov.append(p.coverage)
        keep.append(s)
    labels = labels or tuple(sorted({s.mineral for s in keep}))
    index = {m: i for i, m in enumerate(labels)}
    X = np.stack(rows) if rows else np.zeros((0, spec.grid_n), np.float32)
    return Dataset(
        X=X,
        y=np.array([index.get(s.mineral, -1) for s in keep], dtype=np.int64),
        labels=labels,
        groups=np.array([s.rruff_id for s in keep]),
        files=tuple(s.file for s in keep),
        laser_nm=np.array([s.laser_nm or 0 for s in keep], dtype=np.int64),
        coverage=np.array(cov),
        spec=spec,
        counts=counts,
    )


def build_dataset(
    path: str | os.PathLike[str],
    selection: str = "paper",
    spec: PreprocessSpec | None = None,
    *,
    minerals: set[str] | None = None,
) -> Dataset:
    spectra, _report = load_rruff(path)
    chosen, counts = select(spectra, selection)
    if minerals is not None:
        chosen = [s for s in chosen if s.mineral in minerals]
    return from_spectra(chosen, spec, counts=counts)
