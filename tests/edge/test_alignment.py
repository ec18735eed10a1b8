"""edge.alignment: a spectrum whose axis is off is moved back onto its best library match
(by the library's own lag), and the Analyzer's CNN sees the moved spectrum."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge.alignment import aligned, better_view, calibrated_view, match_lag, move_by
from edge.bundle import load_bundle
from edge.library import build_library
from edge.pipeline import Analyzer


def test_move_by_is_the_library_lag_convention_and_renormalises() -> None:
    x = np.zeros(20, np.float32)
    x[5], x[15] = 1.0, 0.5
    right = move_by(x, 3)
    assert right[8] == 1.0 and right[18] == 0.5 and right[:3].sum() == 0
    left = move_by(x, -6)  # the 1.0 band leaves the grid: the 0.5 band is the new maximum
    assert left[9] == 1.0 and left.max() == 1.0 and left[14:].sum() == 0
    assert np.array_equal(move_by(np.zeros(5), 2), np.zeros(5))


def test_small_lags_and_disabled_alignment_leave_the_input_alone() -> None:
    x = np.linspace(0, 1, 30, dtype=np.float32)
    sim, lag = np.array([0.2, 0.9, 0.5], np.float32), np.array([7, -2, 9], np.int32)
    assert match_lag(sim, lag) == -2
    out, moved = aligned(x, sim, lag, 3)
    assert moved == 0 and np.array_equal(out, x)
    out, moved = aligned(x, np.array([0.95, 0.9], np.float32), np.array([7, -2], np.int32), 0)
    assert moved == 0 and np.array_equal(out, x)
    assert match_lag(np.zeros(0, np.float32), np.zeros(0, np.int32)) == 0


@pytest.fixture(scope="module")
def quartz_calcite() -> tuple[list[np.ndarray], list[str], list[str]]:
    from edge.preprocess import preprocess
    from tests.trainer.conftest import require_rruff
    from trainer.rruff import load_rruff

    spectra, _ = load_rruff(require_rruff(), minerals={"Quartz", "Calcite", "Gypsum"})
    spectra = [s for s in spectra if s.data_type == "Processed"]
    spec = load_bundle().spec
    rows = [preprocess(s.shift_cm1, s.intensity, spec, corrected=True).values for s in spectra]
    return rows, [s.mineral for s in spectra], [s.rruff_id for s in spectra]


def test_a_shifted_spectrum_is_moved_back_onto_its_reference(quartz_calcite) -> None:  # type: ignore[no-untyped-def]
    rows, names, ids = quartz_calcite
    minerals = tuple(sorted(set(names)))
    lib = build_library(minerals, [minerals.index(n) for n in names], ids, np.zeros(len(rows)), np.stack(rows))
    x = rows[0]
    off = move_by(x, 12)  # the axis 12 cm-1 off (1 cm-1 grid)
    sim, lag = lib.similarities(off)
    back, moved = aligned(off, sim, lag, 3)
    assert moved == -12 and int(np.argmax(sim)) == 0
    # Back where it was, apart from the 12 points that left the grid.
    keep = slice(0, x.size - 12)
    assert np.allclose(back[keep] / back[keep].max(), x[keep] / x[keep].max(), atol=1e-6)
    assert float(np.corrcoef(back, x)[0, 1]) > 0.99 > float(np.corrcoef(off, x)[0, 1])


def test_the_analyzer_classifies_the_aligned_spectrum(quartz_calcite) -> None:  # type: ignore[no-untyped-def]
    rows, names, ids = quartz_calcite
    minerals = tuple(sorted(set(names)))
    lib = build_library(minerals, [minerals.index(n) for n in names], ids, np.zeros(len(rows)), np.stack(rows))
    bundle = load_bundle()
    an = Analyzer(bundle, library=lib, use_bundle_library=False)
    an.fusion = dataclasses.replace(an.fusion, align_min_lag_pts=3)
    off = move_by(rows[0], 12)
    ev = an.evidence(off)
    assert ev.aligned_lag_pts == -12
    # The CNN's answer is the one for the moved-back spectrum, not for the shifted input.
    direct = an.classifier.classify(aligned(off, ev.sim, ev.lag, 3)[0], k=1)  # type: ignore[arg-type]
    assert np.array_equal(ev.prediction.probabilities, direct.probabilities)
    an.fusion = dataclasses.replace(an.fusion, align_min_lag_pts=0)
    ev0 = an.evidence(off)
    assert ev0.aligned_lag_pts == 0
    assert np.array_equal(ev0.prediction.probabilities, an.classifier.classify(off, k=1).probabilities)


def test_better_view_keeps_each_class_its_higher_score() -> None:
    moved = np.array([-1.0, -5.0, -np.inf, 0.2])
    unmoved = np.array([-3.0, -2.0, -np.inf, np.nan])
    assert np.array_equal(better_view(moved, unmoved)[:2], [-1.0, -2.0])
    out = better_view(moved, unmoved)
    assert out[2] == -np.inf and out[3] == 0.2  # a class absent from one view keeps the other's


def test_both_views_score_each_class_by_the_better_of_moved_and_unmoved(quartz_calcite) -> None:  # type: ignore[no-untyped-def]
    rows, names, ids = quartz_calcite
    minerals = tuple(sorted(set(names)))
    lib = build_library(minerals, [minerals.index(n) for n in names], ids, np.zeros(len(rows)), np.stack(rows))
    an = Analyzer(load_bundle(), library=lib, use_bundle_library=False)
    off = move_by(rows[0], 12)
    an.fusion = dataclasses.replace(an.fusion, align_min_lag_pts=3, cnn_views="moved", w_emb=0.0, w_corr=0.0)
    moved_only = an.evidence(off).fused
    an.fusion = dataclasses.replace(an.fusion, cnn_views="both")
    ev = an.evidence(off)
    assert ev.aligned_lag_pts == -12 and ev.fused is not None and moved_only is not None
    lp = [
        np.log(np.maximum(an.classifier.classify(x, k=1).probabilities.astype(np.float64), 1e-12))
        for x in (aligned(off, ev.sim, ev.lag, 3)[0], off)
    ]  # type: ignore[arg-type]
    n = len(an.bundle.labels)
    expect = np.maximum(np.maximum(lp[0], lp[1]), np.log(1e-4))  # edge.fusion's log p floor
    got = np.log(ev.fused.probabilities[:n]) * an.fusion.temperature
    # Fused logits = w_cnn * log p (the only term here), up to softmax's constant.
    assert np.allclose(got - got.max(), expect - expect.max(), atol=1e-6)
    if not np.allclose(lp[0], lp[1]):
        assert not np.allclose(ev.fused.probabilities, moved_only.probabilities)


def test_calibrated_view_takes_zero_lag_only_within_the_gap() -> None:
    sim = np.array([0.90, 0.80, 0.70], np.float32)
    lag = np.array([4, -1, 6], np.int32)
    sim0 = np.array([0.60, 0.88, 0.30], np.float32)  # best zero-lag 0.88, best overall 0.90
    s, lags = calibrated_view(sim, lag, sim0, 0.03)
    assert s is sim0 and not lags.any()
    s, lags = calibrated_view(sim, lag, sim0, 0.01)  # 0.02 apart: the axis looks off
    assert s is sim and lags is lag
    s, lags = calibrated_view(sim, lag, sim0, -1.0)  # disabled (bundles fitted before it)
    assert s is sim and lags is lag
    empty = np.zeros(0, np.float32)
    assert calibrated_view(empty, np.zeros(0, np.int32), empty, 0.5)[0] is empty


def test_the_analyzer_scores_a_calibrated_spectrum_at_zero_lag_and_unmoved(quartz_calcite) -> None:  # type: ignore[no-untyped-def]
    rows, names, ids = quartz_calcite
    minerals = tuple(sorted(set(names)))
    lib = build_library(minerals, [minerals.index(n) for n in names], ids, np.zeros(len(rows)), np.stack(rows))
    an = Analyzer(load_bundle(), library=lib, use_bundle_library=False)
    an.fusion = dataclasses.replace(an.fusion, align_min_lag_pts=3, calibrated_gap=0.02)
    lib = an.library  # the same references, on the bundle's class list
    assert lib is not None
    x = rows[0]
    sim, lag, sim0 = lib.search(x)
    assert sim.max() - sim0.max() <= 0.02  # a library spectrum itself: calibrated
    ev = an.evidence(x)
    assert ev.aligned_lag_pts == 0
    assert np.allclose(ev.corr_per_class, lib.per_class(sim0))  # type: ignore[arg-type]
    # 12 cm-1 off, the zero-lag match is far worse: shift-tolerant scores and the move, as before.
    off = move_by(x, 12)
    ev = an.evidence(off)
    assert ev.aligned_lag_pts == -12
    assert np.allclose(ev.corr_per_class, lib.per_class(lib.similarities(off)[0]))  # type: ignore[arg-type]
