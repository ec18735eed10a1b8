"""Analyzer.evidence is what identify decides on (benchmarks read their scores from it)."""

from __future__ import annotations

import numpy as np

from edge.bundle import load_bundle
from edge.library import build_library
from edge.pipeline import Analyzer


def test_identify_follows_the_evidence() -> None:
    from edge.preprocess import preprocess
    from tests.trainer.conftest import require_rruff
    from trainer.rruff import load_rruff

    spectra, _ = load_rruff(require_rruff(), minerals={"Quartz", "Calcite", "Gypsum"})
    spectra = [s for s in spectra if s.data_type == "Processed"]
    bundle = load_bundle()
    rows = [preprocess(s.shift_cm1, s.intensity, bundle.spec, corrected=True).values for s in spectra]
    names = [s.mineral for s in spectra]
    ref = list(range(0, len(rows), 2))
    minerals = tuple(sorted(set(names)))
    lib = build_library(
        minerals,
        [minerals.index(names[i]) for i in ref],
        [spectra[i].rruff_id for i in ref],
        np.zeros(len(ref)),
        np.stack([rows[i] for i in ref]),
    )
    an = Analyzer(bundle, library=lib, use_bundle_library=False)
    cnn_only = Analyzer(bundle, use_bundle_library=False)  # no library at all: the CNN alone
    for i in range(1, min(len(rows), 12), 2):
        ev = an.evidence(rows[i])
        top, unknown, c, match = an.identify(rows[i])
        assert ev.fused is not None and ev.sim is not None and match is not None
        assert an.library.minerals[int(ev.fused.order[0])] == top[0][0] and c == int(ev.fused.order[0])  # type: ignore[union-attr]
        assert unknown == ev.fused.unknown and match.similarity == round(ev.corr_best, 4)
        assert 0 < ev.cnn_max_p <= 1 and ev.fused_top_p == max(ev.fused.probabilities)
        plain = cnn_only.evidence(rows[i])
        assert plain.fused is None and plain.sim is None
        assert cnn_only.identify(rows[i])[0] == plain.prediction.top
