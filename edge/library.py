"""Reference library: preprocessed spectra with provenance, and fast search over them.

Pure numpy (no TensorFlow, no model). One library = one `library.npz` (arrays, stored
uncompressed) plus one `library.json` (metadata, format tag, SHA-256 of the npz).
docs/bundle.md describes the files (format `raman-edge-library/2`):

    library.npz   spectra_q   int8    (n, grid_n)  x ~= offset + scale * q, per row
                  scale       float32 (n,)
                  offset      float32 (n,)
                  class_idx   int32   (n,)         index into `minerals` (json)
                  laser_nm    int32   (n,)         0 where unknown
                  embedding_q int8    (n, d)       optional: e ~= embedding_scale * q, L2-normalised
                  embedding_scale float32 (n,)
    library.json  format, grid_n, minerals, rruff_ids, npz_sha256, model_sha256

Compact: one byte per grid point (5.6 MB for the paper selection's 4,133 references, a
quarter of float32), and memory-mapped: the npz is a zip of *stored* (uncompressed) .npy
members, so `spectra_q` is mapped straight from the file. Its pages are clean and
file-backed (the kernel can drop them), and only the rows the fine search stage reads are
touched per spectrum. The int8 step is (max - min) / 254 of each row: the rounding noise
changes a correlation by ~1e-4. Version 1 libraries (float16 spectra, compressed) still load.

Search is shift tolerant: a Raman-shift axis error of 10-20 cm-1 collapses zero-lag
correlation (identification-notes.md: 0.81 -> 0.16), so the similarity of a spectrum to a
reference is the best Pearson correlation over a window of lags. To stay well under a
millisecond for thousands of references it runs in two stages: a coarse screen on a
block-averaged grid (all references, a few coarse lags; a float32 array of grid_n / 8
columns, built at load) and a fine re-score at full resolution, 1 cm-1 lags, for the
best-screened references only, computed from their int8 rows and per-row constants:

    corr_i(lag) = a_i * (q_i . z_lag) + b_i * sum(z_lag),  a_i = scale_i / |x_i - mean_i|,
                                                           b_i = (offset_i - mean_i) / |x_i - mean_i|

What is correlated is the bundle's choice (`SearchParams.view`, edge/corr_view.py): the spectra
themselves ("pearson", as above), or the mean of the correlations of their square roots and of
the slopes of those ("sqrt_d1"), each part searched at the same lags with the same formula on
int8 rows derived at load.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge.corr_view import CORR_VIEWS, CorrView, standardize, view_parts
from edge.errors import BundleError

LIBRARY_FORMAT = "raman-edge-library/2"
READABLE_FORMATS = ("raman-edge-library/1", LIBRARY_FORMAT)
NPZ_NAME = "library.npz"
JSON_NAME = "library.json"
_CHUNK_ROWS = 512  # rows dequantised at a time when the derived arrays are built


class LibraryError(BundleError):
    """A library file that is missing, damaged or does not belong to this bundle."""


@dataclass(frozen=True)
class SearchParams:
    """Lag window and screening sizes (grid points of the model grid, 1 cm-1 each today)."""

    max_lag_pts: int = 20  # +-20 cm-1: the shift errors the CNN also has to tolerate
    coarse_block_pts: int = 8  # coarse grid = 8 cm-1 bins
    n_refine: int = 48  # references re-scored at full resolution
    #: What is correlated (edge.corr_view): "pearson", the spectra themselves (the stored int8
    #: rows, memory-mapped), or "sqrt_d1", the mean of the correlations of their square roots
    #: and of the slopes of those (derived from the stored rows at load: two int8 arrays of the
    #: library's size in memory). The bundle's manifest says which (fusion `corr_view`).
    view: CorrView = "pearson"

    def __post_init__(self) -> None:
        if self.view not in CORR_VIEWS:
            raise LibraryError(f"unknown correlation view {self.view!r}; known: {', '.join(CORR_VIEWS)}")


# -- quantisation (pure) ---------------------------------------------------------------------
def quantize_rows(x: NDArray[np.floating]) -> tuple[NDArray[np.int8], NDArray[np.float32], NDArray[np.float32]]:
    """(q, scale, offset) with x ~= offset + scale * q per row, q in [-127, 127]."""
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise LibraryError(f"spectra must be 2-D (n, grid_n), got shape {x.shape}")
    if x.shape[0] == 0:
        return np.zeros(x.shape, np.int8), np.zeros(0, np.float32), np.zeros(0, np.float32)
    lo, hi = x.min(axis=1), x.max(axis=1)
    offset = ((hi + lo) / 2).astype(np.float32)
    scale = ((hi - lo) / 254).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0)[:, None]
    q = np.clip(np.rint((x - offset[:, None]) / safe), -127, 127).astype(np.int8)
    return q, scale, offset


def quantize_embedding(e: NDArray[np.floating]) -> tuple[NDArray[np.int8], NDArray[np.float32]]:
    """(q, scale) with e ~= scale * q per row (symmetric; rows are L2-normalised first)."""
    e = np.asarray(e, np.float32)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    scale = (np.abs(e).max(axis=1) / 127).astype(np.float32) if e.size else np.zeros(e.shape[0], np.float32)
    q = np.clip(np.rint(e / np.where(scale > 0, scale, 1.0)[:, None]), -127, 127).astype(np.int8)
    return q, scale


def _blocks(x: NDArray[np.float32], block: int) -> NDArray[np.float32]:
    n = x.shape[-1] // block * block
    return x[..., :n].reshape(*x.shape[:-1], n // block, block).mean(axis=-1)


def _lagged(
    z: NDArray[np.float32], max_lag: int, step: int = 1, out: NDArray[np.float32] | None = None
) -> NDArray[np.float32]:
    """Rows = the standardized query moved by each lag (zero filled; not re-standardized:
    the few points lost at an edge change the norm by well under 1 %). Row i is the lag
    -max_lag + i * step: a window of the zero-padded query (one C copy, not a loop per lag)."""
    n = z.size
    pad = np.zeros(n + 2 * max_lag, np.float32)
    pad[max_lag : max_lag + n] = z
    # Window k starts at pad[k]: it is the query moved by lag max_lag - k, so the lags in
    # ascending order are the windows from the last one back.
    rows = np.lib.stride_tricks.sliding_window_view(pad, n)[::-step]
    if out is None:
        return np.ascontiguousarray(rows)
    np.copyto(out, rows)
    return out


@dataclass(frozen=True)
class Match:
    index: int  # row in the library
    mineral: str
    rruff_id: str
    similarity: float  # best correlation over the lag window
    lag_pts: int  # reference best aligned when the query is moved by this many points


#: One (int8 rows, a, b) per part of a view (edge.corr_view.view_parts): part p's correlation
#: at a lag is a * (q . z_lag) + b * sum(z_lag), and the similarity is the mean over the parts.
_Parts = tuple[tuple[NDArray[np.int8], NDArray[np.float32], NDArray[np.float32]], ...]


@dataclass(frozen=True)
class _Derived:
    """Search arrays built once per library (float32; ~grid_n / 8 columns + per-row constants)."""

    #: view -> (coarse_t, parts). coarse_t: (grid_n // block, n) standardized block means,
    #: transposed: the screen is then (lags, blocks) @ (blocks, n) and its max over lags a
    #: reduction of contiguous rows (a max along a short last axis costs as much as the product
    #: itself). "pearson" is always there (its parts are the stored rows, a = scale / norm,
    #: b = (offset - mean) / norm: nothing copied); the library's own view too.
    views: dict[str, tuple[NDArray[np.float32], _Parts]]
    emb: NDArray[np.float32] | None  # (n, d) dequantised embeddings
    order: NDArray[np.int64]
    starts: NDArray[np.int64]
    present: NDArray[np.int64]


def _derive(
    q: NDArray[np.int8],
    scale: NDArray[np.float32],
    offset: NDArray[np.float32],
    class_idx: NDArray[np.int32],
    emb_q: NDArray[np.int8] | None,
    emb_scale: NDArray[np.float32] | None,
    params: SearchParams,
) -> _Derived:
    n, g = q.shape
    blk = params.coarse_block_pts
    coarse_t = np.empty((g // blk, n), np.float32)
    a = np.empty(n, np.float32)
    b = np.empty(n, np.float32)
    derived = params.view != "pearson"
    n_parts = len(view_parts(np.zeros((1, g), np.float32), params.view)) if derived else 0
    # Derived views: each part quantised to int8 per row like the stored spectra (the parts are
    # standardised, so a = the row's step and b = its offset).
    dq = [np.empty((n, g), np.int8) for _ in range(n_parts)]
    da = [np.empty(n, np.float32) for _ in range(n_parts)]
    db = [np.empty(n, np.float32) for _ in range(n_parts)]
    dcoarse_t = np.empty((g // blk, n), np.float32) if derived else coarse_t
    for s in range(0, n, _CHUNK_ROWS):  # bounded temporaries: a few MB at most
        e = min(n, s + _CHUNK_ROWS)
        x = offset[s:e, None] + scale[s:e, None] * q[s:e].astype(np.float32)
        m = x.mean(axis=1)
        nrm = np.linalg.norm(x - m[:, None], axis=1)
        nrm = np.where(nrm == 0, 1.0, nrm)
        a[s:e] = scale[s:e] / nrm
        b[s:e] = (offset[s:e] - m) / nrm
        coarse_t[:, s:e] = standardize(_blocks((x - m[:, None]) / nrm[:, None], blk)).T
        if derived:
            parts = view_parts(x, params.view)
            for p, part in enumerate(parts):
                dq[p][s:e], da[p][s:e], db[p][s:e] = quantize_rows(part)
            # The screen ranks on the first part alone (the square root for "sqrt_d1"): block
            # means of a slope mostly cancel, and the screen only has to keep the best
            # references among the n_refine that are re-scored on every part.
            dcoarse_t[:, s:e] = standardize(_blocks(parts[0], blk)).T
    views: dict[str, tuple[NDArray[np.float32], _Parts]] = {"pearson": (coarse_t, ((q, a, b),))}
    if derived:
        views[params.view] = (dcoarse_t, tuple(zip(dq, da, db, strict=True)))
    emb = None
    if emb_q is not None and emb_scale is not None:
        emb = (emb_q.astype(np.float32) * emb_scale[:, None]).astype(np.float32)
    order = np.argsort(class_idx, kind="stable")
    cs = class_idx[order]
    starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]]) if n else np.zeros(0, np.int64)
    present = cs[starts].astype(np.int64) if n else starts
    return _Derived(views, emb, order, starts, present)


@dataclass(frozen=True)
class ReferenceLibrary:
    minerals: tuple[str, ...]  # class names; class_idx indexes this
    class_idx: NDArray[np.int32]
    rruff_ids: tuple[str, ...]
    laser_nm: NDArray[np.int32]
    spectra_q: NDArray[np.int8]  # (n, grid_n), possibly a read-only memory map
    scale: NDArray[np.float32]  # (n,)
    offset: NDArray[np.float32]  # (n,)
    embedding_q: NDArray[np.int8] | None = None  # (n, d)
    embedding_scale: NDArray[np.float32] | None = None  # (n,)
    params: SearchParams = SearchParams()
    _d: _Derived = field(init=False, repr=False, compare=False)
    _scratch: threading.local = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.rruff_ids)
        if self.spectra_q.ndim != 2 or self.spectra_q.shape[0] != n or self.class_idx.shape != (n,):
            raise LibraryError(f"library arrays disagree: {self.spectra_q.shape} spectra, {n} ids")
        if self.scale.shape != (n,) or self.offset.shape != (n,) or self.laser_nm.shape != (n,):
            raise LibraryError(f"library row constants disagree with its {n} spectra")
        if n and (self.class_idx.min() < 0 or self.class_idx.max() >= len(self.minerals)):
            raise LibraryError("library class index outside its mineral list")
        if (self.embedding_q is None) != (self.embedding_scale is None):
            raise LibraryError("library embedding needs both embedding_q and embedding_scale")
        if self.embedding_q is not None and (
            self.embedding_q.ndim != 2 or self.embedding_q.shape[0] != n or self.embedding_scale.shape != (n,)  # type: ignore[union-attr]
        ):
            raise LibraryError(f"library has {self.embedding_q.shape[0]} embeddings for {n} spectra")
        if self.grid_n < self.params.coarse_block_pts:
            raise LibraryError(f"library grid of {self.grid_n} points is shorter than one coarse block")
        d = _derive(
            self.spectra_q,
            self.scale,
            self.offset,
            self.class_idx,
            self.embedding_q,
            self.embedding_scale,
            self.params,
        )
        object.__setattr__(self, "_d", d)
        object.__setattr__(self, "_scratch", threading.local())

    def __len__(self) -> int:
        return len(self.rruff_ids)

    @property
    def grid_n(self) -> int:
        return int(self.spectra_q.shape[1])

    @property
    def has_embedding(self) -> bool:
        return self._d.emb is not None

    @property
    def embedding(self) -> NDArray[np.float32] | None:
        return self._d.emb

    def reference(self, i: int) -> NDArray[np.float32]:
        """Reference row i, dequantised (the preprocessed spectrum as stored)."""
        return (self.offset[i] + self.scale[i] * self.spectra_q[i].astype(np.float32)).astype(np.float32)

    @property
    def spectra(self) -> NDArray[np.float32]:
        """All references dequantised, (n, grid_n) float32: a full copy, for tools and tests."""
        return (self.offset[:, None] + self.scale[:, None] * np.asarray(self.spectra_q, np.float32)).astype(np.float32)

    def nbytes(self) -> dict[str, int]:
        """Bytes held per array (the int8 block may be a file mapping rather than heap)."""
        d = self._d
        views = d.views.values()
        out = {
            "spectra_q": int(self.spectra_q.nbytes),
            "coarse": int(sum(c.nbytes for c, _ in views)),
            "row_constants": int(
                self.scale.nbytes
                + self.offset.nbytes
                + sum(pa.nbytes + pb.nbytes for _, parts in views for _, pa, pb in parts)
            ),
        }
        if self.params.view != "pearson":
            out["view"] = int(sum(pq.nbytes for pq, _, _ in d.views[self.params.view][1]))
        if d.emb is not None:
            out["embedding"] = int(d.emb.nbytes + (self.embedding_q.nbytes if self.embedding_q is not None else 0))
        return out

    def _buffers(self, k: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Per-thread scratch reused across spectra: (k, grid_n) rows and (2L+1, grid_n) lags."""
        s = self._scratch
        lags = 2 * self.params.max_lag_pts + 1
        rows = getattr(s, "rows", None)
        if rows is None or rows.shape[0] < k:
            s.rows = np.empty((max(k, self.params.n_refine), self.grid_n), np.float32)
            s.lagged = np.empty((lags, self.grid_n), np.float32)
        return s.rows[:k], s.lagged

    # -- search ----------------------------------------------------------------------------
    def similarities(
        self, values: NDArray[np.floating], view: CorrView | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
        """Shift-tolerant correlation of one preprocessed spectrum with every reference:
        (similarity, lag) per reference (`search`)."""
        sim, lag, _ = self.search(values, view)
        return sim, lag

    def search(
        self, values: NDArray[np.floating], view: CorrView | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int32], NDArray[np.float32]]:
        """Shift-tolerant correlation of one preprocessed spectrum with every reference.

        Returns (similarity, lag, zero-lag similarity) per reference; the zero-lag similarity is
        the lag profile's middle column (free: the profile is computed anyway), what plain
        search-match on a calibrated axis scores. References outside the refined set carry
        their coarse-screen similarity, capped at the lowest refined one: block averaging
        smooths away pixel noise, so on a noisy spectrum a coarse similarity reads higher than
        the full-resolution one of the same reference, and uncapped it outranked the refined
        references (at a fluorescence background 10x the strongest band, 30 of the shipped
        bundle's 238 calibration spectra were matched to a reference that was never re-scored;
        correlation top-1 0.634 uncapped, 0.672 capped; clean spectra: none, unchanged).

        `view`: the library's own (`params.view`) when None; "pearson" is always available
        (the mixture fit searches a residual, which has negative parts, with it)."""
        x = np.asarray(values, np.float32)
        if x.shape != (self.grid_n,):
            raise LibraryError(f"spectrum has {x.shape} points, the library grid {self.grid_n}")
        p = self.params
        view = view or p.view
        if view not in self._d.views:
            raise LibraryError(f"this library is searched with {p.view!r} or 'pearson', not {view!r}")
        coarse_t, parts = self._d.views[view]
        zs = view_parts(x, view)
        zc = standardize(_blocks(zs[0], p.coarse_block_pts))
        coarse_lag = max(1, -(-p.max_lag_pts // p.coarse_block_pts))
        sim = np.maximum.reduce(_lagged(zc, coarse_lag) @ coarse_t, axis=0)
        lag = np.zeros(len(self), np.int32)
        sim0 = sim.copy()
        k = min(p.n_refine, len(self))
        if k:
            top = np.sort(np.argpartition(-sim, k - 1)[:k])  # sorted: row reads in file order
            rows, lagged = self._buffers(k)
            fine = np.zeros((k, 2 * p.max_lag_pts + 1), np.float32)
            for (pq, pa, pb), z in zip(parts, zs, strict=True):
                np.copyto(rows, pq[top], casting="unsafe")  # int8 -> float32 into scratch
                zl = _lagged(z, p.max_lag_pts, out=lagged)
                part = rows @ zl.T  # (k, 2L+1)
                part *= pa[top, None]
                part += pb[top, None] * zl.sum(axis=1)[None, :]
                fine += part
            if len(parts) > 1:
                fine /= len(parts)
            best = fine.argmax(axis=1)
            refined = fine[np.arange(k), best]
            # The screen ranked these below every refined reference: keep that order.
            np.minimum(sim, refined.min(), out=sim)
            sim[top] = refined
            lag[top] = best - p.max_lag_pts
            zero = fine[:, p.max_lag_pts]
            np.minimum(sim0, zero.min(), out=sim0)
            sim0[top] = zero
        return sim.astype(np.float32, copy=False), lag, sim0.astype(np.float32, copy=False)

    def embedding_similarities(self, embedding: NDArray[np.floating]) -> NDArray[np.float32]:
        """Cosine similarity of an L2-normalised embedding with every reference's."""
        emb = self._d.emb
        if emb is None:
            raise LibraryError("this library holds no embeddings")
        e = np.asarray(embedding, np.float32).reshape(-1)
        if e.shape[0] != emb.shape[1]:
            raise LibraryError(f"embedding has {e.shape[0]} dims, the library {emb.shape[1]}")
        return emb @ (e / max(float(np.linalg.norm(e)), 1e-12))

    def per_class(self, sim: NDArray[np.floating], n_classes: int | None = None) -> NDArray[np.float32]:
        """Best similarity of each class (-inf for classes without a reference)."""
        d = self._d
        out = np.full(n_classes or len(self.minerals), -np.inf, np.float32)
        if len(self):
            out[d.present] = np.maximum.reduceat(np.asarray(sim)[d.order], d.starts)
        return out

    def class_rows(self, c: int) -> NDArray[np.int64]:
        """Rows of class c's references (empty if it has none), without a pass over the library."""
        d = self._d
        i = int(np.searchsorted(d.present, c))
        if i >= d.present.size or d.present[i] != c:
            return d.order[:0]
        end = d.starts[i + 1] if i + 1 < d.starts.size else len(self)
        return d.order[d.starts[i] : end]

    def best_reference(self, c: int, sim: NDArray[np.floating]) -> int:
        """Row of class c's most similar reference."""
        rows = self.class_rows(c)
        if rows.size == 0:
            raise LibraryError(f"class {c} has no reference")
        return int(rows[np.argmax(np.asarray(sim)[rows])])

    def match(self, sim: NDArray[np.floating], lag: NDArray[np.integer] | None = None) -> Match:
        i = int(np.argmax(sim))
        return Match(
            i,
            self.minerals[int(self.class_idx[i])],
            self.rruff_ids[i],
            round(float(sim[i]), 4),
            int(lag[i]) if lag is not None else 0,
        )

    # -- composition -----------------------------------------------------------------------
    def extended(self, other: ReferenceLibrary) -> ReferenceLibrary:
        """This library plus `other`'s references (mineral names merged by name, new names last)."""
        if other.grid_n != self.grid_n:
            raise LibraryError(f"added library grid {other.grid_n} != {self.grid_n}")
        names = list(self.minerals)
        index = {m: i for i, m in enumerate(names)}
        for m in other.minerals:
            if m not in index:
                index[m] = len(names)
                names.append(m)
        remap = np.array([index[m] for m in other.minerals], np.int32)
        eq = es = None
        if self.embedding_q is not None and other.embedding_q is not None:
            eq = np.concatenate([self.embedding_q, other.embedding_q])
            es = np.concatenate([self.embedding_scale, other.embedding_scale]).astype(np.float32)  # type: ignore[list-item]
        elif len(self) == 0 or len(other) == 0:  # an empty side has nothing to embed
            src = other if len(self) == 0 else self
            eq, es = src.embedding_q, src.embedding_scale
        return ReferenceLibrary(
            tuple(names),
            np.concatenate([self.class_idx, remap[other.class_idx]]).astype(np.int32),
            self.rruff_ids + other.rruff_ids,
            np.concatenate([self.laser_nm, other.laser_nm]).astype(np.int32),
            np.concatenate([self.spectra_q, other.spectra_q]),
            np.concatenate([self.scale, other.scale]).astype(np.float32),
            np.concatenate([self.offset, other.offset]).astype(np.float32),
            eq,
            es,
            self.params,
        )

    def without(self, mineral: str) -> ReferenceLibrary:
        if mineral not in self.minerals:
            raise LibraryError(f"no references for {mineral!r} in the library")
        keep = np.flatnonzero(self.class_idx != self.minerals.index(mineral))
        return self.rows(keep)

    def rows(self, keep: NDArray[np.integer]) -> ReferenceLibrary:
        """The sub-library of the given rows (same mineral list)."""
        keep = np.asarray(keep, np.int64)
        return ReferenceLibrary(
            self.minerals,
            self.class_idx[keep],
            tuple(self.rruff_ids[i] for i in keep),
            self.laser_nm[keep],
            np.ascontiguousarray(self.spectra_q[keep]),
            self.scale[keep],
            self.offset[keep],
            None if self.embedding_q is None else self.embedding_q[keep],
            None if self.embedding_scale is None else self.embedding_scale[keep],
            self.params,
        )


def build_library(
    minerals: tuple[str, ...],
    class_idx: NDArray[np.integer],
    rruff_ids: list[str] | tuple[str, ...],
    laser_nm: NDArray[np.integer],
    spectra: NDArray[np.floating],
    embedding: NDArray[np.floating] | None = None,
    params: SearchParams | None = None,
) -> ReferenceLibrary:
    """A library from float spectra (quantised to int8 per row) and optional embeddings."""
    x = np.asarray(spectra, np.float32)
    if x.ndim != 2 or x.shape[0] != len(rruff_ids):
        raise LibraryError(f"library arrays disagree: {x.shape} spectra, {len(rruff_ids)} ids")
    q, scale, offset = quantize_rows(x)
    eq = es = None
    if embedding is not None:
        eq, es = quantize_embedding(embedding)
    return ReferenceLibrary(
        tuple(minerals),
        np.asarray(class_idx, np.int32),
        tuple(str(r) for r in rruff_ids),
        np.asarray(laser_nm, np.int32),
        q,
        scale,
        offset,
        eq,
        es,
        params or SearchParams(),
    )


# -- files ---------------------------------------------------------------------------------
def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_library(lib: ReferenceLibrary, directory: str | Path, *, model_sha256: str | None = None) -> dict[str, str]:
    """Write library.npz (uncompressed, so it can be mapped) + library.json; {file name: SHA-256}."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, NDArray[np.generic]] = {
        "spectra_q": np.ascontiguousarray(lib.spectra_q),
        "scale": lib.scale,
        "offset": lib.offset,
        "class_idx": lib.class_idx,
        "laser_nm": lib.laser_nm,
    }
    if lib.embedding_q is not None and lib.embedding_scale is not None:
        arrays["embedding_q"] = lib.embedding_q
        arrays["embedding_scale"] = lib.embedding_scale
    # Written to a temp name and renamed: a reader never sees half a file.
    tmp = d / f".{NPZ_NAME}.tmp"
    with tmp.open("wb") as fh:
        np.savez(fh, **arrays)
    tmp.replace(d / NPZ_NAME)
    meta = {
        "format": LIBRARY_FORMAT,
        "grid_n": lib.grid_n,
        "n_references": len(lib),
        "minerals": list(lib.minerals),
        "rruff_ids": list(lib.rruff_ids),
        "npz_sha256": _sha256_file(d / NPZ_NAME),
        "model_sha256": model_sha256,  # the bundle whose preprocessing/embedding made it (added libraries)
    }
    text = json.dumps(meta, indent=1).encode()
    tmpj = d / f".{JSON_NAME}.tmp"
    tmpj.write_bytes(text)
    tmpj.replace(d / JSON_NAME)
    return {NPZ_NAME: meta["npz_sha256"], JSON_NAME: hashlib.sha256(text).hexdigest()}


def _mapped_member(path: Path, zf: zipfile.ZipFile, name: str) -> NDArray[np.generic] | None:
    """A stored (uncompressed) .npy member of an npz as a read-only memory map, else None."""
    try:
        info = zf.getinfo(name + ".npy")
    except KeyError:
        return None
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with path.open("rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise LibraryError(f"{path}: member {name} has no local header")
        n_name, n_extra = struct.unpack("<HH", local[26:30])
        fh.seek(info.header_offset + 30 + n_name + n_extra)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        start = fh.tell()
    if dtype.hasobject:
        raise LibraryError(f"{path}: member {name} holds objects")
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=start, shape=shape, order="F" if fortran else "C")


def load_library(
    directory: str | Path,
    *,
    grid_n: int | None = None,
    model_sha256: str | None = None,
    mmap: bool = True,
    params: SearchParams | None = None,
) -> ReferenceLibrary:
    """Read and check a library directory; LibraryError (with the reason) if it is not sound.
    `params`: how it is searched (the bundle's correlation view); default SearchParams()."""
    d = Path(directory)
    jp, npath = d / JSON_NAME, d / NPZ_NAME
    if not jp.is_file() or not npath.is_file():
        raise LibraryError(f"{d}: not a reference library (needs {JSON_NAME} and {NPZ_NAME})")
    try:
        meta = json.loads(jp.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LibraryError(f"{jp}: unreadable ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") not in READABLE_FORMATS:
        raise LibraryError(f"{jp}: format is not {LIBRARY_FORMAT!r}; not a Raman Edge library")
    if _sha256_file(npath) != meta.get("npz_sha256"):
        raise LibraryError(f"{npath}: SHA-256 does not match {JSON_NAME}; the library is damaged")
    if grid_n is not None and meta.get("grid_n") != grid_n:
        raise LibraryError(f"{d}: library grid has {meta.get('grid_n')} points, the model {grid_n}; foreign library")
    if model_sha256 is not None and meta.get("model_sha256") not in (None, model_sha256):
        raise LibraryError(
            f"{d}: made with model {str(meta.get('model_sha256'))[:12]}..., not this bundle's "
            f"{model_sha256[:12]}...; foreign library (re-add its references with this model)"
        )
    try:
        if meta["format"] == "raman-edge-library/1":
            return _load_v1(npath, meta, params)
        with zipfile.ZipFile(npath) as zf:
            q = _mapped_member(npath, zf, "spectra_q") if mmap else None
        with np.load(npath, allow_pickle=False) as z:
            small = {k: z[k] for k in z.files if k != "spectra_q" or q is None}
        if q is None:
            q = small.pop("spectra_q")
        return ReferenceLibrary(
            tuple(meta["minerals"]),
            small["class_idx"].astype(np.int32),
            tuple(meta["rruff_ids"]),
            small["laser_nm"].astype(np.int32),
            q.astype(np.int8, copy=False),
            small["scale"].astype(np.float32),
            small["offset"].astype(np.float32),
            small.get("embedding_q"),
            None if small.get("embedding_scale") is None else small["embedding_scale"].astype(np.float32),
            params or SearchParams(),
        )
    except (KeyError, ValueError, TypeError, OSError, zipfile.BadZipFile) as err:
        raise LibraryError(f"{d}: malformed library ({err})") from err


def _load_v1(npath: Path, meta: dict, params: SearchParams | None = None) -> ReferenceLibrary:  # type: ignore[type-arg]
    """Format 1 (float16 spectra, compressed npz): quantised on load."""
    with np.load(io.BytesIO(npath.read_bytes()), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return build_library(
        tuple(meta["minerals"]),
        arrays["class_idx"],
        tuple(meta["rruff_ids"]),
        arrays["laser_nm"],
        arrays["spectra"].astype(np.float32),
        arrays.get("embedding"),
        params,
    )
