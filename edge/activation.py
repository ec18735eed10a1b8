"""`model/activate`: which bundles are installed, and the inference self-test a bundle must pass.

The daemon (edge/daemon.py) does the switch between two spectra: load and verify the bundle
(edge.bundle.load_bundle checks every file's SHA-256 against its manifest), build an Analyzer
for it, run `self_test`, and only then swap it in; a bundle that fails either step is never
used (the running one stays: rollback by construction). Installed bundles are the
sub-directories of `models_dir` that hold a manifest.json, plus the bundle the daemon started
with (by its manifest name), so an operator can always switch back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from edge.bundle import Bundle
from edge.pipeline import Analyzer

#: Sample-tray minerals the self-test classifies (common, distinct spectra; the tray has 2 each).
SELF_TEST_MINERALS = ("Quartz", "Calcite", "Gypsum", "Albite", "Dolomite", "Hematite")
#: Of the self-test spectra whose mineral the bundle knows, at least this share must be right.
SELF_TEST_MIN_ACCURACY = 0.5


@dataclass(frozen=True)
class SelfTest:
    passed: bool
    spectra: int  # analysed
    known: int  # of a mineral in the bundle's labels
    correct: int  # of those, top-1 right
    error: str | None  # why it failed

    def summary(self) -> str:
        return f"{self.correct}/{self.known} known self-test spectra right ({self.spectra} analysed)"


def installed_bundles(models_dir: Path, running: Bundle, startup: Bundle) -> dict[str, Path]:
    """name -> bundle directory: every `models_dir/<name>/manifest.json`, plus the startup and
    running bundles by their manifest names."""
    out: dict[str, Path] = {}
    if models_dir.is_dir():
        for d in sorted(models_dir.iterdir()):
            if (d / "manifest.json").is_file():
                out[d.name] = d
    out.setdefault(startup.name, startup.path)
    out.setdefault(running.name, running.path)
    return out


def self_test(analyzer: Analyzer) -> SelfTest:
    """Classify sample-tray spectra (RRUFF Processed, shipped with the package) with the new
    analyzer: every answer must be a well-formed probability over the bundle's labels, and the
    known minerals mostly right."""
    from firmware_bridge.library import load_library

    try:
        samples = load_library(None, SELF_TEST_MINERALS)
    except Exception as err:  # noqa: BLE001 - a missing tray must not pass as a good model
        return SelfTest(False, 0, 0, 0, f"no self-test spectra: {err}")
    labels = set(analyzer.bundle.labels)
    known = correct = 0
    for spec in samples:
        try:
            a = analyzer.analyze_corrected(spec.shift_cm1, spec.intensity)
        except Exception as err:  # noqa: BLE001 - any failure of the new model is a failed test
            return SelfTest(False, len(samples), known, correct, f"inference failed on {spec.mineral}: {err}")
        if a.status != "ok" or not a.top:
            return SelfTest(False, len(samples), known, correct, f"{spec.mineral} rejected: {a.reason}")
        ps = [p for _, p in a.top]
        if not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in ps) or a.top[0][0] not in labels | {
            m for m in (analyzer.library.minerals if analyzer.library is not None else ())
        }:
            return SelfTest(False, len(samples), known, correct, f"malformed answer for {spec.mineral}: {a.top}")
        if spec.mineral in labels:
            known += 1
            correct += a.top[0][0] == spec.mineral
    if known and correct / known < SELF_TEST_MIN_ACCURACY:
        return SelfTest(
            False,
            len(samples),
            known,
            correct,
            f"only {correct}/{known} self-test spectra right (need {SELF_TEST_MIN_ACCURACY:.0%})",
        )
    return SelfTest(True, len(samples), known, correct, None)
