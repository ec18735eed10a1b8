"""What the models confuse, and whether their differences are more than chance (issue 12).

Reads `trainer cv` caches whose rows carry `errors` ([RRUFF file, true, predicted] for every
wrong unshifted test answer; trainer/cv.py) and, per protocol and model:

- accuracy and errors, the errors between two names of one solid-solution series
  (bench/series.py, written down before this tally) and the series-level accuracy (a
  within-series answer counted right: what the spectra can tell apart without composition);
- spectrum by spectrum against the reference model (the hybrid): spectra only it gets wrong,
  spectra only the other gets wrong, and the exact two-sided McNemar p (binomial on the
  discordant spectra): on the same folds, is the difference more than chance?
- the most frequent confusions of the reference model.

Only complete runs (every fold of repeat 0) are tabulated. The caches are written by
`bench/accuracy.sh` (`series` step); tabulating them takes seconds:

    .venv/bin/python bench/series_confusions.py --cache min8=bench/results/cv/min8-v7r.folds.jsonl \\
        --cache min8-specimen=bench/results/cv/min8-specimen-v7r.folds.jsonl [--reference hybrid]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as `python bench/x.py`

import argparse  # noqa: E402
import json  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from scipy.stats import binomtest  # noqa: E402

from bench.common import DEFAULT_OUT, machine_info, md_table, write_results  # noqa: E402
from bench.series import SERIES, same_series, series_of  # noqa: E402


def load_runs(path: Path) -> dict[str, dict[str, Any]]:
    """model -> {n, wrong: {file: (true, pred)}, folds} from the complete repeat-0 rows of a cache."""
    rows: dict[str, dict[int, dict[str, Any]]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if r.get("repeat") != 0 or r.get("errors") is None:
            continue
        rows.setdefault(r["model"], {})[r["fold"]] = r  # a later line for a fold replaces an earlier one
    n_folds = max((len(f) for f in rows.values()), default=0)
    out = {}
    for model, folds in rows.items():
        if len(folds) < n_folds:
            continue  # incomplete: not comparable spectrum by spectrum
        wrong = {e[0]: (e[1], e[2]) for f in folds.values() for e in f["errors"]}
        out[model] = {"n": sum(f["n_test"] for f in folds.values()), "wrong": wrong, "folds": len(folds)}
    return out


def tabulate(runs: dict[str, dict[str, Any]], reference: str) -> dict[str, Any]:
    ref = runs.get(reference)
    models = {}
    for model, r in runs.items():
        n, wrong = r["n"], r["wrong"]
        within = [w for w in wrong.values() if same_series(*w)]
        by_series = Counter(series_of(t) for t, _p in within)
        row: dict[str, Any] = {
            "n": n,
            "folds": r["folds"],
            "accuracy": 1 - len(wrong) / n,
            "errors": len(wrong),
            "within_series_errors": len(within),
            "series_accuracy": 1 - (len(wrong) - len(within)) / n,
            "within_series_by_series": dict(by_series),
        }
        if ref is not None and model != reference:
            only_ref = len(set(ref["wrong"]) - set(wrong))
            only_other = len(set(wrong) - set(ref["wrong"]))
            k = only_ref + only_other
            row["vs_reference"] = {
                "wrong_only_reference": only_ref,
                "wrong_only_this": only_other,
                "mcnemar_exact_p": binomtest(only_ref, k, 0.5).pvalue if k else 1.0,
                "both_wrong": len(set(ref["wrong"]) & set(wrong)),
            }
        models[model] = row
    pairs = Counter()
    if ref is not None:
        pairs = Counter(tuple(sorted(w)) for w in ref["wrong"].values())
    return {
        "models": models,
        "reference_top_confusions": [
            {"pair": list(p), "count": c, "same_series": same_series(*p)} for p, c in pairs.most_common(12)
        ],
    }


def markdown(results: dict[str, Any], reference: str) -> str:
    lines = [
        "# What the models confuse (bench/series_confusions.py)",
        "",
        "Same folds, same run per protocol (trainer cv caches with per-spectrum errors). "
        "*Within series*: true and predicted names belong to one solid-solution series "
        "(bench/series.py); *series accuracy* counts those answers right. McNemar: exact "
        f"two-sided test on the spectra exactly one of `{reference}` and the model gets wrong. The series list "
        "covers the min8 minerals only: on the paper selection (1,203 minerals) the within-series count is a lower "
        "bound and the McNemar columns are what it is there for.",
    ]
    for proto, res in results["protocols"].items():
        rows = []
        for model, r in sorted(res["models"].items(), key=lambda kv: -kv[1]["accuracy"]):
            v = r.get("vs_reference")
            rows.append(
                [
                    model,
                    f"{r['accuracy']:.3f}",
                    f"{r['errors']} / {r['n']}",
                    str(r["within_series_errors"]),
                    f"{r['series_accuracy']:.3f}",
                    "" if v is None else f"{v['wrong_only_reference']} / {v['wrong_only_this']}",
                    "" if v is None else f"{v['mcnemar_exact_p']:.2f}",
                ]
            )
        lines += [
            "",
            f"## {proto}",
            "",
            md_table(
                [
                    "model",
                    "accuracy",
                    "errors",
                    "within series",
                    "series accuracy",
                    f"wrong only {reference} / only this",
                    "McNemar p",
                ],
                rows,
            ),
        ]
        series_rows = [
            [name] + [str(res["models"][m]["within_series_by_series"].get(name, 0)) for m in sorted(res["models"])]
            for name in SERIES
        ]
        lines += ["", "Within-series errors by series:", "", md_table(["series", *sorted(res["models"])], series_rows)]
        top = res["reference_top_confusions"]
        if top:
            lines += [
                "",
                f"Most frequent confusions of `{reference}` (either direction):",
                "",
                md_table(
                    ["pair", "count", "same series"],
                    [[" / ".join(t["pair"]), str(t["count"]), "yes" if t["same_series"] else ""] for t in top],
                ),
            ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", action="append", required=True, help="PROTOCOL=PATH of a trainer cv cache")
    ap.add_argument("--reference", default="hybrid")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    protocols = {}
    for spec in args.cache:
        proto, sep, path = spec.partition("=")
        if not sep:
            ap.error(f"--cache takes PROTOCOL=PATH, got {spec!r}")
        runs = load_runs(Path(path))
        if not runs:
            ap.error(f"{path}: no complete run with per-spectrum errors (rerun trainer cv into a new cache)")
        # bench/series.py lists the series among the min8 minerals; elsewhere its counts are a lower bound
        complete = proto.startswith("min8")
        protocols[proto] = tabulate(runs, args.reference) | {"cache": path, "series_list_complete": complete}
    results = {"protocols": protocols, "series": SERIES, "reference": args.reference, "machine": machine_info()}
    for p in write_results(args.out, "series_confusions", results, markdown(results, args.reference)):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
