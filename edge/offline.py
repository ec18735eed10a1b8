"""`edge classify`: classify spectrum files with the bundle, no spectrometer and no broker.

One line per file, in the order given, human-readable or (`as_json`) one JSON object per
line with the field names of the MQTT result payload (docs/mqtt.md):

    {"file", "status", "reason", "top": [{"mineral", "p"}], "unknown",
     "match": {"mineral", "rruff_id", "similarity"} | null, "mixture": [...] | null,
     "peaks": [{"shift_cm1", "relevance", "intensity"}], "quality": {...}}

`status` is "ok", "rejected" (the file was read but the quality gate refused the spectrum,
as the daemon would) or "error" (the file could not be read). A bad file never stops the
run: its line says why and the next file is processed. Exit code 0 when every file was
read, 1 when any could not be (a rejected spectrum is a valid answer, not a failure).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from edge.bundle import load_bundle
from edge.config import EdgeConfig
from edge.errors import EdgeError
from edge.payload import findings_json
from edge.pipeline import Analysis, Analyzer
from edge.spectrum_files import SpectrumFileError, read_spectrum_file

EXIT_OK = 0
EXIT_UNREADABLE = 1


def classify(
    cfg: EdgeConfig,
    files: Sequence[str | Path],
    *,
    as_json: bool,
    corrected: bool | None = None,
    library: str | Path | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Classify `files`; `corrected` forces raw (False) / corrected (True) for every file.

    Bundle and runtime faults (BundleError, RuntimeNotFoundError) propagate: without a
    model no file can be classified, and the CLI turns them into one error line.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    bundle = load_bundle(cfg.model_dir)
    added = None
    if library is not None:
        from edge.library_cli import open_added, resolve_dir

        added = open_added(bundle, resolve_dir(bundle, Path(library)))
    analyzer = Analyzer(bundle, limits=cfg.quality_limits, library=added)
    counts = {"ok": 0, "rejected": 0, "error": 0}
    for f in files:
        record = classify_file(analyzer, f, corrected=corrected)
        counts[record["status"]] += 1
        out.write((json.dumps(record, allow_nan=False) if as_json else format_line(record)) + "\n")
        out.flush()
    if len(files) > 1:
        err.write(
            f"{len(files)} files: {counts['ok']} ok, {counts['rejected']} rejected, "
            f"{counts['error']} unreadable (model {bundle.name}, {len(bundle.labels)} classes)\n"
        )
    return EXIT_UNREADABLE if counts["error"] else EXIT_OK


def classify_file(analyzer: Analyzer, path: str | Path, *, corrected: bool | None = None) -> dict[str, Any]:
    """One file -> the JSON-ready record (never raises for bad input)."""
    try:
        sf = read_spectrum_file(path, corrected=corrected)
    except SpectrumFileError as e:
        return _record(str(path), "error", e.short)
    try:
        if sf.corrected:
            analysis = analyzer.analyze_corrected(sf.shift_cm1, sf.intensity)
        else:
            analysis = analyzer.analyze_counts(sf.intensity, sf.shift_cm1)
    except EdgeError as e:  # the pipeline rejects bad spectra itself; this is a last guard
        return _record(str(path), "error", f"analysis_failed: {e}")
    return _from_analysis(str(path), analysis, corrected=sf.corrected)


def _record(file: str, status: str, reason: str | None) -> dict[str, Any]:
    return {
        "file": file,
        "status": status,
        "reason": reason,
        "top": [],
        "unknown": False,
        "match": None,
        "mixture": None,
        "peaks": [],
        "quality": None,
        "corrected": None,
    }


def _from_analysis(file: str, a: Analysis, *, corrected: bool) -> dict[str, Any]:
    return {"file": file, **findings_json(a), "corrected": corrected}


def format_line(r: dict[str, Any]) -> str:
    """`file  status  Quartz 0.973, Calcite 0.012, ...  [unknown]  peaks 464, 206 cm-1`."""
    parts = [r["file"], r["status"]]
    if r["status"] != "ok":
        parts.append(str(r["reason"]))
        return "  ".join(parts)
    parts.append(", ".join(f"{c['mineral']} {c['p']:.3f}" for c in r["top"]))
    if r["unknown"]:
        parts.append("[unknown: top-1 below the model's threshold]")
    if r.get("match"):
        m = r["match"]
        parts.append(f"match {m['mineral']} {m['rruff_id']} r={m['similarity']:.3f}")
    if r.get("mixture"):
        parts.append("mixture " + " + ".join(f"{c['mineral']} {c['fraction']:.2f}" for c in r["mixture"]))
    if r["peaks"]:
        parts.append("peaks " + ", ".join(f"{p['shift_cm1']:.0f}" for p in r["peaks"][:5]) + " cm-1")
    return "  ".join(parts)
