"""Augmentation moves bands by the stated amounts; temperature fitting lowers held-out NLL."""

from __future__ import annotations

import numpy as np

from edge.classifier import softmax
from trainer.augment import AugmentConfig, augment, broaden, shift_stretch, tail_cut
from trainer.temperature import fit_temperature, nll, reliability


def _band(length: int = 400, at: float = 200.0, width: float = 3.0) -> np.ndarray:
    g = np.arange(length)
    return np.exp(-0.5 * ((g - at) / width) ** 2)[None, :].astype(np.float32)


def test_shift_moves_a_band_by_the_stated_points() -> None:
    for s in (-20.0, 7.0, 15.5):
        out = shift_stretch(_band(), np.array([s]), np.array([0.0]))
        centroid = (out[0] * np.arange(400)).sum() / out[0].sum()
        assert abs(centroid - (200 + s)) < 0.05


def test_stretch_scales_positions_about_the_centre() -> None:
    out = shift_stretch(_band(at=300.0), np.array([0.0]), np.array([0.01]))
    centroid = (out[0] * np.arange(400)).sum() / out[0].sum()
    assert abs(centroid - (199.5 + 100.5 * 1.01)) < 0.1


def test_tail_cut_zeroes_from_the_grid_point_on() -> None:
    X = np.ones((2, 50), np.float32)
    out = tail_cut(X, np.array([10, 40]))
    assert (out[0, 10:] == 0).all() and (out[0, :10] == 1).all()
    assert (out[1, 40:] == 0).all() and (out[1, :40] == 1).all()


def test_broadening_keeps_area_and_widens() -> None:
    X = _band(width=2.0)
    out = broaden(X, np.array([2.5]))
    assert abs(out.sum() - X.sum()) < 1e-3 * X.sum()
    w = lambda r: np.sqrt(((np.arange(400) - 200) ** 2 * r).sum() / r.sum())  # noqa: E731
    assert abs(w(out[0]) - np.hypot(2.0, 2.5)) < 0.05


def test_augment_keeps_shape_and_max_one_and_varies() -> None:
    rng = np.random.default_rng(0)
    X = np.repeat(_band(1360, 600.0), 16, axis=0)
    out = augment(X, rng)
    assert out.shape == X.shape and out.dtype == np.float32
    assert np.allclose(out.max(axis=1), 1.0)
    peaks = out.argmax(axis=1)
    assert np.abs(peaks - 600).max() <= AugmentConfig().max_shift_cm1 * 1.01 + 4
    assert np.unique(peaks).size > 4  # shifts were applied


def test_temperature_fit_lowers_nll_on_an_overconfident_set() -> None:
    rng = np.random.default_rng(1)
    n, k = 2000, 10
    y = rng.integers(k, size=n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 1.5  # informative but noisy
    over = logits * 4  # overconfident by a factor 4
    t = fit_temperature(over, y)
    assert 2.5 < t < 6
    assert nll(over, y, t) < nll(over, y, 1.0)
    assert reliability(softmax(over, t), y)["ece"] < reliability(softmax(over, 1.0), y)["ece"]
