"""The quality gate of edge.pipeline with the shipped bundle: every reason, and the limits."""

from __future__ import annotations

import numpy as np
import pytest

from edge.bundle import Bundle, load_bundle
from edge.config import load_config
from edge.errors import ConfigError
from edge.pipeline import Analyzer, QualityLimits

SHIFT_CM1 = np.linspace(100.0, 1900.0, 1024)  # like the emulator's 785 nm, 1,024-pixel device


def quartz_counts(
    seed: int = 0, *, signal: float = 20000.0, background: float = 3000.0, noise: bool = True
) -> np.ndarray:
    """Raw counts of a quartz-like spectrum (bands at 128, 206, 464 cm-1), with shot noise."""
    rng = np.random.default_rng(seed)
    y = np.zeros_like(SHIFT_CM1)
    for centre, height, width in ((128.0, 0.3, 5.0), (206.0, 0.35, 8.0), (464.0, 1.0, 5.0)):
        y += height * np.exp(-0.5 * ((SHIFT_CM1 - centre) / width) ** 2)
    expected = background * (1.0 + SHIFT_CM1 / 3000.0) + signal * y
    return rng.poisson(expected).astype(np.float64) if noise else np.round(expected)


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load_bundle()


def with_spikes(counts: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """n single-pixel cosmic rays, away from the quartz bands."""
    rng = np.random.default_rng(seed)
    out = counts.copy()
    candidates = np.flatnonzero((SHIFT_CM1 > 600) & (SHIFT_CM1 < 1800))
    out[rng.choice(candidates, size=n, replace=False)] += 30000.0
    return out


def test_clean_spectrum_is_classified(bundle: Bundle) -> None:
    a = Analyzer(bundle).analyze_counts(quartz_counts(), SHIFT_CM1)
    assert a.status == "ok", a.reason
    assert a.n_spikes == 0
    # Runners-up at p = 0 are ties among hundreds of classes, not candidates: never listed.
    assert 1 <= len(a.top) <= 3 and all(p > 0 for _, p in a.top[1:]), a.top


def test_cosmic_rays_are_removed_and_only_many_of_them_reject(bundle: Bundle) -> None:
    spiked = with_spikes(quartz_counts(), 20)
    a = Analyzer(bundle).analyze_counts(spiked, SHIFT_CM1)
    assert a.status == "ok", a.reason  # 20 replaced pixels is under the default limit (50)
    assert a.n_spikes == 20
    strict = Analyzer(bundle, limits=QualityLimits(max_spikes=10)).analyze_counts(spiked, SHIFT_CM1)
    assert strict.status == "rejected" and strict.reason is not None
    assert strict.reason.startswith("cosmic_rays: 20 spike pixels (limit 10)")


def test_each_rejection_reason(bundle: Bundle) -> None:
    an = Analyzer(bundle)
    counts = quartz_counts()

    def reason(c: np.ndarray, saturated_flag: bool = False) -> str:
        a = an.analyze_counts(c, SHIFT_CM1, saturated_flag=saturated_flag)
        assert a.status == "rejected" and a.reason is not None
        return a.reason

    assert reason(counts[:-1]).startswith("wrong_length: spectrum has 1023 pixels")
    sat = counts.copy()
    sat[300] = 65535
    assert reason(sat).startswith("saturated: 1 pixels")
    assert reason(counts, saturated_flag=True).startswith("saturated")
    nan = counts.copy()
    nan[10] = np.nan
    assert reason(nan).startswith("invalid_spectrum")
    assert reason(quartz_counts(signal=15.0)).startswith("low_snr")
    # Noiseless, so that only the background/band ratio (~360) is out of bounds.
    assert reason(quartz_counts(signal=50.0, background=30000.0, noise=False)).startswith("fluorescence")
    narrow = Analyzer(bundle).analyze_corrected(np.linspace(150.0, 300.0, 200), np.ones(200))
    assert narrow.status == "rejected" and narrow.reason is not None and narrow.reason.startswith("low_coverage")


def test_limits_come_from_the_configuration() -> None:
    cfg = load_config(env={"RAMAN_EDGE_MAX_SPIKES": "7", "RAMAN_EDGE_MIN_SNR": "3.5"})
    assert cfg.quality_limits == QualityLimits(max_spikes=7, min_snr=3.5)
    with pytest.raises(ConfigError, match="min_coverage must be within 0..1"):
        load_config(env={"RAMAN_EDGE_MIN_COVERAGE": "1.5"})
