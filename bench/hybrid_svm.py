"""Would the hybrid pass the SVM baseline if it fused the SVM's evidence too? (issue 12, bench only)

On min8 the linear SVM (trainer.models.svm_scores) is the one baseline ahead of the hybrid on
both protocols (v7r: 0.938 vs 0.934 stratified, 0.928 vs 0.921 grouped; within chance,
bench/results/series_confusions.md), and its errors differ from the hybrid's (18 spectra wrong
only for the hybrid, 15 only for the SVM). This runs `trainer cv` with one more model,
`hybrid_svm`: the `hybrid` model of the same fold (its FMCNN, library and fitted fusion), plus
the decision values of the same SVM (SVC, linear, C=100) trained on the fold without the
hybrid's early-stopping specimens, added to the fused logits with a weight and temperature
chosen on those specimens by log loss (trainer.hybrid.fit_extra_weight). Test folds choose
nothing. Not on the edge: this measures whether the component is worth shipping.

    .venv/bin/python bench/hybrid_svm.py --selection min8 [--group-by specimen]
    .venv/bin/python bench/hybrid_svm.py --selection min8 [--group-by specimen] --tag xfit \
        --models hybrid,hybrid_xfit,svm,linsvm,hybrid_xfit_svm,hybrid_xfit_linsvm

The second form: the same terms on the cross-fitted hybrid (trainer.hybrid_xfit), whose fusion
and term weight are fitted on every training row scored out of fold, not on a tenth of them.

Writes bench/results/hybrid_svm/<protocol>.{json,md} and a per-fold cache beside them (rows
name every wrong answer, so bench/series_confusions.py can compare them spectrum by spectrum).
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.hybrid import hybrid_scores  # noqa: E402
from trainer.hybrid_xfit import hybrid_xfit_scores  # noqa: E402
from trainer.models import MODELS, spread_decision, svm_scores  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "hybrid_svm"
IDENTITY = (
    "hybrid_svm v1: the hybrid v2 model of the fold (weight grid to 800) plus SVC(linear, C=100) decision values "
    "from the fold without the early-stopping specimens, weight and temperature by log loss on those specimens"
)


def linsvm_scores(
    X_train: Any, y_train: Any, X_test: Any, n_classes: int, seed: int, groups: Any = None, ctx: Any = None
) -> Any:
    """One-vs-rest linear SVM (liblinear, same C as the SVC baseline): what an edge could carry,
    one weight row per class (n_classes x grid), where the SVC's one-vs-one machines (n^2/2 of
    them, 723 k for 1,203 classes) could not be."""
    from sklearn.svm import LinearSVC

    m = LinearSVC(C=100, max_iter=20000, random_state=seed)
    m.fit(X_train, y_train)
    return spread_decision(m.decision_function(X_test), m.classes_, n_classes)


# The `hybrid` model itself, with the SVM as its extra term (trainer.hybrid.hybrid_scores).
hybrid_svm_scores = partial(hybrid_scores, extra_term=svm_scores)
hybrid_svm_scores.identity = lambda: IDENTITY  # type: ignore[attr-defined]
hybrid_linsvm_scores = partial(hybrid_scores, extra_term=linsvm_scores)
LINSVM_IDENTITY = IDENTITY.replace("hybrid_svm v1", "hybrid_linsvm v1").replace(
    "SVC(linear, C=100)", "LinearSVC(ovr, C=100)"
)
hybrid_linsvm_scores.identity = lambda: LINSVM_IDENTITY  # type: ignore[attr-defined]
# The same two terms on the cross-fitted hybrid (trainer.hybrid_xfit): the term is cross-fitted on
# the hybrid's own inner parts, so its weight is chosen on every training row, not a tenth.
XFIT_IDENTITY = (
    "hybrid_xfit_svm v1: the hybrid_xfit v1 model of the fold plus SVC(linear, C=100) decision values cross-fitted "
    "on its inner parts, weight and temperature by log loss on every training row; test scored by the SVC of the "
    "whole training fold"
)
hybrid_xfit_svm_scores = partial(hybrid_xfit_scores, extra_term=svm_scores)
hybrid_xfit_svm_scores.identity = lambda: XFIT_IDENTITY  # type: ignore[attr-defined]
hybrid_xfit_linsvm_scores = partial(hybrid_xfit_scores, extra_term=linsvm_scores)
XFIT_LINSVM_IDENTITY = XFIT_IDENTITY.replace("hybrid_xfit_svm v1", "hybrid_xfit_linsvm v1").replace(
    "SVC(linear, C=100)", "LinearSVC(ovr, C=100)"
)
hybrid_xfit_linsvm_scores.identity = lambda: XFIT_LINSVM_IDENTITY  # type: ignore[attr-defined]


def reference_of(models: Any) -> str:
    """The model a run is compared against: the cross-fitted hybrid when the run has it."""
    return "hybrid_xfit" if "hybrid_xfit" in models else "hybrid"


def summarize(out_dir: Path = OUT) -> dict[str, Any]:
    """Every protocol cached in `out_dir`, spectrum by spectrum against the hybrid of the same run
    (`reference_of`)."""
    from bench.series_confusions import load_runs, tabulate

    protocols = {}
    for cache in sorted(out_dir.glob("*.folds.jsonl"), key=lambda p: (len(p.name), p.name)):
        runs = load_runs(cache)
        if "hybrid" in runs:
            protocols[cache.name.removesuffix(".folds.jsonl")] = tabulate(runs, reference_of(runs))["models"]
    return protocols


def markdown(protocols: dict[str, Any]) -> str:
    from bench.common import md_table

    lines = [
        "# Fusing the SVM's evidence too (bench/hybrid_svm.py)",
        "",
        "Same folds, same run per protocol. `hybrid_svm` / `hybrid_linsvm`: the `hybrid` of the same fold plus the "
        "decision values of the SVC baseline (one-vs-one, linear, C=100) / of a one-vs-rest LinearSVC (C=100, one "
        "weight row per class: the form an edge could carry), trained on the fold without the hybrid's "
        "early-stopping specimens, added to the fused logits with a weight and temperature chosen on those "
        "specimens by log loss. `-xfit` runs: `hybrid_xfit` (trainer.hybrid_xfit), the fusion fitted on every "
        "training row scored out of fold by CNNs trained on the other inner parts, and the same two terms "
        "cross-fitted on those parts, their weight chosen on every training row (`hybrid_xfit_svm`, "
        "`hybrid_xfit_linsvm`). McNemar: exact two-sided test on the spectra exactly one of the run's reference "
        "(`hybrid`, or `hybrid_xfit` in an -xfit run) and the model gets wrong. Not on the edge.",
    ]
    for proto, models in protocols.items():
        rows = []
        for m, r in sorted(models.items(), key=lambda kv: -kv[1]["accuracy"]):
            vs = r.get("vs_reference")
            rows.append(
                [
                    m,
                    f"{r['accuracy']:.3f}",
                    f"{r['errors']} / {r['n']}",
                    str(r["folds"]),
                    f"{vs['wrong_only_reference']} / {vs['wrong_only_this']}" if vs else "",
                    f"{vs['mcnemar_exact_p']:.2f}" if vs else "",
                ]
            )
        lines += ["", f"## {proto}", ""]
        lines.append(
            md_table(
                ["model", "accuracy", "errors", "folds", f"wrong only {reference_of(models)} / only this", "McNemar p"],
                rows,
            ).rstrip()
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    import argparse

    from trainer.cli import app

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--selection", default="min8")
    ap.add_argument("--group-by", default=None)
    ap.add_argument("--models", default="hybrid,svm,hybrid_svm,linsvm,hybrid_linsvm")
    ap.add_argument("--tag", default="", help="Suffix of this run's cache and table (e.g. xfit): same folds.")
    ap.add_argument("--model-dir", default=str(Path.home() / ".cache" / "raman-edge" / "cv-models"))
    ap.add_argument(
        "--summarize", action="store_true", help="Train nothing: tabulate the cached runs into hybrid_svm.{json,md}."
    )
    a = ap.parse_args(argv)
    if a.summarize:
        from bench.common import machine_info, write_results

        protocols = summarize()
        for p in write_results(
            OUT.parent, "hybrid_svm", {"protocols": protocols, "machine": machine_info()}, markdown(protocols)
        ):
            print(f"wrote {p}")
        return
    proto = a.selection + ("-specimen" if a.group_by else "")
    OUT.mkdir(parents=True, exist_ok=True)
    MODELS["hybrid_svm"] = hybrid_svm_scores
    MODELS["linsvm"] = linsvm_scores
    MODELS["hybrid_linsvm"] = hybrid_linsvm_scores
    MODELS["hybrid_xfit_svm"] = hybrid_xfit_svm_scores
    MODELS["hybrid_xfit_linsvm"] = hybrid_xfit_linsvm_scores
    args = ["cv", "--repeats", "1", "--folds", "10", "--seed", "0", "--selection", a.selection]
    args += ["--models", a.models, "--model-dir", str(Path(a.model_dir) / proto)]
    name = proto + (f"-{a.tag}" if a.tag else "")
    args += ["--out", str(OUT / f"{name}-1x10.json"), "--cache", str(OUT / f"{name}.folds.jsonl")]
    if a.group_by:
        args += ["--group-by", a.group_by]
    app(args, standalone_mode=False)


if __name__ == "__main__":
    main(sys.argv[1:])
