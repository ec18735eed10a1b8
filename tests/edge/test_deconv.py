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


def _attribution_padded(x: np.ndarray, w: deconv.DeconvWeights, c: int) -> np.ndarray:
    """The fast path as it was before the pads were dropped (explicit zero-padded copies for
    the 3-tap convolutions and the last transposed convolution; 2-D fancy-index unpooling)."""
    p = deconv.plan_for(w)
    a, n, k = p.alpha, x.shape[0], p.k0.shape[0]
    left, right = (k - 1) // 2, k - 1 - (k - 1) // 2
    xp = np.pad(x.astype(np.float32), (left, right))
    h = np.lib.stride_tricks.sliding_window_view(xp, k) @ p.k0 + p.b0
    h = np.maximum(h, h * np.float32(a))
    s = h @ p.w_squeeze + p.b_squeeze
    s = np.maximum(s, s * np.float32(a))
    sp = np.pad(s, ((1, 1), (0, 0)))
    f = sp[0:n] @ p.w_fire[0]
    f += sp[1 : 1 + n] @ p.w_fire[1]
    f += sp[2 : 2 + n] @ p.w_fire[2]
    f += p.b_fire
    f = np.maximum(f, f * np.float32(a))
    n_win = n // p.pool
    windows = f[: n_win * p.pool].reshape(n_win, p.pool, f.shape[1])
    sw = windows.argmax(axis=1)
    pooled = np.take_along_axis(windows, sw[:, None, :], axis=1)[:, 0, :]
    v = (w.w_bottleneck @ w.w_logits[:, c]).reshape(pooled.shape)
    r_fire = np.zeros_like(f)
    r_fire[np.arange(n_win)[:, None] * p.pool + sw, np.arange(f.shape[1])[None, :]] = np.maximum(pooled * v, 0)
    rp = np.pad(r_fire, ((1, 1), (0, 0)))
    r_s = rp[2 : 2 + n] @ p.w_fire[0].T
    r_s += rp[1 : 1 + n] @ p.w_fire[1].T
    r_s += rp[0:n] @ p.w_fire[2].T
    r_s = np.maximum(r_s, r_s * np.float32(a))
    r_h = (r_s @ p.w_squeeze_t) * p.bn_scale
    r_h = np.maximum(r_h, r_h * np.float32(a))
    g = np.pad(r_h @ p.k0.T, ((right, left), (0, 0)))
    out = g[k - 1 : k - 1 + n, 0].copy()
    for i in range(1, k):
        out += g[k - 1 - i : k - 1 - i + n, i]
    return out


def test_attribution_and_peaks_unchanged_on_rruff_spectra(weights: deconv.DeconvWeights) -> None:
    """Real RRUFF spectra (preprocessed as the edge does) through the fast path and the
    padded form it replaced: the same curve to float32 rounding where the spectrum was
    measured, and the same reported peaks; and close to the layer-by-layer definition.

    Beyond a spectrum's last measured point the input is exactly zero, every position of a
    pooling window holds the same activation, and which one `argmax` picks is decided by
    float rounding alone. How BLAS blocks the two forms' rows differs between machines (on an
    AMD EPYC with numpy 2.4.6 the switch flipped in that flat tail for 37 of these 40 spectra,
    never before it), so the exact comparison stops a receptive field short of that tail.
    (Against the definition a spectrum can differ more: BatchNorm folding moves a near-tie
    inside a pooling window, R050130.)"""
    from edge.preprocess import preprocess
    from tests.trainer.conftest import require_rruff
    from trainer.rruff import load_rruff

    bundle = load_bundle()
    spectra, _ = load_rruff(require_rruff(), minerals={"Quartz", "Calcite", "Gypsum", "Diopside", "Rutile"})
    rng = np.random.default_rng(1)
    n_classes = weights.w_logits.shape[1]
    picked = [spectra[i] for i in rng.choice(len(spectra), size=min(40, len(spectra)), replace=False)]
    p = deconv.plan_for(weights)
    margin = 2 * p.pool + p.k0.shape[0] + 2  # a pooling window either side, the first kernel, the 3-tap conv
    for s in picked:
        x = preprocess(s.shift_cm1, s.intensity, bundle.spec, corrected=True).values
        c = int(rng.integers(0, n_classes))
        before = _attribution_padded(x, weights, c)
        got = deconv.attribution(x, weights, c)
        assert got.shape == before.shape and got.dtype == np.float32
        measured = slice(0, int(np.flatnonzero(x).max()) + 1 - margin)
        diff = np.max(np.abs(got[measured] - before[measured]))
        assert diff <= 1e-5 * float(np.max(np.abs(before))), s.rruff_id
        assert deconv.top_peaks(got, x, bundle.grid_cm1) == deconv.top_peaks(before, x, bundle.grid_cm1), s.rruff_id
        expected = deconv.attribution_reference(x, weights, c)
        assert np.corrcoef(got[measured], expected[measured])[0, 1] >= 0.999, s.rruff_id
