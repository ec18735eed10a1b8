"""Reference library: shift-tolerant search, per-class reduction, files refused when damaged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.library import LibraryError, build_library, load_library, save_library

MINERALS = ("Quartz", "Calcite", "Gypsum", "Forsterite", "Diopside", "Rutile", "Anhydrite", "Dolomite")


@pytest.fixture(scope="module")
def real():  # type: ignore[no-untyped-def]
    """Preprocessed RRUFF spectra of 8 minerals (the shared copy), split by specimen."""
    from tests.trainer.conftest import require_rruff
    from trainer.dataset import from_spectra
    from trainer.rruff import load_rruff, select

    spectra, _ = load_rruff(require_rruff(), minerals=set(MINERALS))
    ds = from_spectra(select(spectra, "paper")[0])
    ids = np.unique(ds.groups)
    test_ids = set(ids[::4])
    test = np.array([g in test_ids for g in ds.groups])
    ref = np.flatnonzero(~test)
    lib = build_library(ds.labels, ds.y[ref], list(ds.groups[ref]), ds.laser_nm[ref], ds.X[ref])
    return lib, ds.X[test], ds.y[test]


def _accuracy(lib, X, y, shift_pts: int = 0) -> float:  # type: ignore[no-untyped-def]
    hits = 0
    for x, c in zip(X, y, strict=True):
        x = np.roll(x, shift_pts)
        s, _ = lib.similarities(x)
        hits += int(np.argmax(lib.per_class(s)) == c)
    return hits / len(y)


def test_search_is_accurate_and_tolerates_a_shift_axis_error(real) -> None:  # type: ignore[no-untyped-def]
    lib, X, y = real
    clean = _accuracy(lib, X, y)
    assert clean >= 0.85
    # 12 cm-1 off: zero-lag correlation collapses here; the lag window must not.
    assert _accuracy(lib, X, y, 12) >= clean - 0.05
    assert _accuracy(lib, X, y, -12) >= clean - 0.05


def test_match_reports_the_reference_and_the_lag(real) -> None:  # type: ignore[no-untyped-def]
    lib, _X, _y = real
    x = lib.spectra[3].astype(np.float32)
    s, lag = lib.similarities(np.roll(x, 7))
    m = lib.match(s, lag)
    assert m.rruff_id == lib.rruff_ids[3] or lib.minerals[lib.class_idx[3]] == m.mineral
    assert m.similarity > 0.95 and m.lag_pts == -7


def test_search_reports_the_zero_lag_similarity_of_the_refined_references(real) -> None:  # type: ignore[no-untyped-def]
    lib, X, _y = real
    x = X[0]
    sim, lag, sim0 = lib.search(x)
    np.testing.assert_array_equal((sim, lag), lib.similarities(x))
    assert np.all(sim0 <= sim + 1e-6)  # zero lag is one of the lags searched
    # Against plain Pearson of the (int8) references at zero lag, for the best-ranked ones.
    top = np.argsort(-sim)[:5]
    pearson = [np.corrcoef(x, lib.reference(int(i)))[0, 1] for i in top]
    np.testing.assert_allclose(sim0[top], pearson, atol=2e-3)
    # Moved by 9 points, its best reference matches at lag -9 and no longer at zero lag.
    s9, lag9, z9 = lib.search(np.roll(x, 9))
    i = int(np.argmax(s9))
    assert lag9[i] == -9 and z9[i] < s9[i] - 0.05


def test_round_trip_and_refusals(real, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lib, X, _y = real
    save_library(lib, tmp_path / "lib")
    back = load_library(tmp_path / "lib", grid_n=lib.grid_n)
    assert back.rruff_ids == lib.rruff_ids and back.minerals == lib.minerals
    np.testing.assert_array_equal(back.similarities(X[0])[0], lib.similarities(X[0])[0])
    with pytest.raises(LibraryError, match="foreign"):
        load_library(tmp_path / "lib", grid_n=lib.grid_n + 1)
    npz = tmp_path / "lib" / "library.npz"
    npz.write_bytes(npz.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(LibraryError, match="damaged"):
        load_library(tmp_path / "lib")
    meta = tmp_path / "lib" / "library.json"
    meta.write_text(json.dumps({"format": "other"}))
    with pytest.raises(LibraryError, match="not a Raman Edge library"):
        load_library(tmp_path / "lib")
    with pytest.raises(LibraryError, match="not a reference library"):
        load_library(tmp_path / "missing")


def test_extend_and_remove_by_mineral(real) -> None:  # type: ignore[no-untyped-def]
    lib, _X, _y = real
    q = lib.minerals.index("Quartz")
    only_quartz = lib.without("Calcite")
    assert "Calcite" not in {only_quartz.minerals[i] for i in only_quartz.class_idx}
    new = build_library(("Newite",), np.zeros(1), ["X1"], np.zeros(1), lib.spectra[lib.class_idx == q][:1])
    big = lib.extended(new)
    assert big.minerals[-1] == "Newite" and len(big) == len(lib) + 1
    assert np.isfinite(big.per_class(big.similarities(lib.spectra[0].astype(np.float32))[0])).all()


def test_class_rows_and_best_reference(real) -> None:  # type: ignore[no-untyped-def]
    lib, X, _y = real
    sim, _lag = lib.similarities(X[0])
    for c in range(len(lib.minerals)):
        rows = lib.class_rows(c)
        np.testing.assert_array_equal(np.sort(rows), np.flatnonzero(lib.class_idx == c))
        assert lib.best_reference(c, sim) == rows[np.argmax(sim[rows])]
    gone = lib.without("Calcite")
    assert gone.class_rows(lib.minerals.index("Calcite")).size == 0
    with pytest.raises(LibraryError):
        gone.best_reference(lib.minerals.index("Calcite"), gone.similarities(X[0])[0])


def test_embedding_search_is_cosine(real) -> None:  # type: ignore[no-untyped-def]
    lib, _X, _y = real
    rng = np.random.default_rng(0)
    e = rng.normal(size=(len(lib), 16))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    lib_e = build_library(lib.minerals, lib.class_idx, lib.rruff_ids, lib.laser_nm, lib.spectra, e)
    sims = lib_e.embedding_similarities(e[5] * 3.0)
    assert int(np.argmax(sims)) == 5 and sims[5] == pytest.approx(1.0, abs=2e-3)
    with pytest.raises(LibraryError):
        lib.embedding_similarities(e[5])


def test_sqrt_d1_view_searches_the_same_correlation_as_its_definition(real) -> None:  # type: ignore[no-untyped-def]
    from edge.corr_view import correlations
    from edge.library import SearchParams

    base, X, y = real
    lib = base.rows(np.arange(len(base)))  # same rows, default view
    v = build_library(
        base.minerals,
        base.class_idx,
        list(base.rruff_ids),
        base.laser_nm,
        base.spectra,
        params=SearchParams(view="sqrt_d1"),
    )
    x = X[0]
    sim, lag, sim0 = v.search(x)
    assert np.all(sim0 <= sim + 1e-6)
    top = np.argsort(-sim)[: v.params.n_refine]
    # The refined references' zero-lag similarity is the view's correlation (int8 rows: ~1e-3).
    np.testing.assert_allclose(sim0[top], correlations(x[None], v.spectra[top], "sqrt_d1")[0], atol=3e-3)
    # A copy moved by 9 points is found at lag -9, as with Pearson.
    s9, lag9, _ = v.search(np.roll(x, 9))
    assert lag9[int(np.argmax(s9))] == -9
    # Not the Pearson search: the similarities differ, the candidates found are of the same kind.
    assert not np.allclose(sim, lib.search(x)[0], atol=1e-3)
    assert _accuracy(v, X, y) >= 0.85 and _accuracy(v, X, y, 12) >= _accuracy(v, X, y) - 0.05
    # Its derived rows are in memory (two int8 arrays of the library's size), reported as such.
    assert v.nbytes()["view"] == 2 * v.spectra_q.nbytes
    # Composition keeps the view.
    assert v.extended(lib).params.view == "sqrt_d1" and v.rows(np.arange(3)).params.view == "sqrt_d1"


def test_a_library_loads_with_the_view_asked_for_and_refuses_an_unknown_one(real, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from edge.library import SearchParams

    lib, X, _y = real
    save_library(lib, tmp_path / "lib")
    back = load_library(tmp_path / "lib", grid_n=lib.grid_n, params=SearchParams(view="sqrt_d1"))
    assert back.params.view == "sqrt_d1" and back.search(X[0])[0].shape == (len(lib),)
    with pytest.raises(LibraryError, match="unknown correlation view"):
        SearchParams(view="log")  # type: ignore[arg-type]


@pytest.mark.parametrize(("max_lag", "step"), [(1, 1), (3, 1), (20, 1), (20, 3)])
def test_lagged_rows_are_the_query_moved_by_each_lag(max_lag: int, step: int) -> None:
    from edge.library import _lagged

    z = np.random.default_rng(max_lag).normal(size=170).astype(np.float32)
    lags = range(-max_lag, max_lag + 1, step)
    want = np.zeros((len(lags), z.size), np.float32)
    for i, lag in enumerate(lags):  # the definition: moved by `lag` points, zero filled
        if lag >= 0:
            want[i, lag:] = z[: z.size - lag]
        else:
            want[i, :lag] = z[-lag:]
    np.testing.assert_array_equal(_lagged(z, max_lag, step), want)
    buf = np.full_like(want, np.nan)
    assert _lagged(z, max_lag, step, out=buf) is buf
    np.testing.assert_array_equal(buf, want)
