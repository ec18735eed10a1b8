"""The fast deconvnet path equals its layer-by-layer definition; find_peaks equals SciPy's."""

from __future__ import annotations

import numpy as np
import pytest

from edge import deconv
from edge.bundle import load_bundle, load_deconv_weights


@pytest.fixture(scope="module")
def weights() -> deconv.DeconvWeights:
    return load_deconv_weights(load_bundle().deconv_path)


def test_attribution_equals_the_reference(weights: deconv.DeconvWeights) -> None:
    rng = np.random.default_rng(0)
    n_classes = weights.w_logits.shape[1]
    for _ in range(20):
        x = (np.abs(rng.normal(size=1360)) ** 3).astype(np.float32)
        x /= x.max()
        c = int(rng.integers(0, n_classes))
        expected = deconv.attribution_reference(x, weights, c)
        got = deconv.attribution(x, weights, c)
        assert got.shape == expected.shape and got.dtype == np.float32
        # float32 sums in another order (BatchNorm folded into the squeeze weights).
        assert np.max(np.abs(got - expected)) <= 1e-4 * max(float(np.max(np.abs(expected))), 1e-30)


def test_plan_is_built_once_per_weights(weights: deconv.DeconvWeights) -> None:
    assert deconv.plan_for(weights) is deconv.plan_for(weights)


@pytest.mark.parametrize("seed", range(10))
def test_find_peaks_equals_scipy(seed: int) -> None:
    from scipy.signal import find_peaks

    rng = np.random.default_rng(seed)
    x = np.convolve(rng.normal(size=1400), np.ones(7) / 7, mode="same").astype(np.float32)
    x = np.maximum(x, 0)
    x[200:206] = x[203] + 1.0  # a flat top: counts once, at its middle
    x[0] = x.max() + 1  # maxima at the ends are not peaks
    for height, distance in ((0.0, 1), (0.05 * x.max(), 8), (0.2 * x.max(), 30)):
        idx, props = find_peaks(x, height=height, distance=distance)
        got, heights = deconv.find_peaks(x, height, distance)
        np.testing.assert_array_equal(got, idx)
        np.testing.assert_array_equal(heights, props["peak_heights"])


def test_find_peaks_on_tiny_and_flat_input() -> None:
    assert deconv.find_peaks(np.zeros(2, np.float32), 0.0, 1)[0].size == 0
    assert deconv.find_peaks(np.ones(50, np.float32), 0.0, 5)[0].size == 0
