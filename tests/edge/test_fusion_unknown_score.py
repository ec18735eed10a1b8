"""The fused unknown score: top-1 probability or top-1 logit, read from the manifest."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import BundleError
from edge.fusion import FusionParams, fuse, fused_logits

LOGP = np.log(np.array([0.7, 0.2, 0.1]))


def test_top_logit_flags_a_spectrum_that_matches_nothing_even_when_one_class_leads() -> None:
    weak = np.array([0.30, 0.05, 0.0])  # class 0 far ahead of the others, but a poor match
    strong = np.array([0.95, 0.5, 0.4])
    p = FusionParams(w_corr=50, temperature=1, unknown_score="top_logit", unknown_threshold=30.0)
    f_weak, f_strong = fuse(p, 3, LOGP, weak), fuse(p, 3, LOGP, strong)
    assert f_weak.unknown and not f_strong.unknown
    assert f_weak.unknown_score == pytest.approx(float(fused_logits(p, 3, LOGP, weak).max()))
    # by the normalised probability both are confident: top_p cannot tell them apart here
    q = FusionParams(w_corr=50, temperature=1, unknown_threshold=0.9)
    assert not fuse(q, 3, LOGP, weak).unknown and not fuse(q, 3, LOGP, strong).unknown
    assert fuse(q, 3, LOGP, weak).unknown_score == pytest.approx(float(fuse(q, 3, LOGP, weak).probabilities.max()))


def test_manifest_round_trip_and_refusal() -> None:
    p = FusionParams(w_corr=80, w_emb=5, unknown_score="top_logit", unknown_threshold=65.2)
    back = FusionParams.from_manifest({"fusion": p.to_dict() | {"fitted_on": "130 held-out spectra"}})
    assert back == p
    assert FusionParams.from_manifest({"fusion": {"w_corr": 10}}).unknown_score == "top_p"  # older manifests
    with pytest.raises(BundleError, match="unknown_score"):
        FusionParams.from_manifest({"fusion": {"unknown_score": "entropy"}})
