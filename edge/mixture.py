"""Two-mineral mixtures: a non-negative least-squares fit by the references of the top candidates.

A spot on a rock often holds two minerals; the spectrum is then close to a non-negative
combination of theirs (intensities add; both are max-normalised, so the weights are shares
of the fitted intensity, not of volume). The fit, pure NumPy (scipy.optimize would cost
~50 MB RSS on the device):

1. Candidates from the spectrum itself: the `refs_per_class` most similar references of each
   of the `n_candidates` most similar classes. The best single non-negative fit among them
   is the one-mineral explanation.
2. Candidates from what that fit leaves: the residual is searched in the library (a matching
   pursuit step: a minor component hardly moves the mixture's own similarity ranking, but
   it dominates the residual), giving the `refs_per_class` best references of each of the
   `n_residual_candidates` most similar other classes.
3. Every pair of candidate references of two different minerals is fitted by two-column NNLS
   at once from the Gram matrix of the candidates (closed form, vectorised over the pairs);
   the pair with the smallest residual and both weights positive is the two-mineral answer.
   Two references per class (rather than one) let a mineral's specimen-to-specimen variation
   be matched by its closer reference in the company of the other mineral.

The pair is reported only when it explains the spectrum significantly better than the best
single reference, and what the single reference leaves is intensity it lacks:

    gain   = (r1 - r2) / r1                 >= min_gain
    excess = |max(x - s, 0)|^2 / |x - s|^2  >= min_excess
    the smaller fraction                    >= min_fraction

with r1, r2 the relative residual norms (|x - fit| / |x|) of the best single reference fit s
and of the best pair. The excess is there because a pure spectrum of a specimen the library
does not hold also gains from a second reference (0.3 for the top 5 % of pure training
spectra, bench/hybrid_mixture.py), but its residual is bands too strong *and* too weak
(orientation, crystallinity), while a second mineral leaves bands the first reference does
not have: mostly positive residual (median excess 0.89 for training mixtures, 0.60 for pure
spectra). A noise-aware form ((r1^2 - r2^2) against the noise energy estimated from the
first differences) separated pure from mixed spectra worse: the residual of a pure spectrum
against another specimen's reference is mostly specimen variation, not noise. The values are
chosen on synthetic mixtures of training spectra (bench/hybrid_mixture.py) and may be set in
the bundle manifest (`mixture`); the defaults are that run's choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.library import ReferenceLibrary


@dataclass(frozen=True)
class MixtureParams:
    n_candidates: int = 6  # classes ranked by the spectrum's own similarity
    n_residual_candidates: int = 6  # other classes ranked by the similarity of the residual
    refs_per_class: int = 2  # best references of each candidate class in the fit
    min_gain: float = 0.275
    min_excess: float = 0.7
    min_fraction: float = 0.05

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> MixtureParams:
        """The manifest's `mixture` section; keys it lacks (older bundles) keep their defaults."""
        raw = manifest.get("mixture") or {}
        return cls(**{k: type(getattr(cls(), k))(v) for k, v in raw.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class MixtureFit:
    components: tuple[tuple[str, float], ...] | None  # (mineral, fraction) largest first, or None
    single_residual: float  # r1: |x - best single fit| / |x|
    pair_residual: float  # r2: the same for the best pair (r1 when there is none)
    gain: float  # (r1 - r2) / r1
    excess: float = 0.0  # share of the single fit's residual energy where x exceeds the fit
    candidates: tuple[str, ...] = ()  # minerals whose references entered the pair search
    pair: tuple[str, str] | None = None  # the best pair with its fractions, before the criterion
    pair_fractions: tuple[float, float] | None = None


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


def pair_fits(
    G: NDArray[np.float64], b: NDArray[np.float64], xx: float
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Two-column fits of x by every pair (i < j) of columns, from their Gram matrix G = C C^T,
    b = C x and xx = x . x: (i, j, squared residual, weights (n_pairs, 2)).

    Only interior solutions count (both weights > 0): a pair whose NNLS puts a weight at 0 is
    a single-reference fit, not a mixture, and gets an infinite residual."""
    i, j = np.triu_indices(G.shape[0], 1)
    gii, gjj, gij = G[i, i], G[j, j], G[i, j]
    det = gii * gjj - gij * gij
    ok = det > 1e-12 * np.maximum(gii * gjj, 1e-300)  # not collinear
    safe = np.where(ok, det, 1.0)
    wi = (gjj * b[i] - gij * b[j]) / safe
    wj = (gii * b[j] - gij * b[i]) / safe
    ok &= (wi > 0) & (wj > 0)
    r2 = xx - 2 * (wi * b[i] + wj * b[j]) + wi * wi * gii + 2 * wi * wj * gij + wj * wj * gjj
    r2 = np.where(ok, np.maximum(r2, 0.0), np.inf)
    return i, j, r2, np.stack([wi, wj], axis=1)


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


def _columns(lib: ReferenceLibrary, rows: list[int], lags: list[int]) -> NDArray[np.float64]:
    """References `rows`, dequantised and each moved by its lag as _shifted does, (k, grid_n).

    One gather from the (possibly memory-mapped) int8 block instead of a row at a time."""
    r = np.asarray(rows, np.int64)
    ref = np.take(lib.spectra_q, r, axis=0).view(np.ndarray).astype(np.float64)
    ref *= lib.scale[r, None]
    ref += lib.offset[r, None]
    n = ref.shape[1]
    out = np.zeros_like(ref)
    for k, lag in enumerate(lags):
        if lag >= 0:
            out[k, : n - lag] = ref[k, lag:]
        else:
            out[k, -lag:] = ref[k, : n + lag]
    return out


def _best_rows(lib: ReferenceLibrary, sim: NDArray[np.floating], classes: NDArray[np.integer], m: int) -> list[int]:
    """The m most similar references of each class, in class order."""
    sim = np.asarray(sim)
    out: list[int] = []
    for c in classes:
        rows = lib.class_rows(int(c))
        if rows.size > m:
            rows = rows[np.argpartition(-sim[rows], m - 1)[:m]]
        out.extend(int(r) for r in rows)
    return out


def _top_classes(per_class: NDArray[np.floating], k: int) -> NDArray[np.int64]:
    """The k most similar classes, most similar first (classes without a reference left out)."""
    k = min(k, per_class.size)
    if k <= 0:
        return np.zeros(0, np.int64)
    top = np.argpartition(-per_class, k - 1)[:k]
    top = top[np.argsort(-per_class[top], kind="stable")]
    return top[np.isfinite(per_class[top])]


def fit_mixture(
    values: NDArray[np.floating],
    lib: ReferenceLibrary,
    sim: NDArray[np.floating],
    lag: NDArray[np.integer] | None = None,
    params: MixtureParams | None = None,
) -> MixtureFit:
    """Decide one mineral or two for a preprocessed spectrum, given its library similarities
    (`sim`, `lag`: the library's Pearson search; a library with another view searches Pearson
    here once more, and `sim`, `lag` are not used)."""
    p = params or MixtureParams()
    if lib.params.view != "pearson":
        # NNLS mixes spectra linearly, as Pearson compares them: a square-root view ranks the
        # components of a mixture worse (bench/results/hybrid_mixture.md). One more search.
        sim, lag = lib.similarities(np.asarray(values, np.float32), "pearson")
    x = np.asarray(values, np.float64)
    xx = float(x @ x)
    norm = max(np.sqrt(xx), 1e-12)
    m = max(1, p.refs_per_class)
    first = _top_classes(lib.per_class(sim), p.n_candidates)
    if first.size == 0:
        return MixtureFit(None, 1.0, 1.0, 0.0)
    lags0 = np.zeros(len(lib), np.int64) if lag is None else np.asarray(lag)
    keys = [(r, int(lags0[r])) for r in _best_rows(lib, sim, first, m)]
    C = _columns(lib, [r for r, _s in keys], [s for _r, s in keys])
    b = C @ x
    g = np.einsum("ij,ij->i", C, C)
    explained = np.where(g > 0, np.maximum(b, 0.0) ** 2 / np.where(g > 0, g, 1.0), 0.0)
    j1 = int(np.argmax(explained))
    # Second stage: search the library with what the best single reference leaves unexplained.
    ca = int(lib.class_idx[keys[j1][0]])
    rest = x - (max(b[j1], 0.0) / g[j1] if g[j1] > 0 else 0.0) * C[j1]
    # Pearson whatever the library's view: a residual has negative parts, which a square-root
    # view clips away, and NNLS mixes spectra linearly, as Pearson compares them.
    sim2, lag2 = lib.similarities(rest.astype(np.float32), "pearson")
    pc2 = lib.per_class(sim2)
    pc2[ca] = -np.inf
    second = _top_classes(pc2, p.n_residual_candidates)
    seen = set(keys)
    extra = [k for k in ((r, int(lag2[r])) for r in _best_rows(lib, sim2, second, m)) if k not in seen]
    if extra:
        C2 = _columns(lib, [r for r, _s in extra], [s for _r, s in extra])
        C = np.vstack([C, C2])
        b = np.concatenate([b, C2 @ x])
        keys += extra
    g = np.einsum("ij,ij->i", C, C)
    explained = np.where(g > 0, np.maximum(b, 0.0) ** 2 / np.where(g > 0, g, 1.0), 0.0)
    j1 = int(np.argmax(explained))
    r1 = float(np.sqrt(max(xx - float(explained[j1]), 0.0))) / norm
    rest = x - (max(b[j1], 0.0) / g[j1] if g[j1] > 0 else 0.0) * C[j1]
    pos = np.maximum(rest, 0.0)
    excess = float(pos @ pos) / max(float(rest @ rest), 1e-300)
    cls = lib.class_idx[[r for r, _s in keys]]
    candidates = tuple(dict.fromkeys(lib.minerals[int(c)] for c in cls))
    i, j, r2sq, w = pair_fits(C @ C.T, b, xx)
    r2sq = np.where(cls[i] != cls[j], r2sq, np.inf)  # two different minerals
    if r2sq.size == 0 or not np.isfinite(r2sq.min()):
        return MixtureFit(None, r1, r1, 0.0, excess, candidates)
    k = int(np.argmin(r2sq))
    r2 = float(np.sqrt(r2sq[k])) / norm
    gain = (r1 - r2) / r1 if r1 > 0 else 0.0
    # Shares of the fitted intensity: weight x that reference's total intensity.
    share = w[k] * np.array([C[i[k]].sum(), C[j[k]].sum()])
    frac = share / share.sum() if share.sum() > 0 else np.array([1.0, 0.0])
    names = (lib.minerals[int(cls[i[k]])], lib.minerals[int(cls[j[k]])])
    comp = sorted(zip(names, (float(frac[0]), float(frac[1])), strict=True), key=lambda t: -t[1])
    rounded = round(comp[0][1], 4)
    ordered = ((comp[0][0], rounded), (comp[1][0], round(1.0 - rounded, 4)))
    pair = (ordered[0][0], ordered[1][0])
    fracs = (ordered[0][1], ordered[1][1])
    if gain < p.min_gain or excess < p.min_excess or frac.min() < p.min_fraction:
        return MixtureFit(None, r1, r2, gain, excess, candidates, pair, fracs)
    return MixtureFit(ordered, r1, r2, gain, excess, candidates, pair, fracs)
