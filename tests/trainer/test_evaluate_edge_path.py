"""`trainer evaluate` and the export's hybrid step go through the edge's own code.

A real tiny FMCNN is exported (int8 TFLite + library + fitted fusion); evaluation must give,
spectrum by spectrum, exactly what `edge classify` (edge.offline.classify_file) gives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ONE = ((200, 0, False),)


@pytest.fixture(scope="module")
def exported(tiny_model: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from trainer.export import export_bundle

    model, ds = tiny_model
    out = tmp_path_factory.mktemp("bundle") / "b"
    rows = np.arange(ds.y.size)
    held = ds.subset(rows[rows % 5 == 0])
    fit = ds.subset(rows[rows % 5 != 0])
    export_bundle(model, fit, held, out, name="t", training_info={}, calibration_candidates=ONE, parity_min=0.0)
    return out, ds


def test_export_writes_a_compact_library_with_edge_embeddings(exported: tuple[Path, Any]) -> None:
    from edge.bundle import load_bundle
    from edge.classifier import Classifier
    from edge.pipeline import bundle_library

    out, ds = exported
    b = load_bundle(out)
    m = b.manifest
    assert "library.npz" in m["files"] and m["library"]["format"] == "raman-edge-library/2"
    lib = bundle_library(b)
    assert lib is not None and lib.spectra_q.dtype == np.int8
    clf = Classifier(b)
    e = clf.classify(ds.X[1], k=1).embedding
    if e is None:  # a model without an embedding output stores none
        assert not lib.has_embedding
        return
    assert lib.has_embedding and m["library"]["embedding"] is True
    # the stored embedding of a library row (row 1: rows % 5 != 0 are the library) is the
    # int8 model's own, to int8 rounding
    assert float(lib.embedding_similarities(clf.classify(ds.X[1], k=1).embedding).max()) > 0.995
    assert m["fusion"]["temperature"] > 0 and "fit" in m["library"]


def test_evaluate_equals_edge_classify(exported: tuple[Path, Any], tmp_path: Path, rruff_path: Path) -> None:
    from edge.bundle import load_bundle
    from edge.offline import classify_file
    from edge.pipeline import Analyzer
    from trainer.evaluate import evaluate_bundle
    from trainer.rruff import iter_files, parse_filename

    out, _ds = exported
    folder = tmp_path / "data"
    folder.mkdir()
    wanted = {"Quartz": 3, "Calcite": 3, "Hematite": 1}
    for name, raw in iter_files(rruff_path):
        info = parse_filename(name)
        if info and wanted.get(info.mineral, 0) > 0 and info.data_type == "Processed":
            wanted[info.mineral] -= 1
            (folder / Path(name).name).write_bytes(raw)
        if not any(wanted.values()):
            break
    report = evaluate_bundle(out, folder, tmp_path / "eval.json")
    assert report["identification"] == "hybrid" and report["n_unknown_label"] == 1
    analyzer = Analyzer(load_bundle(out))
    edge_top = []
    for f in sorted(folder.iterdir()):
        rec = classify_file(analyzer, f)
        if rec["status"] == "ok" and not f.name.startswith("Hematite"):
            edge_top.append((rec["top"][0]["mineral"], f.name.split("__")[0]))
    acc = np.mean([p == t for p, t in edge_top])
    assert report["n"] == len(edge_top)
    assert report["accuracy"] == pytest.approx(acc)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["library"]["n_references"] > 0


def test_evaluate_uses_an_added_library(exported: tuple[Path, Any], tmp_path: Path, rruff_path: Path) -> None:
    """A mineral the model never saw, taught with `edge library add`'s function, is scored."""
    from edge.bundle import load_bundle
    from edge.library_cli import add_references
    from edge.pipeline import Analyzer
    from trainer.evaluate import evaluate_bundle
    from trainer.rruff import iter_files, parse_filename

    out, _ds = exported
    files = []
    for name, raw in iter_files(rruff_path):
        info = parse_filename(name)
        if info and info.mineral == "Hematite" and info.data_type == "Processed":
            p = tmp_path / Path(name).name
            p.write_bytes(raw)
            files.append(p)
        if len(files) == 2:
            break
    (tmp_path / "data").mkdir()
    files[1].rename(tmp_path / "data" / files[1].name)
    b = load_bundle(out)
    added = add_references(b, tmp_path / "added", files[:1], "Hematite")
    # embedded with the bundle's model when it has an embedding output, like the bundle's library
    from edge.pipeline import bundle_library

    base = bundle_library(b)
    assert base is not None and added.has_embedding == base.has_embedding
    assert Analyzer(b, library=added).library.has_embedding == base.has_embedding  # type: ignore[union-attr]
    report = evaluate_bundle(out, tmp_path / "data", library_dir=tmp_path / "added")
    assert report["n_unknown_label"] == 0 and report["n"] + report["n_rejected"] == 1
