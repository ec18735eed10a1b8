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


def test_the_measured_snr_picks_the_fusion_parameters(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A bundle with noisy-spectrum parameters: the edge fuses a spectrum with the set its own
    SNR measurement selects (here the noisy set flags everything unknown, so it shows)."""
    import json
    import shutil

    from firmware_bridge.physics import InstrumentModel, simulate_counts

    src = load_bundle()
    dst = tmp_path / "bundle"
    shutil.copytree(src.path, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    # The clean set never flags (threshold -1e9) and the noisy set always does (1e9): which set
    # fused the spectrum shows in `unknown`, whatever the shipped thresholds are.
    clean = {k: v for k, v in manifest["fusion"].items() if k not in ("noisy", "noisy_below_snr")}
    clean["unknown_threshold"] = -1e9

    def analyzer(below_snr: float) -> Analyzer:
        noisy = {k: v for k, v in clean.items() if k not in ("fitted_on", "heldout")} | {"unknown_threshold": 1e9}
        manifest["fusion"] = clean | {"noisy": noisy, "noisy_below_snr": below_snr}
        (dst / "manifest.json").write_text(json.dumps(manifest))
        return Analyzer(load_bundle(dst))

    lib = Analyzer(src).library
    assert lib is not None
    x = lib.reference(int(lib.class_rows(lib.minerals.index("Quartz"))[0]))
    model = InstrumentModel.default(fluorescence_ratio=3.0, integration_ms=40, cosmic_rate=0.0)
    rng = np.random.default_rng(0)
    counts = simulate_counts(src.grid_cm1, x, model, rng)
    dark = simulate_counts(src.grid_cm1[:2], np.zeros(2), model, rng, dark=True).astype(np.float64)
    results = {}
    for below in (1.0, 1e6):  # every measured SNR is above the first and below the second
        an = analyzer(below)
        shifts = an.shifts_for(model.reported_calibration_nm(), model.laser_nm, model.pixels)
        a = an.analyze_counts(counts, shifts, dark=dark)
        assert a.status == "ok" and a.snr is not None and 1.0 < a.snr < 1e6
        results[below] = a
    assert not results[1.0].unknown and results[1e6].unknown
    assert results[1.0].top == results[1e6].top  # same weights: only the threshold differs
