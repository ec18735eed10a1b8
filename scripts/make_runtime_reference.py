"""Record the shipped bundle's outputs on real RRUFF spectra, for the runtime-compat test.

Run after every re-export of models/fmcnn-rruff:
    .venv/bin/python scripts/make_runtime_reference.py
tests/edge/test_runtime_compat.py then checks that older runtimes (tflite-runtime 2.14,
ai-edge-litert 1.4, as on a Raspberry Pi) give the same answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.bundle import load_bundle
from edge.classifier import Classifier
from edge.pipeline import classify_library_spectrum
from trainer.rruff import DEFAULT_RRUFF_PATH, load_rruff

OUT = Path(__file__).resolve().parent.parent / "tests" / "edge" / "data" / "runtime_reference.json"
N = 40


def main() -> None:
    bundle = load_bundle()
    clf = Classifier(bundle)
    labels = set(bundle.labels)
    spectra, _ = load_rruff(DEFAULT_RRUFF_PATH, minerals=labels)
    rng = np.random.default_rng(0)
    pick = rng.choice([i for i, s in enumerate(spectra) if s.mineral in labels], size=N, replace=False)
    rows = []
    for i in sorted(pick):
        s = spectra[i]
        p = classify_library_spectrum(clf, s.shift_cm1, s.intensity).probabilities
        rows.append(
            {
                "file": s.file,
                "mineral": s.mineral,
                "top1": bundle.labels[int(p.argmax())],
                "p_top1": round(float(p.max()), 6),
            }
        )
    OUT.write_text(
        json.dumps({"bundle_sha256": bundle.sha256, "runtime": clf.runtime, "spectra": rows}, indent=1) + "\n"
    )
    print(f"wrote {OUT} ({len(rows)} spectra, runtime {clf.runtime})")


if __name__ == "__main__":
    main()
