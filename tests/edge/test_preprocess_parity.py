"""The edge's own arPLS and running filters against the libraries they replace.

Tolerance (documented in edge.preprocess.arpls): the banded arPLS baseline equals
pybaselines.whittaker.arpls to within 1e-6 of the spectrum's range (measured: ~4e-11; it is
the same iteration, so only rounding differs). The pybaselines comparisons skip where it is
not installed (the device env `.venv-edge`, which is the point: it left the edge runtime).

Accuracy unchanged: emulated instrument spectra of the sample tray through the whole
Analyzer, once with the edge's baseline and once with pybaselines' -> the same status and
the same top-1 for every spectrum.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from edge import preprocess as pp
from edge.bundle import load_bundle
from edge.pipeline import Analyzer
from firmware_bridge.library import load_tray
from firmware_bridge.physics import InstrumentModel, simulate_counts

HAS_PYBASELINES = importlib.util.find_spec("pybaselines") is not None
needs_pybaselines = pytest.mark.skipif(
    not HAS_PYBASELINES,
    reason="pybaselines not installed (device env: it is not an edge dependency); the parity check needs the full env",
)
TOLERANCE = 1e-6  # of the spectrum's range


def synthetic_raw(rng: np.random.Generator, n: int) -> np.ndarray:
    px = np.arange(n, dtype=np.float64)
    y = 500 + rng.uniform(500, 8000) * np.exp(-(((px - rng.uniform(0, n)) / rng.uniform(200, 900)) ** 2))
    for _ in range(int(rng.integers(1, 9))):
        fwhm = rng.uniform(2, 15)
        y += rng.uniform(50, 5000) * np.exp(-4 * np.log(2) * ((px - rng.uniform(0, n)) / fwhm) ** 2)
    return y + rng.normal(0, rng.uniform(2, 40), n)


@needs_pybaselines
@pytest.mark.parametrize("n_pixels", [1024, 1360, 2048])
@pytest.mark.parametrize("lam", [1e4, 1e5, 1e6])
def test_arpls_equals_pybaselines(n_pixels: int, lam: float) -> None:
    from pybaselines.whittaker import arpls as reference

    rng = np.random.default_rng(n_pixels + int(lam))
    system = pp.baseline_system(n_pixels, lam)
    for _ in range(10):
        y = synthetic_raw(rng, n_pixels)
        expected, _ = reference(y, lam=lam)
        got = pp.arpls(y, system)
        assert np.max(np.abs(got - expected)) <= TOLERANCE * np.ptp(y)


@needs_pybaselines
def test_arpls_early_exit_matches_pybaselines() -> None:
    # A straight line plus tiny noise: the baseline soon sits under almost every point, the
    # case where pybaselines stops early ("almost all baseline points below the data").
    import warnings

    from pybaselines.whittaker import arpls as reference

    y = np.linspace(100.0, 200.0, 512) + np.random.default_rng(3).normal(0, 1e-9, 512)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected, _ = reference(y, lam=1e5, max_iter=200, tol=1e-12)
    got = pp.arpls(y, pp.baseline_system(512, 1e5), max_iter=200, tol=1e-12)
    assert np.max(np.abs(got - expected)) <= TOLERANCE * np.ptp(y)


def test_baseline_system_is_cached_and_read_only() -> None:
    a = pp.baseline_system(1360, 1e5)
    assert pp.baseline_system(1360, 1e5) is a
    assert not a.penalty_bands.flags.writeable
    # lam * D'D, rebuilt densely: the bands are its upper diagonals.
    d = np.diff(np.eye(1360), n=2, axis=0)
    dense = 1e5 * d.T @ d
    for k in range(3):  # LAPACK lower band storage: row k holds the k-th subdiagonal
        np.testing.assert_allclose(a.penalty_bands[k, : 1360 - k], np.diag(dense, -k), rtol=1e-12)
        assert np.all(a.penalty_bands[k, 1360 - k :] == 0)


@pytest.mark.parametrize("size", [5, 7, 11])
def test_running_filters_equal_scipy_ndimage(size: int) -> None:
    from scipy.ndimage import median_filter, minimum_filter

    y = np.random.default_rng(size).normal(size=1360).cumsum()
    np.testing.assert_array_equal(pp.running_median(y, size), median_filter(y, size=size, mode="nearest"))
    np.testing.assert_array_equal(pp.running_min(y, size), minimum_filter(y, size=size, mode="nearest"))


@needs_pybaselines
def test_accuracy_unchanged_against_pybaselines_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    from pybaselines.whittaker import arpls as reference

    bundle = load_bundle()
    tray = load_tray()
    model = InstrumentModel.default(pixels=1360, integration_ms=40, fluorescence_ratio=3.0)
    shifts = pp.pixel_shifts(model.reported_calibration_nm(), model.laser_nm, model.pixels)
    rng = np.random.default_rng(0)
    frames = [(s.mineral, simulate_counts(s.shift_cm1, s.intensity, model, rng)) for s in tray]
    dark = simulate_counts(tray[0].shift_cm1, tray[0].intensity, model, rng, dark=True)

    def run() -> list[tuple[str, str | None]]:
        analyzer = Analyzer(bundle)
        out = []
        for _, counts in frames:
            a = analyzer.analyze_counts(counts, shifts, dark=dark)
            out.append((a.status, a.top[0][0] if a.top else None))
        return out

    ours = run()
    monkeypatch.setattr(pp, "arpls", lambda y, system, **kw: reference(y, lam=system.lam)[0])
    theirs = run()
    assert ours == theirs
    correct = sum(top == mineral for (_, top), (mineral, _) in zip(ours, frames, strict=True))
    assert correct >= 0.6 * len(frames), f"{correct}/{len(frames)} correct: the emulator setup is off"


def test_numpy_lapacke_and_scipy_solvers_agree() -> None:
    from edge.lapack import banded_solver

    system = pp.baseline_system(1360, 1e5)
    rng = np.random.default_rng(7)
    w = rng.uniform(0, 1, 1360)
    b = rng.normal(size=1360)
    answers = []
    for backend in ("auto", "scipy"):
        ab = np.asfortranarray(system.penalty_bands.copy())
        ab[0] += w
        x = b.copy()
        assert banded_solver(backend)(ab, x) == 0
        answers.append(x)
    np.testing.assert_allclose(answers[0], answers[1], rtol=1e-10, atol=1e-12)
    # And it is the solution of the dense system.
    dense = np.diag(system.penalty_bands[0] + w)
    for k in (1, 2):
        dense += np.diag(system.penalty_bands[k, : 1360 - k], -k) + np.diag(system.penalty_bands[k, : 1360 - k], k)
    np.testing.assert_allclose(dense @ answers[0], b, rtol=1e-6, atol=1e-6)


def test_the_edge_pipeline_imports_no_scipy_and_no_pybaselines() -> None:
    # The device footprint (issue 14): SciPy's linalg alone is ~29 MB of RSS. A bundle without
    # a reference library (the shipped one) must analyse a spectrum with neither loaded.
    code = (
        "import sys, numpy as np\n"
        "from edge.bundle import load_bundle\n"
        "from edge.pipeline import Analyzer\n"
        "a = Analyzer(load_bundle())\n"
        "x = np.linspace(100, 1900, 1360)\n"
        "y = 3000 + 20000 * np.exp(-0.5 * ((x - 464) / 5) ** 2) + np.random.default_rng(0).normal(0, 30, 1360)\n"
        "r = a.analyze_counts(y, x)\n"
        "print(r.status, sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'pybaselines')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "ok []", out


def _windows(y: np.ndarray, size: int) -> np.ndarray:
    half = size // 2
    return np.lib.stride_tricks.sliding_window_view(np.pad(y, (half, size - 1 - half), mode="edge"), size)


@pytest.mark.parametrize("size", [1, 3, 5, 7, 8, 11, 16])
def test_running_filters_equal_plain_windows_on_rruff_and_integer_counts(size: int) -> None:
    """The selection network (median of 5) and the doubling minimum against the plain
    definition (sort / min of each edge-padded window), bit for bit: real RRUFF spectra, and
    integer detector counts whose many ties a selection network could get wrong."""
    from tests.trainer.conftest import require_rruff
    from trainer.rruff import load_rruff

    spectra, _ = load_rruff(require_rruff(), minerals={"Quartz", "Calcite", "Gypsum"})
    rng = np.random.default_rng(size)
    series = [np.asarray(s.intensity, np.float64) for s in spectra[:30]]
    for _ in range(30):
        series.append(rng.poisson(rng.uniform(0.5, 50), size=int(rng.integers(16, 1400))).astype(np.float64))
    for y in series:
        w = _windows(y, size)
        if size % 2:
            np.testing.assert_array_equal(pp.running_median(y, size), np.sort(w, axis=1)[:, size // 2])
        np.testing.assert_array_equal(pp.running_min(y, size), w.min(axis=1))
