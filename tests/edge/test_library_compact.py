"""Compact library storage: int8 rows with per-row scale, memory-mapped, same search answers."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge.corr_view import standardize
from edge.library import (
    LibraryError,
    _blocks,
    _lagged,
    build_library,
    load_library,
    quantize_rows,
    save_library,
)


def _spectra(n: int = 60, g: int = 400, seed: int = 0) -> np.ndarray:
    """Synthetic max-normalised band spectra (a few Lorentzians on a small baseline)."""
    rng = np.random.default_rng(seed)
    x = np.arange(g, dtype=np.float32)
    out = np.empty((n, g), np.float32)
    for i in range(n):
        s = np.zeros(g, np.float32)
        for _ in range(rng.integers(2, 6)):
            c, w, a = rng.uniform(20, g - 20), rng.uniform(2, 8), rng.uniform(0.2, 1)
            s += a / (1 + ((x - c) / w) ** 2)
        s += rng.normal(0, 0.01, g).astype(np.float32) - 0.02
        out[i] = s / s.max()
    return out


def _exact_similarities(X: np.ndarray, x: np.ndarray, max_lag: int) -> np.ndarray:
    """Float64 reference: best Pearson correlation over lags (query moved, zero filled)."""
    z = standardize(x).astype(np.float64)
    R = standardize(X).astype(np.float64)
    return (R @ _lagged(z.astype(np.float32), max_lag).astype(np.float64).T).max(axis=1)


def test_quantize_rows_round_trips_within_one_step() -> None:
    X = _spectra()
    q, scale, offset = quantize_rows(X)
    assert q.dtype == np.int8 and scale.dtype == np.float32
    back = offset[:, None] + scale[:, None] * q.astype(np.float32)
    assert np.all(np.abs(back - X) <= scale[:, None] * 0.5 + 1e-6)
    flat = quantize_rows(np.ones((2, 10)))  # constant rows: scale 0, exact
    assert np.all(flat[1] == 0) and np.allclose(flat[2], 1.0)


def test_int8_search_equals_float_correlation() -> None:
    X = _spectra()
    lib = build_library(("a", "b", "c"), np.arange(60) % 3, [f"R{i}" for i in range(60)], np.zeros(60), X)
    for i in (0, 7, 33):
        x = np.roll(X[i], 5) + np.random.default_rng(i).normal(0, 0.02, X.shape[1]).astype(np.float32)
        sim, lag = lib.similarities(x)
        exact = _exact_similarities(X, x, lib.params.max_lag_pts)
        k = lib.params.n_refine
        top = np.argsort(-sim)[: k // 4]  # the best-screened: re-scored at full resolution
        np.testing.assert_allclose(sim[top], exact[top], atol=3e-3)  # int8 rounding only
        assert int(np.argmax(sim)) == i and lag[i] == -5


def test_noisy_query_is_matched_on_full_resolution_similarities() -> None:
    """Block averaging smooths noise away, so a noisy query's coarse-screen similarities read
    high; the winner (and everything above the refined set's floor) must be a re-scored one."""
    X = _spectra(n=300, g=400, seed=3)
    lib = build_library(("a", "b", "c"), np.arange(300) % 3, [f"R{i}" for i in range(300)], np.zeros(300), X)
    rng = np.random.default_rng(5)
    for i in range(0, 300, 10):
        x = X[i] + rng.normal(0, 0.6, X.shape[1]).astype(np.float32)
        sim, _ = lib.similarities(x)
        exact = _exact_similarities(X, x, lib.params.max_lag_pts)
        order = np.argsort(-sim)[: lib.params.n_refine // 2]
        np.testing.assert_allclose(sim[order], exact[order], atol=3e-3)


def test_saved_library_is_uncompressed_mapped_and_small(tmp_path: Path) -> None:
    X = _spectra(n=200, g=1360)
    e = np.random.default_rng(1).normal(size=(200, 32))
    lib = build_library(("a", "b"), np.arange(200) % 2, [f"R{i}" for i in range(200)], np.zeros(200), X, e)
    hashes = save_library(lib, tmp_path)
    npz = tmp_path / "library.npz"
    with zipfile.ZipFile(npz) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    # 1 byte per grid point + small per-row arrays
    assert npz.stat().st_size < 200 * 1360 + 200 * 32 + 20_000
    back = load_library(tmp_path, grid_n=1360)
    assert isinstance(back.spectra_q, np.memmap) and not back.spectra_q.flags.writeable
    np.testing.assert_array_equal(np.asarray(back.spectra_q), lib.spectra_q)
    np.testing.assert_array_equal(back.similarities(X[3])[0], lib.similarities(X[3])[0])
    assert back.has_embedding
    np.testing.assert_allclose(back.embedding_similarities(e[4])[4], 1.0, atol=1e-2)
    assert json.loads((tmp_path / "library.json").read_text())["format"] == "raman-edge-library/2"
    assert set(hashes) == {"library.npz", "library.json"}
    # heap held by the loaded library: the coarse screen (grid/8 columns) and row constants,
    # not a float copy of the spectra
    nb = back.nbytes()
    assert nb["coarse"] <= 200 * 1360 // 8 * 4 and nb["row_constants"] < 10_000
    # not mapped on request: same answers
    copy = load_library(tmp_path, mmap=False)
    assert not isinstance(copy.spectra_q, np.memmap)
    np.testing.assert_array_equal(copy.similarities(X[3])[0], lib.similarities(X[3])[0])


def test_version_1_library_still_loads(tmp_path: Path) -> None:
    X = _spectra(n=12, g=400)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        spectra=X.astype(np.float16),
        class_idx=np.arange(12, dtype=np.int32) % 2,
        laser_nm=np.zeros(12, np.int32),
    )
    (tmp_path / "library.npz").write_bytes(buf.getvalue())
    import hashlib

    meta = {
        "format": "raman-edge-library/1",
        "grid_n": 400,
        "n_references": 12,
        "minerals": ["a", "b"],
        "rruff_ids": [f"R{i}" for i in range(12)],
        "npz_sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
        "model_sha256": None,
    }
    (tmp_path / "library.json").write_text(json.dumps(meta))
    lib = load_library(tmp_path, grid_n=400)
    assert len(lib) == 12 and int(np.argmax(lib.similarities(X[5])[0])) == 5


def test_malformed_members_are_refused(tmp_path: Path) -> None:
    X = _spectra(n=4, g=400)
    lib = build_library(("a",), np.zeros(4), ["R0", "R1", "R2", "R3"], np.zeros(4), X)
    save_library(lib, tmp_path)
    # a consistent hash over an npz that lacks the row constants
    import hashlib

    buf = io.BytesIO()
    np.savez(buf, spectra_q=lib.spectra_q, class_idx=lib.class_idx, laser_nm=lib.laser_nm)
    (tmp_path / "library.npz").write_bytes(buf.getvalue())
    meta = json.loads((tmp_path / "library.json").read_text())
    meta["npz_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (tmp_path / "library.json").write_text(json.dumps(meta))
    with pytest.raises(LibraryError, match="malformed"):
        load_library(tmp_path)


def test_search_reuses_its_scratch_buffers() -> None:
    X = _spectra(n=100, g=400)
    lib = build_library(("a",), np.zeros(100), [f"R{i}" for i in range(100)], np.zeros(100), X)
    lib.similarities(X[0])
    rows, lagged = lib._buffers(lib.params.n_refine)
    lib.similarities(X[1])
    rows2, lagged2 = lib._buffers(lib.params.n_refine)
    assert rows2.base is rows.base and lagged2 is lagged
    assert _blocks(X[:2], 8).shape == (2, 50)
