"""Fusion: weights decide between disagreeing components; absent components are skipped."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import BundleError
from edge.fusion import FusionParams, fuse, fused_logits

LOGP = np.log(np.array([0.7, 0.2, 0.1]))
CORR = np.array([0.80, 0.97, 0.60])  # the library prefers class 1


def test_weights_decide_between_cnn_and_correlation() -> None:
    assert fuse(FusionParams(w_cnn=1, w_corr=0), 3, LOGP, CORR).order[0] == 0
    assert fuse(FusionParams(w_cnn=1, w_corr=50), 3, LOGP, CORR).order[0] == 1
    p = fuse(FusionParams(), 3, LOGP, CORR).probabilities
    assert p.sum() == pytest.approx(1.0)


def test_missing_embedding_is_skipped_and_present_one_counts() -> None:
    params = FusionParams(w_cnn=1, w_corr=0, w_emb=100)
    assert np.array_equal(fused_logits(params, 3, LOGP, CORR, None), fused_logits(params, 3, LOGP, CORR * 0 - np.inf))
    assert fuse(params, 3, LOGP, CORR, np.array([0.1, 0.2, 0.9])).order[0] == 2


def test_added_class_without_cnn_output_is_ranked_by_the_library() -> None:
    corr = np.array([0.5, 0.4, 0.3, 0.99])  # class 3 exists only in an added library
    f = fuse(FusionParams(w_corr=50), 4, LOGP, corr)
    assert f.order[0] == 3
    # and stays out when the library has nothing like it
    f = fuse(FusionParams(w_corr=50), 4, LOGP, np.array([0.9, 0.4, 0.3, -np.inf]))
    assert f.probabilities[3] == 0.0


def test_unknown_threshold_and_batch_shape() -> None:
    flat = fuse(FusionParams(w_cnn=0, w_corr=1, unknown_threshold=0.5), 3, LOGP, np.array([0.5, 0.5, 0.5]))
    assert flat.unknown
    batch = fused_logits(FusionParams(), 3, np.stack([LOGP, LOGP]), np.stack([CORR, CORR]))
    assert batch.shape == (2, 3)


def test_manifest_round_trip_and_refusal() -> None:
    p = FusionParams(w_cnn=0.5, w_corr=30, temperature=2, unknown_threshold=0.3)
    assert FusionParams.from_manifest({"fusion": p.to_dict()}) == p
    assert FusionParams.from_manifest({}) is None
    with pytest.raises(BundleError):
        FusionParams.from_manifest({"fusion": {"temperature": 0}})
    with pytest.raises(BundleError):
        FusionParams.from_manifest({"fusion": {"w_cnn": "x"}})


def test_cnn_views_round_trip_default_and_refusal() -> None:
    both = FusionParams(align_min_lag_pts=3, cnn_views="both")
    assert FusionParams.from_manifest({"fusion": both.to_dict()}) == both
    # Bundles fitted before the key existed score the moved spectrum only, as they were fitted.
    assert FusionParams.from_manifest({"fusion": {"w_corr": 20}}).cnn_views == "moved"  # type: ignore[union-attr]
    with pytest.raises(BundleError, match="cnn_views"):
        FusionParams.from_manifest({"fusion": {"cnn_views": "all"}})


def test_calibrated_gap_round_trip_and_default_off() -> None:
    gated = FusionParams(align_min_lag_pts=3, cnn_views="both", calibrated_gap=0.02)
    assert FusionParams.from_manifest({"fusion": gated.to_dict()}) == gated
    # Bundles fitted before the key existed never gate, as they were fitted.
    assert FusionParams.from_manifest({"fusion": {"w_corr": 20}}).calibrated_gap < 0  # type: ignore[union-attr]
    with pytest.raises(BundleError, match="calibrated_gap"):
        FusionParams.from_manifest({"fusion": {"calibrated_gap": "yes"}})


def test_noisy_spectra_get_their_own_parameters() -> None:
    noisy = FusionParams(w_cnn=1, w_corr=200, temperature=3)
    p = FusionParams(w_cnn=1, w_corr=0, noisy=noisy, noisy_below_snr=25)
    assert p.for_snr(10.0) is noisy and p.for_snr(25.0) is p and p.for_snr(400.0) is p
    assert p.for_snr(None) is p and p.for_snr(float("nan")) is p  # unmeasured: the clean set
    # The clean set follows the CNN, the noisy one the library (LOGP vs CORR disagree).
    assert fuse(p.for_snr(400.0), 3, LOGP, CORR).order[0] == 0
    assert fuse(p.for_snr(10.0), 3, LOGP, CORR).order[0] == 1
    d = p.to_dict()
    assert d["noisy"]["w_corr"] == 200 and "noisy" not in d["noisy"]
    assert FusionParams.from_manifest({"fusion": d | {"fitted_on": "x", "heldout": {"ece": 0.1}}}) == p
    # A bundle without the section keeps its manifest exactly as before.
    assert "noisy" not in FusionParams().to_dict() and "noisy_below_snr" not in FusionParams().to_dict()
    with pytest.raises(BundleError, match="noisy_below_snr"):
        FusionParams.from_manifest({"fusion": d | {"noisy_below_snr": 0}})
    with pytest.raises(BundleError, match="noisy"):
        FusionParams.from_manifest({"fusion": d | {"noisy": [1, 2]}})
    with pytest.raises(BundleError, match="temperature"):
        FusionParams.from_manifest({"fusion": d | {"noisy": d["noisy"] | {"temperature": -1}}})


def test_corr_view_round_trip_default_and_refusal() -> None:
    p = FusionParams(w_corr=20, corr_view="sqrt_d1", noisy=FusionParams(w_corr=200), noisy_below_snr=25)
    back = FusionParams.from_manifest({"fusion": p.to_dict()})
    assert back is not None and back.corr_view == "sqrt_d1"
    # One library serves both regimes: the noisy set searches with the clean set's view.
    assert back.noisy is not None and back.noisy.corr_view == "sqrt_d1"
    # Bundles fitted before the key existed search Pearson, as they were fitted, and keep their manifest.
    assert FusionParams.from_manifest({"fusion": {"w_corr": 20}}).corr_view == "pearson"  # type: ignore[union-attr]
    assert "corr_view" not in FusionParams().to_dict()
    with pytest.raises(BundleError, match="corr_view"):
        FusionParams.from_manifest({"fusion": {"corr_view": "log"}})
