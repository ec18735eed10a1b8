"""Reference library: preprocessed spectra with provenance, and fast search over them.

Pure numpy (no TensorFlow, no model). One library = one `library.npz` (arrays) plus one
`library.json` (metadata, format tag, SHA-256 of the npz). docs/bundle.md describes the files:

    library.npz   spectra   float16 (n, grid_n)  preprocessed on the bundle's grid
                  class_idx int32   (n,)         index into `minerals` (json)
                  laser_nm  int32   (n,)         0 where unknown
                  embedding float16 (n, d)       optional, L2-normalised model embedding
    library.json  format, grid_n, minerals, rruff_ids, npz_sha256

Search is shift tolerant: a Raman-shift axis error of 10-20 cm-1 collapses zero-lag
correlation (identification-notes.md: 0.81 -> 0.16), so the similarity of a spectrum to a
reference is the best Pearson correlation over a window of lags. To stay well under a
millisecond for thousands of references it runs in two stages: a coarse screen on a
block-averaged grid (all references, a few coarse lags) and a fine re-score at full
resolution, 1 cm-1 lags, for the best-screened references only.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge.errors import BundleError

LIBRARY_FORMAT = "raman-edge-library/1"
NPZ_NAME = "library.npz"
JSON_NAME = "library.json"


class LibraryError(BundleError):
    """A library file that is missing, damaged or does not belong to this bundle."""


@dataclass(frozen=True)
class SearchParams:
    """Lag window and screening sizes (grid points of the model grid, 1 cm-1 each today)."""

    max_lag_pts: int = 20  # +-20 cm-1: the shift errors the CNN also has to tolerate
    coarse_block_pts: int = 8  # coarse grid = 8 cm-1 bins
    n_refine: int = 48  # references re-scored at full resolution


def _standardize(x: NDArray[np.floating]) -> NDArray[np.float32]:
    z = np.asarray(x, np.float32)
    z = z - z.mean(axis=-1, keepdims=True)
    n = np.linalg.norm(z, axis=-1, keepdims=True)
    return (z / np.where(n == 0, 1.0, n)).astype(np.float32)


def _blocks(x: NDArray[np.float32], block: int) -> NDArray[np.float32]:
    n = x.shape[-1] // block * block
    return x[..., :n].reshape(*x.shape[:-1], n // block, block).mean(axis=-1)


def _lagged(z: NDArray[np.float32], max_lag: int, step: int = 1) -> NDArray[np.float32]:
    """Rows = the standardized query moved by each lag (zero filled; not re-standardized:
    the few points lost at an edge change the norm by well under 1 %)."""
    lags = range(-max_lag, max_lag + 1, step)
    out = np.zeros((len(lags), z.size), np.float32)
    for i, lag in enumerate(lags):
        if lag >= 0:
            out[i, lag:] = z[: z.size - lag]
        else:
            out[i, :lag] = z[-lag:]
    return out


@dataclass(frozen=True)
class Match:
    index: int  # row in the library
    mineral: str
    rruff_id: str
    similarity: float  # best correlation over the lag window
    lag_pts: int  # reference best aligned when the query is moved by this many points


@dataclass(frozen=True)
class ReferenceLibrary:
    minerals: tuple[str, ...]  # class names; class_idx indexes this
    class_idx: NDArray[np.int32]
    rruff_ids: tuple[str, ...]
    laser_nm: NDArray[np.int32]
    spectra: NDArray[np.float16]  # (n, grid_n)
    embedding: NDArray[np.float16] | None = None
    params: SearchParams = SearchParams()
    # Derived search arrays (float32, standardized), built once in __post_init__.
    _z: NDArray[np.float32] = field(init=False, repr=False, compare=False)
    _zc: NDArray[np.float32] = field(init=False, repr=False, compare=False)
    _emb: NDArray[np.float32] | None = field(init=False, repr=False, compare=False)
    _order: NDArray[np.int64] = field(init=False, repr=False, compare=False)
    _starts: NDArray[np.int64] = field(init=False, repr=False, compare=False)
    _present: NDArray[np.int64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.rruff_ids)
        if self.spectra.ndim != 2 or self.spectra.shape[0] != n or self.class_idx.shape != (n,):
            raise LibraryError(f"library arrays disagree: {self.spectra.shape} spectra, {n} ids")
        if n and (self.class_idx.min() < 0 or self.class_idx.max() >= len(self.minerals)):
            raise LibraryError("library class index outside its mineral list")
        if self.embedding is not None and self.embedding.shape[0] != n:
            raise LibraryError(f"library has {self.embedding.shape[0]} embeddings for {n} spectra")
        z = _standardize(self.spectra)
        object.__setattr__(self, "_z", z)
        object.__setattr__(self, "_zc", _standardize(_blocks(z, self.params.coarse_block_pts)))
        emb = None if self.embedding is None else np.asarray(self.embedding, np.float32)
        object.__setattr__(self, "_emb", emb)
        order = np.argsort(self.class_idx, kind="stable")
        cs = self.class_idx[order]
        starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]]) if n else np.zeros(0, np.int64)
        object.__setattr__(self, "_order", order)
        object.__setattr__(self, "_starts", starts)
        object.__setattr__(self, "_present", cs[starts].astype(np.int64) if n else starts)

    def __len__(self) -> int:
        return len(self.rruff_ids)

    @property
    def grid_n(self) -> int:
        return int(self.spectra.shape[1])

    @property
    def has_embedding(self) -> bool:
        return self._emb is not None

    # -- search ----------------------------------------------------------------------------
    def similarities(self, values: NDArray[np.floating]) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
        """Shift-tolerant correlation of one preprocessed spectrum with every reference.

        Returns (similarity, lag) per reference; references outside the refined set carry
        their coarse-screen similarity (a lower-resolution estimate of the same quantity)."""
        x = np.asarray(values, np.float32)
        if x.shape != (self.grid_n,):
            raise LibraryError(f"spectrum has {x.shape} points, the library grid {self.grid_n}")
        p = self.params
        z = _standardize(x)
        zc = _standardize(_blocks(z, p.coarse_block_pts))
        coarse_lag = max(1, -(-p.max_lag_pts // p.coarse_block_pts))
        sim = (self._zc @ _lagged(zc, coarse_lag).T).max(axis=1)
        lag = np.zeros(len(self), np.int32)
        k = min(p.n_refine, len(self))
        if k:
            top = np.argpartition(-sim, k - 1)[:k]
            fine = self._z[top] @ _lagged(z, p.max_lag_pts).T  # (k, 2L+1)
            best = fine.argmax(axis=1)
            sim[top] = fine[np.arange(k), best]
            lag[top] = best - p.max_lag_pts
        return sim.astype(np.float32), lag

    def embedding_similarities(self, embedding: NDArray[np.floating]) -> NDArray[np.float32]:
        """Cosine similarity of an L2-normalised embedding with every reference's."""
        if self._emb is None:
            raise LibraryError("this library holds no embeddings")
        e = np.asarray(embedding, np.float32).reshape(-1)
        if e.shape[0] != self._emb.shape[1]:
            raise LibraryError(f"embedding has {e.shape[0]} dims, the library {self._emb.shape[1]}")
        return self._emb @ (e / max(float(np.linalg.norm(e)), 1e-12))

    def per_class(self, sim: NDArray[np.floating], n_classes: int | None = None) -> NDArray[np.float32]:
        """Best similarity of each class (-inf for classes without a reference)."""
        out = np.full(n_classes or len(self.minerals), -np.inf, np.float32)
        if len(self):
            out[self._present] = np.maximum.reduceat(np.asarray(sim)[self._order], self._starts)
        return out

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
        emb = None
        if self.embedding is not None and other.embedding is not None:
            emb = np.concatenate([self.embedding, other.embedding]).astype(np.float16)
        return ReferenceLibrary(
            tuple(names),
            np.concatenate([self.class_idx, remap[other.class_idx]]).astype(np.int32),
            self.rruff_ids + other.rruff_ids,
            np.concatenate([self.laser_nm, other.laser_nm]).astype(np.int32),
            np.concatenate([self.spectra, other.spectra]).astype(np.float16),
            emb,
            self.params,
        )

    def without(self, mineral: str) -> ReferenceLibrary:
        if mineral not in self.minerals:
            raise LibraryError(f"no references for {mineral!r} in the library")
        keep = np.flatnonzero(self.class_idx != self.minerals.index(mineral))
        return ReferenceLibrary(
            self.minerals,
            self.class_idx[keep],
            tuple(self.rruff_ids[i] for i in keep),
            self.laser_nm[keep],
            self.spectra[keep],
            None if self.embedding is None else self.embedding[keep],
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
    return ReferenceLibrary(
        tuple(minerals),
        np.asarray(class_idx, np.int32),
        tuple(str(r) for r in rruff_ids),
        np.asarray(laser_nm, np.int32),
        np.asarray(spectra, np.float16),
        None if embedding is None else np.asarray(embedding, np.float16),
        params or SearchParams(),
    )


# -- files ---------------------------------------------------------------------------------
def save_library(lib: ReferenceLibrary, directory: str | Path, *, model_sha256: str | None = None) -> dict[str, str]:
    """Write library.npz + library.json into `directory`; returns {file name: SHA-256}."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    arrays = {"spectra": lib.spectra, "class_idx": lib.class_idx, "laser_nm": lib.laser_nm}
    if lib.embedding is not None:
        arrays["embedding"] = lib.embedding
    np.savez_compressed(buf, **arrays)
    data = buf.getvalue()
    (d / NPZ_NAME).write_bytes(data)
    meta = {
        "format": LIBRARY_FORMAT,
        "grid_n": lib.grid_n,
        "n_references": len(lib),
        "minerals": list(lib.minerals),
        "rruff_ids": list(lib.rruff_ids),
        "npz_sha256": hashlib.sha256(data).hexdigest(),
        "model_sha256": model_sha256,  # the bundle whose preprocessing/embedding made it (added libraries)
    }
    text = json.dumps(meta, indent=1).encode()
    (d / JSON_NAME).write_bytes(text)
    return {NPZ_NAME: meta["npz_sha256"], JSON_NAME: hashlib.sha256(text).hexdigest()}


def load_library(
    directory: str | Path, *, grid_n: int | None = None, model_sha256: str | None = None
) -> ReferenceLibrary:
    """Read and check a library directory; LibraryError (with the reason) if it is not sound."""
    d = Path(directory)
    jp, npath = d / JSON_NAME, d / NPZ_NAME
    if not jp.is_file() or not npath.is_file():
        raise LibraryError(f"{d}: not a reference library (needs {JSON_NAME} and {NPZ_NAME})")
    try:
        meta = json.loads(jp.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LibraryError(f"{jp}: unreadable ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != LIBRARY_FORMAT:
        raise LibraryError(f"{jp}: format is not {LIBRARY_FORMAT!r}; not a Raman Edge library")
    data = npath.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("npz_sha256"):
        raise LibraryError(f"{npath}: SHA-256 does not match {JSON_NAME}; the library is damaged")
    if grid_n is not None and meta.get("grid_n") != grid_n:
        raise LibraryError(f"{d}: library grid has {meta.get('grid_n')} points, the model {grid_n}; foreign library")
    if model_sha256 is not None and meta.get("model_sha256") not in (None, model_sha256):
        raise LibraryError(
            f"{d}: made with model {str(meta.get('model_sha256'))[:12]}..., not this bundle's "
            f"{model_sha256[:12]}...; foreign library (re-add its references with this model)"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return ReferenceLibrary(
            tuple(meta["minerals"]),
            arrays["class_idx"].astype(np.int32),
            tuple(meta["rruff_ids"]),
            arrays["laser_nm"].astype(np.int32),
            arrays["spectra"].astype(np.float16),
            arrays.get("embedding"),
        )
    except (KeyError, ValueError, TypeError) as err:
        raise LibraryError(f"{d}: malformed library ({err})") from err
