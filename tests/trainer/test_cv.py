"""Cross-validation harness on a small real subset: same folds, every model, both protocols."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trainer.cv import CVConfig, make_folds, restrict_for_grouping, run_cv, summarize, topk_accuracy
from trainer.dataset import from_spectra
from trainer.rruff import RamanSpectrum, select


@pytest.fixture(scope="module")
def small(tiny_spectra: list[RamanSpectrum]):  # type: ignore[no-untyped-def]
    chosen, counts = select(tiny_spectra, "paper")
    return from_spectra(chosen, counts=counts)


def test_baselines_beat_chance_with_identical_folds(small, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = CVConfig(models=("knn", "corr", "lda", "svm", "rf"), folds=3, repeats=1, seed=0)
    cache = tmp_path / "folds.jsonl"
    results = run_cv(small, cfg, cache=cache)
    summary = summarize(results, cfg.models)
    chance = 1 / small.n_classes
    for name in cfg.models:
        assert summary[name]["accuracy_mean"] > 3 * chance, name
    # ECE for probability outputs (random forest, LDA), none for similarities or SVM margins
    assert "ece_mean" not in summary["corr"] and "ece_mean" not in summary["svm"]
    assert 0.0 <= summary["rf"]["ece_mean"] <= 1.0 and 0.0 <= summary["lda"]["ece_mean"] <= 1.0
    # same folds for every model: each fold has the same n_test for every model
    by_fold = {}
    for r in results:
        by_fold.setdefault(r.fold, set()).add(r.n_test)
    assert all(len(v) == 1 for v in by_fold.values())
    # resumable: a second run reads the cache and trains nothing new
    lines = cache.read_text().count("\n")
    again = run_cv(small, cfg, cache=cache)
    assert cache.read_text().count("\n") == lines and [r.accuracy for r in again] == [r.accuracy for r in results]


def test_fold_results_name_every_wrong_answer(small, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = CVConfig(models=("corr", "lda"), folds=3, repeats=1, seed=0)
    cache = tmp_path / "folds.jsonl"
    results = run_cv(small, cfg, cache=cache)
    files = set(small.files)
    for r in results:
        assert r.errors is not None
        # one entry per wrong answer, each a real test spectrum with its true and a different predicted name
        assert len(r.errors) == round((1 - r.accuracy) * r.n_test)
        for f, true, pred in r.errors:
            assert f in files and true != pred
            assert small.labels[small.y[small.files.index(f)]] == true and pred in small.labels
    assert any(r.errors for r in results)  # the tiny set is hard enough for something to be wrong
    # the cache keeps them, so a table can be made without refitting
    again = run_cv(small, cfg, cache=cache, cached_only=True)
    assert [r.errors for r in again] == [r.errors for r in results]


def test_cache_of_another_dataset_or_seed_is_refused(small, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from trainer.errors import InputError

    cfg = CVConfig(models=("corr",), folds=3, repeats=1, seed=0)
    cache = tmp_path / "folds.jsonl"
    run_cv(small, cfg, cache=cache)
    assert all("fingerprint" in json.loads(line) for line in cache.read_text().splitlines())
    with pytest.raises(InputError, match="another dataset or fold setting"):
        run_cv(small, CVConfig(models=("corr",), folds=3, repeats=1, seed=1), cache=cache)
    with pytest.raises(InputError, match="another dataset or fold setting"):
        run_cv(small.subset(np.arange(len(small.y) - 1)), cfg, cache=cache)
    # A cache line from before fingerprints: accepted where its fold matches, refused otherwise.
    legacy = tmp_path / "legacy.jsonl"
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    legacy.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "fingerprint"}) + "\n" for r in rows))
    assert [r.accuracy for r in run_cv(small, cfg, cache=legacy, cached_only=True)] == [r["accuracy"] for r in rows]
    rows[0]["n_test"] += 1
    legacy.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "fingerprint"}) + "\n" for r in rows))
    with pytest.raises(InputError, match="test spectra, this run's fold has"):
        run_cv(small, cfg, cache=legacy, cached_only=True)


def test_grouped_folds_never_split_a_specimen(small) -> None:  # type: ignore[no-untyped-def]
    ds = restrict_for_grouping(small)
    for tr, te in make_folds(ds, CVConfig(models=("knn",), folds=3, group_by="specimen"), 0):
        assert not set(ds.groups[tr]) & set(ds.groups[te])


def test_topk() -> None:
    scores = np.array([[0.1, 0.5, 0.4], [0.9, 0.02, 0.08]])
    assert topk_accuracy(scores, np.array([2, 1]), 1) == 0.0
    assert topk_accuracy(scores, np.array([2, 1]), 2) == 0.5


def test_cli_cv_writes_json_and_markdown(tmp_path: Path, rruff_path: Path) -> None:
    from trainer.cli import app

    out = tmp_path / "cv.json"
    res = CliRunner().invoke(
        app,
        [
            "cv",
            "--data",
            str(rruff_path),
            "--selection",
            "paper",
            "--models",
            "knn,corr",
            "--folds",
            "3",
            "--repeats",
            "1",
            "--minerals",
            "Quartz,Calcite,Gypsum,Dolomite",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert set(data["summary"]) == {"knn", "corr"} and len(data["folds"]) == 6
    assert "| corr |" in out.with_suffix(".md").read_text()


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    from trainer.cli import app

    res = CliRunner().invoke(app, ["cv", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x.json")])
    assert res.exit_code == 1
    assert "does not exist" in res.output and "Traceback" not in res.output


def test_shifted_test_folds_are_scored_by_the_same_fit(small, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = CVConfig(models=("corr",), folds=3, repeats=1, seed=0, shifts_cm1=(0.0, 30.0))
    cache = tmp_path / "folds.jsonl"
    results = run_cv(small, cfg, cache=cache)
    for r in results:
        assert r.shift_accuracy is not None and r.shift_accuracy["0"] == r.accuracy
        # correlation without a lag search falls apart 30 cm-1 off (identification notes)
        assert r.shift_accuracy["30"] < r.accuracy
    assert "shift_accuracy_mean" in summarize(results, cfg.models)["corr"]
    # cached folds computed without shifts are redone when shifts are asked for
    plain = tmp_path / "plain.jsonl"
    run_cv(small, CVConfig(models=("corr",), folds=3, repeats=1, seed=0), cache=plain)
    again = run_cv(small, cfg, cache=plain)
    assert all(r.shift_accuracy for r in again)


def test_hybrid_is_built_on_the_folds_own_fmcnn(small, tmp_path: Path, fmcnn_trainings) -> None:  # type: ignore[no-untyped-def]
    """With a model directory, fmcnn and the hybrid share one trained CNN per fold (hybrid_cal
    trains its own, without the calibration specimens), and a resumed run (another cache)
    trains nothing again."""
    trained = fmcnn_trainings
    models = tmp_path / "models"
    cfg = CVConfig(models=("fmcnn", "hybrid", "hybrid_cal", "corr"), folds=2, repeats=1, seed=0)
    results = run_cv(small, cfg, cache=tmp_path / "a.jsonl", model_dir=models)
    assert len(trained) == 4 and len(list(models.glob("*.keras"))) == 4
    assert len(list(models.glob("*-fmcnn-cal-*.keras"))) == 2
    by = {(r.model, r.fold): r for r in results}
    for fold in range(2):
        # The hybrid holds the FMCNN's evidence and the library's: never below chance, and
        # its probabilities are calibrated enough to report an ECE.
        for name in ("hybrid", "hybrid_cal"):
            assert by[(name, fold)].ece is not None
            assert by[(name, fold)].accuracy >= min(by[("fmcnn", fold)].accuracy, by[("corr", fold)].accuracy) - 0.1
    again = run_cv(
        small, CVConfig(models=("hybrid",), folds=2, repeats=1, seed=0), cache=tmp_path / "b.jsonl", model_dir=models
    )
    assert len(trained) == 4  # loaded, not retrained
    assert [r.accuracy for r in again] == [by[("hybrid", f)].accuracy for f in range(2)]
