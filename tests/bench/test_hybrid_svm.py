"""bench/hybrid_svm.py: the summary compares each model with the hybrid of the same run."""

from __future__ import annotations

import json
from pathlib import Path

from bench.hybrid_svm import markdown, summarize


def _row(model: str, fold: int, errors: list[list[str]]) -> dict:  # type: ignore[type-arg]
    return {"model": model, "repeat": 0, "fold": fold, "n_test": 40, "accuracy": 1 - len(errors) / 40, "errors": errors}


def test_summary_counts_discordant_spectra_per_protocol(tmp_path: Path) -> None:
    wrong_h = [["a.txt", "Pyrope", "Almandine"], ["b.txt", "Quartz", "Calcite"]]
    rows = [
        _row("hybrid", 0, wrong_h),
        _row("hybrid", 1, []),
        _row("hybrid_svm", 0, wrong_h[1:]),
        _row("hybrid_svm", 1, [["c.txt", "Albite", "Anorthite"]]),
        _row("svm", 0, []),  # one fold only: not comparable spectrum by spectrum, left out
    ]
    (tmp_path / "min8.folds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "min8-specimen.folds.jsonl").write_text(json.dumps(_row("svm", 0, [])) + "\n")  # no hybrid
    out = summarize(tmp_path)
    assert list(out) == ["min8"]
    assert set(out["min8"]) == {"hybrid", "hybrid_svm"}
    vs = out["min8"]["hybrid_svm"]["vs_reference"]
    assert (vs["wrong_only_reference"], vs["wrong_only_this"]) == (1, 1)
    assert out["min8"]["hybrid"]["accuracy"] == 1 - 2 / 80
    md = markdown(out)
    assert "| hybrid_svm | 0.975 | 2 / 80 | 2 | 1 / 1 | 1.00 |" in md


def test_an_xfit_run_is_compared_with_the_cross_fitted_hybrid(tmp_path: Path) -> None:
    wrong = [["a.txt", "Pyrope", "Almandine"]]
    rows = [_row("hybrid", 0, wrong), _row("hybrid_xfit", 0, []), _row("svm", 0, wrong)]
    (tmp_path / "min8-xfit.folds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = summarize(tmp_path)["min8-xfit"]
    assert "vs_reference" not in out["hybrid_xfit"]
    assert out["hybrid"]["vs_reference"]["wrong_only_this"] == 1
    assert "wrong only hybrid_xfit / only this" in markdown({"min8-xfit": out})
