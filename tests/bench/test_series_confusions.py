"""bench/series_confusions.py: the tally a closing note quotes, on caches with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.series import SERIES, same_series, series_of
from bench.series_confusions import load_runs, tabulate


def _write(path: Path, rows: list[dict]) -> Path:  # type: ignore[type-arg]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _row(model: str, fold: int, n: int, errors: list[list[str]] | None) -> dict:  # type: ignore[type-arg]
    acc = 1 - len(errors or []) / n
    return {"model": model, "repeat": 0, "fold": fold, "n_test": n, "accuracy": acc, "errors": errors}


def test_series_are_disjoint_and_symmetric() -> None:
    members = [m for ms in SERIES.values() for m in ms]
    assert len(members) == len(set(members))
    assert same_series("Pyrope", "Almandine") and same_series("Almandine", "Pyrope")
    assert not same_series("Pyrope", "Pyrope")  # the same name is not a series confusion
    assert not same_series("Calcite", "Dolomite")  # one family, no series: deliberately apart
    assert series_of("Quartz") is None


def test_tally_counts_series_and_discordant_spectra(tmp_path: Path) -> None:
    hyb = [["a.txt", "Pyrope", "Almandine"], ["b.txt", "Quartz", "Calcite"]]
    svm = [["b.txt", "Quartz", "Calcite"]] + [[f"s{i}.txt", "Albite", "Anorthite"] for i in range(9)]
    cache = _write(
        tmp_path / "c.jsonl",
        [
            _row("hybrid", 0, 50, hyb[:1]),
            _row("hybrid", 1, 50, hyb[1:]),
            _row("svm", 0, 50, svm[:5]),
            _row("svm", 1, 50, svm[5:]),
            _row("knn", 0, 50, []),  # only one fold: incomplete, left out
            _row("old", 0, 50, None),  # cached before errors were recorded: left out
            _row("old", 1, 50, None),
        ],
    )
    runs = load_runs(cache)
    assert set(runs) == {"hybrid", "svm"}
    res = tabulate(runs, "hybrid")["models"]
    assert res["hybrid"]["errors"] == 2 and res["hybrid"]["within_series_errors"] == 1
    assert res["hybrid"]["accuracy"] == pytest.approx(0.98) and res["hybrid"]["series_accuracy"] == pytest.approx(0.99)
    assert res["svm"]["within_series_by_series"] == {"plagioclase": 9}
    v = res["svm"]["vs_reference"]
    assert (v["wrong_only_reference"], v["wrong_only_this"], v["both_wrong"]) == (1, 9, 1)
    # exact binomial: P(X <= 1 or X >= 9 | n=10, p=1/2) = 22/1024
    assert v["mcnemar_exact_p"] == pytest.approx(22 / 1024)
