"""The hybrid path of the Analyzer: real bundle, real RRUFF references, provenance and added minerals."""

from __future__ import annotations

import numpy as np
import pytest

from edge.bundle import load_bundle
from edge.library import build_library
from edge.pipeline import Analyzer


@pytest.fixture(scope="module")
def quartz_and_calcite():  # type: ignore[no-untyped-def]
    from tests.trainer.conftest import require_rruff
    from trainer.rruff import load_rruff

    spectra, _ = load_rruff(require_rruff(), minerals={"Quartz", "Calcite"})
    spectra = [s for s in spectra if s.data_type == "Processed"]
    by = {m: [s for s in spectra if s.mineral == m] for m in ("Quartz", "Calcite")}
    assert all(len(v) >= 2 for v in by.values())
    return by


def _prep(bundle, s):  # type: ignore[no-untyped-def]
    from edge.preprocess import preprocess

    return preprocess(s.shift_cm1, s.intensity, bundle.spec, corrected=True).values


def _lib(bundle, minerals, idx, ids, X):  # type: ignore[no-untyped-def]
    """References as `edge library add` stores them: embedded with the bundle's model if it has one."""
    from edge.classifier import Classifier

    clf = Classifier(bundle)
    embs = [clf.classify(x, k=1).embedding for x in X]
    emb = np.stack(embs) if all(e is not None for e in embs) else None
    return build_library(minerals, np.asarray(idx), ids, np.zeros(len(ids)), np.asarray(X), emb)


def test_match_names_the_reference_and_top_stays_fused(quartz_and_calcite) -> None:  # type: ignore[no-untyped-def]
    bundle = load_bundle()
    q = quartz_and_calcite["Quartz"]
    ref, probe = q[0], next(s for s in q if s.rruff_id != q[0].rruff_id) if len({s.rruff_id for s in q}) > 1 else q[1]
    lib = _lib(bundle, ("Quartz",), np.zeros(1), [ref.rruff_id], _prep(bundle, ref)[None])
    # only these references (the shipped bundle may carry a library of its own)
    a = Analyzer(bundle, library=lib, use_bundle_library=False).analyze_corrected(probe.shift_cm1, probe.intensity)
    assert a.status == "ok" and a.match is not None
    assert a.match.mineral == "Quartz" and a.match.rruff_id == ref.rruff_id and a.match.similarity > 0.8
    assert a.top[0][0] == "Quartz" and abs(sum(p for _m, p in a.top) - 1) < 0.2
    plain = Analyzer(bundle).analyze_corrected(probe.shift_cm1, probe.intensity)
    assert (plain.match is None) == ("library.npz" not in bundle.manifest["files"])


def test_an_added_mineral_is_named_from_one_reference(quartz_and_calcite) -> None:  # type: ignore[no-untyped-def]
    bundle = load_bundle()
    c = quartz_and_calcite["Calcite"]
    # Pretend calcite is new to the model: one reference under a name the CNN has never seen.
    lib = _lib(bundle, ("Newcalcite",), np.zeros(1), ["NEW1"], _prep(bundle, c[0])[None])
    an = Analyzer(bundle, library=lib, use_bundle_library=False)
    a = an.analyze_corrected(c[-1].shift_cm1, np.asarray(c[-1].intensity))
    assert a.top[0][0] == "Newcalcite" and a.match is not None and a.match.rruff_id == "NEW1"
    # Others unchanged, as the edge runs (the bundle's references and the added one). With the
    # added reference alone, quartz has no reference at all and its fused answer is flat (top-1
    # p < 0.01 with the 2026-12-08 fusion): which name leads then is noise, not a decision.
    q = quartz_and_calcite["Quartz"][0]
    both = Analyzer(bundle, library=lib).analyze_corrected(q.shift_cm1, q.intensity)
    assert both.top[0][0] == "Quartz" and both.top[0][1] > 0.9
    alone = an.analyze_corrected(q.shift_cm1, q.intensity)
    assert alone.top[0][0] in ("Quartz", "Newcalcite") and alone.top[0][1] < 0.5


def test_a_mixed_spot_carries_a_mixture(quartz_and_calcite) -> None:  # type: ignore[no-untyped-def]
    bundle = load_bundle()
    q, c = quartz_and_calcite["Quartz"], quartz_and_calcite["Calcite"]
    refs = np.stack([_prep(bundle, q[0]), _prep(bundle, c[0])])
    lib = _lib(bundle, ("Quartz", "Calcite"), np.array([0, 1]), ["RQ", "RC"], refs)
    an = Analyzer(bundle, library=lib, use_bundle_library=False)
    x = 0.5 * _prep(bundle, q[-1]) + 0.5 * _prep(bundle, c[-1])
    a = an.analyze_corrected(bundle.grid_cm1, x / x.max())
    assert a.mixture is not None and {m for m, _f in a.mixture} == {"Quartz", "Calcite"}
    pure = an.analyze_corrected(q[-1].shift_cm1, q[-1].intensity)
    assert pure.mixture is None


def test_the_library_is_searched_with_the_view_the_fusion_was_fitted_with(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import shutil

    from edge.library import SearchParams
    from edge.library import build_library as build
    from edge.pipeline import search_params

    src = load_bundle().path
    shutil.copytree(src, tmp_path / "b")
    mpath = tmp_path / "b" / "manifest.json"
    manifest = json.loads(mpath.read_text())
    if "library.npz" not in manifest["files"]:
        pytest.skip("the shipped bundle carries no library")
    # manifest.json is not among the hashed files: a re-fit (trainer refit-fusion) rewrites it.
    manifest["fusion"]["corr_view"] = "sqrt_d1"
    mpath.write_text(json.dumps(manifest))
    bundle = load_bundle(tmp_path / "b")
    assert search_params(bundle) == SearchParams(view="sqrt_d1")
    an = Analyzer(bundle)
    assert an.library is not None and an.library.params.view == "sqrt_d1"
    # Added references join with the same view; a library without the key searches Pearson.
    extra = build(("Newmineral",), np.zeros(1), ["NEW1"], np.zeros(1), an.library.spectra[:1])
    an.set_library(extra)
    assert an.library.params.view == "sqrt_d1" and an.library.minerals[-1] == "Newmineral"
    assert Analyzer(load_bundle(src)).library.params.view == load_bundle(src).manifest["fusion"].get(  # type: ignore[union-attr]
        "corr_view", "pearson"
    )
