"""Unknown minerals (issue 12, part 4): minerals the model and the library never saw.

Protocol (bench/lmo_bundle.py builds the split and the bundle; everything specimen-grouped):
the paper selection's minerals are split into *known* (85 %) and *unknown* (15 %, at random).
One FMCNN is trained on the known minerals' training specimens and exported with
`trainer export`'s own code (int8 TFLite + library of the training rows + fusion fitted on
the calibration specimens). The unknown minerals are split again, by mineral, into two
halves: *unknown-val* and *unknown-test*.

Parts:
- known-val: the export's calibration specimens (kept out of training and early stopping;
  the export fits its fusion and thresholds on them). Every threshold is chosen here: the
  score value that keeps 95 % of them (`keep_fraction`).
- unknown-val: used only to choose *which* score the edge should use (AUROC on
  known-val vs unknown-val). Never used for a threshold.
- known-test + unknown-test: only scored. Reported: AUROC, fraction of unknown-test flagged,
  fraction of known-test kept, at the known-val thresholds.

Scores (higher = more like a known mineral), all read from `Analyzer.evidence`, the code
the edge identifies with: the CNN's max calibrated probability, the best correlation
similarity over the library, the best embedding cosine, the fused top-1 probability (what
the edge's `unknown` flag uses) and the fused top-1 logit (before the softmax).

    .venv/bin/python -m bench.unknowns [--out bench/results]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_OUT, log, machine_info, md_table, write_results
from bench.lmo_bundle import WORK, calibration_mask, known_dataset, load_split
from edge.bundle import load_bundle
from edge.fusion import fused_logits
from edge.pipeline import Analyzer, Evidence

KEEP = 0.95
SCORES = ("cnn_max_p", "corr_best", "emb_best", "fused_top_p", "fused_top_logit")


def ensure_bundle(work: Path = WORK) -> Path:
    from bench import lmo_bundle

    if not (work / "model.keras").exists():
        lmo_bundle.train(work)
    if not (work / "bundle" / "manifest.json").exists():
        lmo_bundle.export(work)
    return work / "bundle"


def scores_of(an: Analyzer, ev: Evidence) -> dict[str, float]:
    f = ev.fused
    out = {"cnn_max_p": ev.cnn_max_p, "corr_best": ev.corr_best, "fused_top_p": ev.fused_top_p}
    out["emb_best"] = float(np.max(ev.emb_per_class)) if ev.emb_per_class is not None else float("nan")
    if f is not None and an.library is not None:
        log_p = np.log(np.maximum(ev.prediction.probabilities.astype(np.float64), 1e-12))
        s = fused_logits(an.fusion, len(an.library.minerals), log_p, ev.corr_per_class, ev.emb_per_class)
        out["fused_top_logit"] = float(np.max(s))
    else:
        out["fused_top_logit"] = float("nan")
    return out


def margins(ev: Evidence) -> tuple[float, float]:
    """Best minus second-best class similarity: correlation and embedding."""
    out = []
    for v in (ev.corr_per_class, ev.emb_per_class):
        if v is None:
            out.append(float("nan"))
            continue
        f = np.sort(v[np.isfinite(v)])[::-1]
        out.append(float(f[0] - f[1]) if f.size > 1 else float("nan"))
    return out[0], out[1]


COMBO = ("fused_top_logit", "cnn_max_p", "corr_best", "emb_best", "corr_margin", "emb_margin", "fused_top_p")


def combo_score(parts: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Bench-only ceiling: a logistic regression on COMBO fitted on known-val vs unknown-val
    (validation parts only; balanced classes), applied to every part."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def m(p: str) -> np.ndarray:
        return np.column_stack([parts[p][c] for c in COMBO])

    X = np.r_[m("known_val"), m("unknown_val")]
    ok = np.isfinite(X).all(axis=0)
    y = np.r_[np.ones(len(parts["known_val"]["cnn_max_p"])), np.zeros(len(parts["unknown_val"]["cnn_max_p"]))]
    sc = StandardScaler().fit(X[:, ok])
    lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit(sc.transform(X[:, ok]), y)
    return {p: lr.decision_function(sc.transform(np.nan_to_num(m(p)[:, ok]))) for p in parts}


def run_part(an: Analyzer, X: np.ndarray, names: list[str] | None) -> dict[str, np.ndarray]:
    """Scores of every row; with true names, also whether each component's top-1 is right."""
    lib = an.library
    assert lib is not None
    keys = (*SCORES, "corr_margin", "emb_margin", "edge_unknown", "hit_cnn", "hit_corr", "hit_fused")
    rows: dict[str, list[float]] = {k: [] for k in keys}
    for i, x in enumerate(X):
        ev = an.evidence(x)
        for k, v in scores_of(an, ev).items():
            rows[k].append(v)
        cm, em = margins(ev)
        rows["corr_margin"].append(cm)
        rows["emb_margin"].append(em)
        rows["edge_unknown"].append(float(ev.fused.unknown if ev.fused is not None else ev.prediction.unknown))
        if names is not None:
            t = names[i]
            rows["hit_cnn"].append(float(an.bundle.labels[ev.prediction.class_index] == t))
            rows["hit_corr"].append(float(lib.minerals[int(np.argmax(ev.corr_per_class))] == t))
            f = ev.fused
            rows["hit_fused"].append(float(f is not None and lib.minerals[int(f.order[0])] == t))
    return {k: np.array(v) for k, v in rows.items()}


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """P(score of a known > score of an unknown), ties half (Mann-Whitney)."""
    from scipy.stats import rankdata

    k, u = known[np.isfinite(known)], unknown[np.isfinite(unknown)]
    if not k.size or not u.size:
        return float("nan")
    r = rankdata(np.concatenate([k, u]))
    return float((r[: k.size].sum() - k.size * (k.size + 1) / 2) / (k.size * u.size))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    load_start = os.getloadavg()
    bundle_dir = ensure_bundle()
    split = load_split()
    ds = split.ds
    tr = known_dataset(split, split.train_rows)
    # known-val = the export's calibration specimens: where its own thresholds were fitted
    is_val = calibration_mask(tr)
    rng = np.random.default_rng(1)
    unk = np.array(split.unknown_minerals)
    unk_val = set(unk[rng.permutation(unk.size)[: unk.size // 2]].tolist())
    u_names = np.array(ds.labels)[ds.y[split.unknown_rows]]
    u_val_rows = split.unknown_rows[np.isin(u_names, list(unk_val))]
    u_test_rows = split.unknown_rows[~np.isin(u_names, list(unk_val))]
    test_names = [ds.labels[c] for c in ds.y[split.test_rows]]
    val_names = [tr.labels[c] for c in tr.y[is_val]]

    bundle = load_bundle(bundle_dir)
    an = Analyzer(bundle)
    assert an.library is not None, "the bench bundle must ship a library"
    log(
        f"bundle {bundle_dir}: {len(bundle.labels)} known minerals, library {len(an.library)} references; "
        f"known-val {int(is_val.sum())}, known-test {split.test_rows.size}, unknown-val {u_val_rows.size} "
        f"({len(unk_val)} minerals), unknown-test {u_test_rows.size} ({unk.size - len(unk_val)} minerals)"
    )
    parts = {
        "known_val": run_part(an, tr.X[is_val], val_names),
        "known_test": run_part(an, ds.X[split.test_rows], test_names),
        "unknown_val": run_part(an, ds.X[u_val_rows], None),
        "unknown_test": run_part(an, ds.X[u_test_rows], None),
    }
    combo = combo_score(parts)
    for p in parts:
        parts[p]["combo_logistic_val"] = combo[p]
    res_scores = {}
    for s in (*SCORES, "combo_logistic_val"):
        kv = parts["known_val"][s]
        if not np.isfinite(kv).any():
            continue
        thr = float(np.quantile(kv[np.isfinite(kv)], 1 - KEEP))
        res_scores[s] = {
            "threshold_from_known_val": thr,
            "auroc_val": auroc(kv, parts["unknown_val"][s]),
            "auroc_test": auroc(parts["known_test"][s], parts["unknown_test"][s]),
            "auroc_all_unknown": auroc(
                parts["known_test"][s], np.concatenate([parts["unknown_val"][s], parts["unknown_test"][s]])
            ),
            "known_test_kept": float(np.mean(parts["known_test"][s] >= thr)),
            "unknown_test_flagged": float(np.mean(parts["unknown_test"][s] < thr)),
            "unknown_val_flagged": float(np.mean(parts["unknown_val"][s] < thr)),
        }
    # the combination is fitted on the validation parts, so its val AUROC is not a fair choice criterion
    chosen = max((k for k in res_scores if k != "combo_logistic_val"), key=lambda s: res_scores[s]["auroc_val"])
    fit = bundle.manifest.get("library", {}).get("fit", {})
    edge_flag = {
        "score": an.fusion.unknown_score,
        "export_choice": {k: v for k, v in fit.items() if k.startswith("unknown")},
        "threshold": an.fusion.unknown_threshold,
        "known_val_kept": float(1 - parts["known_val"]["edge_unknown"].mean()),
        "known_test_kept": float(1 - parts["known_test"]["edge_unknown"].mean()),
        "unknown_test_flagged": float(parts["unknown_test"]["edge_unknown"].mean()),
    }
    acc = {
        p: {c: float(parts[p][f"hit_{c}"].mean()) for c in ("cnn", "corr", "fused")}
        for p in ("known_val", "known_test")
    }
    res = {
        "protocol": __doc__.split("\n\n")[1] + " " + __doc__.split("\n\n")[2],
        "bundle": {
            "dir": str(bundle_dir.relative_to(WORK.parent.parent.parent)),
            "model_sha256": bundle.sha256,
            "n_known_minerals": len(bundle.labels),
            "n_library": len(an.library),
            "fusion": an.fusion.to_dict(),
            "cnn_threshold_manifest": bundle.manifest.get("unknown", {}).get("threshold"),
        },
        "n": {p: int(len(v["cnn_max_p"])) for p, v in parts.items()},
        "n_unknown_minerals": {"val": len(unk_val), "test": int(unk.size - len(unk_val))},
        "keep_fraction": KEEP,
        "scores": res_scores,
        "chosen_on_unknown_val": chosen,
        "edge_unknown_flag": edge_flag,
        "known_accuracy": acc,
        "goal": {"unknown_flagged": 0.70, "known_kept": 0.95},
        "machine": machine_info() | {"loadavg_start_bench": [round(x, 2) for x in load_start]},
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    rows = [
        [
            s,
            f"{v['threshold_from_known_val']:.3f}",
            f"{v['auroc_val']:.3f}",
            f"{v['auroc_test']:.3f}",
            f"{v['known_test_kept']:.3f}",
            f"{v['unknown_test_flagged']:.3f}",
        ]
        for s, v in res_scores.items()
    ]
    md = "\n".join(
        [
            "# Unknown minerals: leave-minerals-out (bench/unknowns.py)",
            "",
            f"Bundle trained and exported on {len(bundle.labels)} known minerals (bench/lmo_bundle.py, "
            f"`trainer export` code, library {len(an.library)} references, fusion w_corr {an.fusion.w_corr:g}, "
            f"w_emb {an.fusion.w_emb:g}, T {an.fusion.temperature:.2f}). Known-val {res['n']['known_val']} spectra "
            f"(thresholds: keep {KEEP:.0%}), unknown-val {res['n']['unknown_val']} spectra of "
            f"{len(unk_val)} minerals (only to choose the score), known-test {res['n']['known_test']}, "
            f"unknown-test {res['n']['unknown_test']} spectra of {unk.size - len(unk_val)} minerals.",
            "",
            md_table(
                [
                    "score",
                    "threshold (known-val)",
                    "AUROC val",
                    "AUROC test",
                    "known-test kept",
                    "unknown-test flagged",
                ],
                rows,
            ),
            "",
            "`combo_logistic_val` (bench only, not on the edge): a logistic regression on "
            f"{', '.join(COMBO)}, fitted on known-val vs unknown-val (its AUROC val is in-sample).",
            "",
            f"Score with the best AUROC on the validation parts: **{chosen}**. The edge's own `unknown` flag "
            f"(fused {an.fusion.unknown_score} < {edge_flag['threshold']:.3f}; score and threshold chosen by "
            "`trainer export` on known-val alone, the score by known-val vs known-val with its own mineral removed "
            f"from CNN and library, AUROC {fit.get('unknown_score_auroc_class_removed')}): known-test kept "
            f"{edge_flag['known_test_kept']:.3f}, unknown-test flagged {edge_flag['unknown_test_flagged']:.3f} "
            f"(goal >= 0.70 at 0.95 kept).",
            "",
            md_table(
                ["part", "CNN", "correlation", "fused"],
                [[p, *(f"{acc[p][c]:.3f}" for c in ("cnn", "corr", "fused"))] for p in acc],
            ),
            "",
            f"Top-1 accuracy on the known parts. Load average at start {res['machine']['loadavg_start_bench']}, "
            f"end {res['loadavg_end']} (2 cores, shared with a training job).",
            "",
        ]
    )
    write_results(args.out, "unknowns", res, md)
    print(md)


if __name__ == "__main__":
    main()
