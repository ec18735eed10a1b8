"""Two-mineral mixtures: a non-negative least-squares fit by the references of the top candidates.

A spot on a rock often holds two minerals; the spectrum is then close to a non-negative
combination of theirs (intensities add; both are max-normalised, so the weights are shares
of the fitted intensity, not of volume). The first mineral is the best single NNLS fit among
the best references of the `n_candidates` most similar classes; the second is found by
searching the library with the residual (matching pursuit: a minor component hardly moves
the mixture's own similarity ranking) and refitting each candidate pair by
non-negative least squares (`nnls`: exact for one or two columns in closed form, pure NumPy:
scipy.optimize would cost ~50 MB RSS on the device). The pair is reported only when it explains the spectrum
significantly better than the best single reference:

    (r1 - r2) / r1 >= min_gain    and    the smaller fraction >= min_fraction

with r1, r2 the relative residual norms of the best single and best pair. The criterion's
values are chosen on synthetic mixtures of training-fold spectra (bench/hybrid_mixture.py)
and stored in the bundle manifest (`mixture`); the defaults are that run's choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.library import ReferenceLibrary


@dataclass(frozen=True)
class MixtureParams:
    n_candidates: int = 6
    min_gain: float = 0.3
    min_fraction: float = 0.15

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> MixtureParams:
        raw = manifest.get("mixture") or {}
        return cls(**{k: type(getattr(cls(), k))(v) for k, v in raw.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class MixtureFit:
    components: tuple[tuple[str, float], ...] | None  # (mineral, fraction) largest first, or None
    single_residual: float
    pair_residual: float
    gain: float


def nnls(A: NDArray[np.float64], x: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
    """min ||A w - x|| subject to w >= 0, for A with one or two columns: (w, residual norm).

    Exact: the unconstrained least-squares solution if it is non-negative, else the best
    single-column fit with the other weight at 0 (the KKT solutions of a 2-variable NNLS)."""
    A = np.asarray(A, np.float64)
    x = np.asarray(x, np.float64)
    if A.ndim != 2 or A.shape[1] not in (1, 2) or A.shape[0] != x.shape[0]:
        raise ValueError(f"nnls here takes a (n, 1) or (n, 2) matrix, got {A.shape} for {x.shape}")
    g = A.T @ A  # Gram matrix, 1x1 or 2x2
    b = A.T @ x
    xx = float(x @ x)

    def resid(w: NDArray[np.float64]) -> float:
        return float(np.sqrt(max(xx - 2 * float(w @ b) + float(w @ g @ w), 0.0)))

    def single(j: int) -> NDArray[np.float64]:
        w = np.zeros(A.shape[1])
        if g[j, j] > 0:
            w[j] = max(0.0, b[j] / g[j, j])
        return w

    if A.shape[1] == 1:
        w = single(0)
        return w, resid(w)
    det = g[0, 0] * g[1, 1] - g[0, 1] * g[1, 0]
    if det > 1e-12 * max(g[0, 0] * g[1, 1], 1e-300):
        w = np.array([g[1, 1] * b[0] - g[0, 1] * b[1], g[0, 0] * b[1] - g[1, 0] * b[0]]) / det
        if (w >= 0).all():
            return w, resid(w)
    cands = [single(0), single(1)]
    w = min(cands, key=resid)
    return w, resid(w)


def _shifted(v: NDArray[np.float32], lag: int) -> NDArray[np.float32]:
    """Reference moved onto the query's axis (library lags move the query onto the reference)."""
    if lag == 0:
        return v
    out = np.zeros_like(v)
    if lag > 0:
        out[:-lag] = v[lag:]
    else:
        out[-lag:] = v[:lag]
    return out


def fit_mixture(
    values: NDArray[np.floating],
    lib: ReferenceLibrary,
    sim: NDArray[np.floating],
    lag: NDArray[np.integer] | None = None,
    params: MixtureParams | None = None,
) -> MixtureFit:
    """Decide one mineral or two for a preprocessed spectrum, given its library similarities."""
    p = params or MixtureParams()
    x = np.asarray(values, np.float64)
    per_class = lib.per_class(sim)
    k = int(min(p.n_candidates, np.isfinite(per_class).sum()))
    if k < 2:
        return MixtureFit(None, 1.0, 1.0, 0.0)
    norm = max(float(np.linalg.norm(x)), 1e-12)

    def column(i: int, lags: NDArray[np.integer] | None) -> NDArray[np.float64]:
        ref = lib.reference(i)
        return _shifted(ref, int(lags[i]) if lags is not None else 0).astype(np.float64)

    # First mineral: the candidate (by similarity) whose best reference fits best alone.
    singles = []
    for c in np.argsort(-per_class)[:k]:
        i = lib.best_reference(int(c), sim)
        col = column(i, lag)
        w, r = nnls(col[:, None], x)
        singles.append((r, int(c), i, col, float(w[0])))
    r1, ca, ia, col_a, wa = min(singles, key=lambda t: t[0])
    r1 /= norm
    # Second mineral: matching pursuit - search the library with what the first leaves
    # unexplained (a minor component hardly moves the mixture's own similarity ranking).
    rest = x - wa * col_a
    sim2, lag2 = lib.similarities(rest.astype(np.float32))
    pc2 = lib.per_class(sim2)
    pc2[ca] = -np.inf
    best: tuple[float, int, NDArray[np.float64], NDArray[np.float64]] | None = None
    for c in np.argsort(-pc2)[: k - 1]:
        if not np.isfinite(pc2[c]):
            continue
        ib = lib.best_reference(int(c), sim2)
        pair = np.stack([col_a, column(ib, lag2)], axis=1)
        w, r = nnls(pair, x)
        if best is None or r < best[0]:
            best = (r, int(c), w, pair)
    if best is None:
        return MixtureFit(None, r1, r1, 0.0)
    r2, cb, w, pair = best[0] / norm, best[1], best[2], best[3]
    names = {0: lib.minerals[ca], 1: lib.minerals[cb]}
    gain = (r1 - r2) / r1 if r1 > 0 else 0.0
    # Shares of the fitted intensity: weight x that reference's total intensity.
    share = w * pair.sum(axis=0)
    frac = share / share.sum() if share.sum() > 0 else np.array([1.0, 0.0])
    if gain < p.min_gain or frac.min() < p.min_fraction:
        return MixtureFit(None, r1, r2, gain)
    comp = sorted(((names[0], float(frac[0])), (names[1], float(frac[1]))), key=lambda t: -t[1])
    rounded = round(comp[0][1], 4)
    return MixtureFit(((comp[0][0], rounded), (comp[1][0], round(1.0 - rounded, 4))), r1, r2, gain)
