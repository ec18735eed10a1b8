"""Regenerate the README "Results" section from the Markdown tables in bench/results/.

    .venv/bin/python bench/readme_results.py

Only what a benchmark actually wrote is shown; a missing result says so instead of a number.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"

SECTIONS = [
    (
        "Accuracy: cross-validation, same folds for every model (`bench/accuracy.sh`)",
        ["cv/min8-*x10.md", "cv/paper-*x10.md"],
    ),
    (
        "What the correlation search compares: Pearson vs the square root and its slope (`bench/corr_views.py`)",
        ["corr_views.md"],
    ),
    ("Shipped model: int8 bundle", ["bundle.md"]),
    (
        "FMCNN: choosing the architecture, shift error on held-out specimens, int vs float (`bench/fmcnn_arch.py`, "
        "`bench/shift_heldout.py`, `bench/fmcnn_parity.py`)",
        ["fmcnn_arch.md", "robustness_shift_heldout_v6.md", "fmcnn_parity.md"],
    ),
    (
        "Reference library: unknown minerals, a new mineral without retraining, two-mineral mixtures, latency "
        "and raw spectra (`bench/unknowns.py`, `bench/library_add.py`, `bench/hybrid_mixture.py`, "
        "`bench/hybrid_latency.py`, `bench/raw_spectra.py`)",
        ["unknowns.md", "library_add.md", "hybrid_mixture.md", "hybrid_latency.md", "raw_spectra.md"],
    ),
    (
        "What the models confuse, and whether the differences are more than chance (`bench/series_confusions.py`)",
        ["series_confusions.md", "series_v9/series_confusions.md"],
    ),
    (
        "Fusing the SVM's evidence too: would it lift the hybrid past the SVM on min8? (`bench/hybrid_svm.py`)",
        ["hybrid_svm.md"],
    ),
    ("Which bands drove the decision: deconvnet attribution (the paper's Figure 5, ours)", ["figures"]),
    (
        "Robustness: full edge pipeline on emulator spectra vs correlation search-match (`bench/robustness.py`)",
        ["robustness.md"],
    ),
    ("Edge performance: latency by stage, int8 vs float (`bench/edge_perf.py`)", ["edge_perf_latency.md"]),
    ("Cold start: process start to first result (`bench/cold_start.py`)", ["cold_start.md"]),
    ("Emulator rate: frames/s from its own process (`bench/emulator_rate.py`)", ["emulator_rate.md"]),
    ("Throughput: emulator -> daemon -> Mosquitto (`bench/throughput.py`)", ["throughput.md"]),
    ("Soak and memory (`bench/soak.py`)", ["soak.md"]),
    ("Faults against the real daemon (`bench/faults.py`)", ["faults.md"]),
    ("Fuzzing the frame decoder (`bench/fuzz_codec.py`)", ["fuzz_codec.md"]),
]


#: Tables that re-use another run's folds to measure one choice, said above the table.
CAPTIONS = {
    "paper-specimen-v2-1x10": "The FMCNN recipe of issue 11 (physics augmentation, specimen validation) against "
    "correlation and SVM on the same grouped folds, each test fold also scored with its shift axis moved. The older "
    "paper-specimen table above is the previous recipe.",
    "paper-specimen-v3-1x10": "The shipped bundle's recipe (issue 12): the hybrid fits its fusion on calibration "
    "specimens of each training fold and builds its library from the rest; FMCNN, correlation and SVM rows re-use the "
    "v2 run's folds (same seed, same split).",
    "min8-v3-1x10": "The shipped bundle's recipe since 2026-12-03 afternoon: the hybrid's fusion weights chosen by log "
    "loss on calibration specimens of each training fold, and the CNN fed the spectrum aligned to its best library "
    "match; FMCNN, correlation and SVM on the same 10 folds (one repeat of the min8 folds above).",
    "paper-v3-1x10": "The same recipe on the paper selection, 10-fold stratified (resumable per fold: a partial "
    "run says how many folds are done).",
    "min8-v4-1x10": "Two CV recipes of the hybrid on the min8 folds of the v3 table above. hybrid (v2): built on the "
    "fold's own FMCNN, fusion fitted on its early-stopping specimens with only the spectrum itself hidden; those "
    "specimens chose the CNN's epoch and flatter it (ECE 0.066). hybrid_cal: the export's split inside the fold, a CNN "
    "trained without calibration specimens and the fusion fitted on them (itself hidden); the v3 recipe, which also "
    "kept the calibration specimens out of the library, gave 0.942. FMCNN, correlation and SVM rows: the v3 run's "
    "folds (FMCNN retrained, same config; the hybrid ran first, so its time includes training each fold's FMCNN and "
    "the FMCNN row's only loading it).",
    "paper-v4-1x10": "The paper selection, 10-fold stratified, since 2026-12-04: the hybrid (v2) is built on the "
    "fold's own FMCNN (the fmcnn row's model) and fits its fusion on that FMCNN's early-stopping specimens against the "
    "training fold without only the spectrum itself, as this protocol's test spectra see it; FMCNN, correlation and "
    "SVM on the same folds (SVM and correlation folds 0-1 from the v3 run: same folds and fingerprint).",
    "paper-specimen-v5-1x10": "Grouped by specimen since 2026-12-05: the hybrid scores a spectrum it moved onto its "
    "best library match both moved and unmoved, each class keeping its better CNN and embedding score (fusion "
    "cnn_views 'both', chosen on the early-stopping specimens of these training folds). FMCNN and hybrid in one run "
    "(each fold's FMCNN trained once, the hybrid built on it); correlation and SVM from the v2 run's folds (same "
    "folds and fingerprint).",
    "paper-v5-1x10": "The paper selection, 10-fold stratified, with the v5 hybrid (fusion cnn_views 'both', as the "
    "grouped v5 table): FMCNN and hybrid in one run (each fold's FMCNN trained once, the hybrid built on it, its "
    "fusion fitted on that FMCNN's early-stopping specimens); correlation and SVM from the v4 run's folds (same folds "
    "and fingerprint).",
    "min8-v5-1x10": "The min8 folds of the v3/v4 tables with the v5 hybrid (fusion cnn_views 'both'): FMCNN and "
    "hybrid in one run; correlation and SVM from the v4 run's folds (same folds and fingerprint); the v4 "
    "hybrid_cal rows predate the two views and are left out.",
    "paper-specimen-v6-1x10": "Grouped by specimen, v6 (2026-12-06): the hybrid with the calibrated-axis gate (fusion "
    "calibrated_gap: a spectrum whose best zero-lag library match is within the gap of its best shift-tolerant one is "
    "scored at zero lag and unmoved), the gap chosen per fold on that FMCNN's early-stopping specimens (best accuracy "
    "among gaps losing at most 0.02 at +-10 cm-1). Same folds; FMCNN and hybrid in one run, correlation and SVM from "
    "the v2 run.",
    "paper-v6-1x10": "The paper selection, 10-fold stratified, v6 hybrid (calibrated-axis gate, as the grouped v6 "
    "table); correlation and SVM from the v4 run's folds.",
    "min8-v6-1x10": "min8, 10-fold stratified, v6 hybrid (calibrated-axis gate); correlation and SVM from the v4 run's "
    "folds.",
    "paper-v7-1x10": "v7 (2026-12-06): the fusion's weight grid extended from 200 to 800 (every logged fold of the "
    "paper v6 run chose the embedding weight 200, the old grid's edge). Paper selection, 10-fold stratified: the "
    "v6 run's fold FMCNNs (so the fmcnn row is v6's); correlation and SVM from the v4 run's folds.",
    "min8-v7-1x10": "min8, 10-fold stratified, v7 hybrid (weight grid to 800); fold FMCNNs trained again in this "
    "session (TensorFlow on the CPU is not bit-reproducible: the fmcnn row differs from v5/v6); correlation and "
    "SVM from the v4 run's folds.",
    "min8-specimen-v7-1x10": "min8 grouped by specimen, v7 hybrid, every model run again on the same folds with "
    "the shifted-axis columns (the v1 table above has no hybrid and no shifts).",
    "paper-specimen-v7-1x10": "Grouped by specimen, v7 hybrid (weight grid to 800): fold FMCNNs trained again in "
    "this session; correlation and SVM from the v2 run.",
    "min8-v7r-1x10": "A second run of v7 (2026-12-07), every model on the min8 stratified folds again, into a cache "
    "that names every wrong answer (for bench/series_confusions.py); fold FMCNNs trained anew (not bit-reproducible), "
    "so its hybrid and fmcnn rows differ from the v7 table above by run-to-run variation alone.",
    "min8-specimen-v7r-1x10": "A second run of v7 (2026-12-07), min8 grouped by specimen, every model again, "
    "naming every wrong answer (bench/series_confusions.py); fold FMCNNs trained anew.",
    "paper-specimen-v7r-1x10": "A second run of v7 (2026-12-07), paper selection grouped by specimen, hybrid, FMCNN "
    "and correlation again, naming every wrong answer (bench/series_confusions.py); fold FMCNNs trained anew.",
    "paper-v7r-1x10": "A second run of v7 (2026-12-07/08), paper selection 10-fold stratified, hybrid, FMCNN and "
    "correlation again, naming every wrong answer (bench/series_confusions.py); fold FMCNNs trained anew. Every "
    "fold's accuracy equals the v7 table's (whose fmcnn row is v6's models): on this selection the training "
    "reproduced itself.",
    "min8-specimen-v8-1x10": "v8 (2026-12-08), min8 grouped by specimen: hybrid_xfit, the hybrid's fusion fitted on "
    "every training row scored out of fold by 3 inner FMCNNs (trainer/hybrid_xfit.py), not on the early-stopping "
    "tenth; hybrid and hybrid_xfit built on the same fold FMCNNs (trained anew, so fmcnn and hybrid differ from "
    "v7r by run-to-run variation); correlation, SVM, kNN and LDA from the v7r run's folds.",
    "min8-v8-1x10": "v8 (2026-12-08), min8 10-fold stratified: hybrid_xfit as in the grouped v8 table; hybrid and "
    "hybrid_xfit on the same fold FMCNNs; correlation, SVM, kNN and LDA from the v7r run's folds. A partial run: "
    "the means of the 4-fold and 10-fold rows are over different folds; the spectrum-by-spectrum line for "
    "'min8 (folds 0,1,2,3)' compares every model on the same four folds.",
    "min8-specimen-v9-1x10": "v9 (2026-12-08), min8 grouped by specimen: the hybrid's library searched with the "
    "sqrt_d1 correlation view (the square roots of the spectra and their slopes, edge/corr_view.py; "
    "bench/results/corr_views.md) instead of Pearson, everything else as v7; corr_sqrt_d1 is that view as a plain "
    "search-match baseline. fmcnn and hybrid on the same fold FMCNNs (trained anew); correlation, SVM, kNN and LDA "
    "from the v7r run's folds.",
    "min8-v9-1x10": "v9 (2026-12-08), min8 10-fold stratified: as the grouped v9 table.",
    "paper-specimen-v9-1x10": "v9 (2026-12-08), paper selection grouped by specimen: the hybrid with the sqrt_d1 "
    "correlation view and corr_sqrt_d1 beside it; fmcnn and hybrid on the same fold FMCNNs; correlation from the v7r "
    "run's folds.",
    "paper-v9-1x10": "v9 (2026-12-08), paper selection 10-fold stratified: as the grouped v9 table.",
    "min8-augmentation-1x10": "What the instrument-like augmentation costs on clean library spectra (same folds as the "
    "first repeat above).",
    "paper-specimen-valsplit-1x10": "Early stopping on held-out specimens (fmcnn_specimen_val) vs random held-out "
    "spectra (fmcnn), same grouped folds as above.",
}


def bundle_table() -> str:
    manifest = json.loads((ROOT / "models" / "fmcnn-rruff" / "manifest.json").read_text())
    t = manifest.get("training", {})
    p = manifest.get("parity", {})
    nan = float("nan")
    size = manifest.get("size_bytes", {})
    return (
        "| bundle | classes | spectra (train + held-out + calibration) | parameters | model.tflite "
        "| integer vs float top-1 agreement | float acc. | integer acc. | unknown threshold (CNN alone) |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"| {manifest.get('name')} | {t.get('n_classes')} | {t.get('n_train')} + {t.get('n_heldout')} + "
        f"{t.get('n_calibration', 0)} | "
        f"{t.get('params')} | {size.get('model.tflite', 0) / 1024:.0f} KB | "
        f"{p.get('top1_agreement', nan):.3f} (n={p.get('n')}, gate {p.get('gate', 0.99)}) | "
        f"{p.get('float_accuracy', nan):.3f} | {p.get('int8_accuracy', nan):.3f} | "
        f"{manifest.get('unknown', {}).get('threshold', float('nan')):.3f} |\n"
    )


def _load(name: str) -> dict | None:  # type: ignore[type-arg]
    p = RESULTS / name
    return json.loads(p.read_text()) if p.exists() else None


def headlines() -> list[str]:
    """One line per benchmark, numbers read from the result files (nothing typed in by hand)."""
    lines = []
    for name in (
        "cv/min8-2x10.json",
        "cv/paper-2x10.json",
        "cv/min8-specimen-1x10.json",
        "cv/paper-specimen-1x10.json",
        "cv/paper-specimen-v2-1x10.json",
        "cv/paper-specimen-v3-1x10.json",
        "cv/min8-v3-1x10.json",
        "cv/paper-v3-1x10.json",
        "cv/min8-v4-1x10.json",
        "cv/paper-v4-1x10.json",
        "cv/paper-specimen-v5-1x10.json",
        "cv/min8-v5-1x10.json",
        "cv/paper-v5-1x10.json",
        "cv/paper-specimen-v6-1x10.json",
        "cv/paper-v6-1x10.json",
        "cv/min8-v6-1x10.json",
        "cv/paper-v7-1x10.json",
        "cv/min8-v7-1x10.json",
        "cv/min8-specimen-v7-1x10.json",
        "cv/paper-specimen-v7-1x10.json",
        "cv/min8-v7r-1x10.json",
        "cv/min8-specimen-v7r-1x10.json",
        "cv/paper-specimen-v7r-1x10.json",
        "cv/paper-v7r-1x10.json",
        "cv/min8-specimen-v8-1x10.json",
        "cv/min8-v8-1x10.json",
        "cv/min8-specimen-v9-1x10.json",
        "cv/min8-v9-1x10.json",
        "cv/paper-specimen-v9-1x10.json",
        "cv/paper-v9-1x10.json",
    ):
        cv = _load(name)
        if cv:
            s = cv["summary"]
            ranked = sorted(s, key=lambda m: -s[m]["accuracy_mean"])
            counts = {int(v["n_folds"]) for v in s.values()}
            proto = "grouped by specimen" if cv["config"].get("group_by") else "stratified"
            if len(counts) == 1:
                head, fmt = f"{counts.pop()} folds", "{m} {a:.3f}"
            else:  # a partial run: say how many folds each mean is over
                head, fmt = "partial run", "{m} {a:.3f} ({n} folds)"
            lines.append(
                f"- **{cv['config']['selection']}**, {proto}, {head} (`{Path(name).stem}`): "
                + ", ".join(fmt.format(m=m, a=s[m]["accuracy_mean"], n=int(s[m]["n_folds"])) for m in ranked)
                + " (paper: FMCNN 0.988, SVM 0.964 on its 196-class oriented subset)"
            )
    views = _load("corr_views.json")
    if views:
        lines.append(
            "- **Correlation views** (`corr_views`, search-match on the CV folds, the view chosen per fold on the "
            "training fold only): "
            + "; ".join(
                f"{r['protocol']} Pearson {r['accuracy']['pearson']:.3f} vs nested {r['nested']['accuracy']:.3f}"
                f" (sqrt_d1 {r['accuracy']['sqrt_d1']:.3f})"
                for r in views["protocols"]
            )
        )
    # v7r: against the hybrid; v8: against the cross-fitted hybrid (accuracy.sh v8 step); v9:
    # against the hybrid with the sqrt_d1 correlation view.
    for sc in filter(
        None,
        (
            _load("series_confusions.json"),
            _load("series_v8/series_confusions.json"),
            _load("series_v9/series_confusions.json"),
        ),
    ):
        ref = sc["reference"]
        for proto, res in sc["protocols"].items():
            r = res["models"].get(ref)
            if not r:
                continue
            vs = ", ".join(
                f"{m} {o['accuracy']:.3f} (p {o['vs_reference']['mcnemar_exact_p']:.2f})"
                for m, o in sorted(res["models"].items(), key=lambda kv: -kv[1]["accuracy"])
                if m != ref
            )
            series = (
                f" {r['within_series_errors']} of its {r['errors']} errors within a solid-solution series"
                f" (series-level {r['series_accuracy']:.3f});"
                if res.get("series_list_complete")
                else ""
            )
            lines.append(
                f"- **{proto}, spectrum by spectrum** (`series_confusions`): {ref} {r['accuracy']:.3f},{series}"
                f" vs {vs} (exact McNemar p against {ref})"
            )
    m = json.loads((ROOT / "models" / "fmcnn-rruff" / "manifest.json").read_text())
    p = m["parity"]
    size_kb = m["size_bytes"]["model.tflite"] / 1024
    gate = p.get("gate", 0.99)
    verdict = (
        f"below the project's 99 % gate: exported with --parity-min {gate}; see the model card"
        if p["top1_agreement"] < 0.99
        else "passes the 99 % gate"
    )
    q = m.get("quantization", {"weights": "int8", "activations": "int8"})
    lines.append(
        f"- **Shipped bundle** ({q['weights']} weights, {q['activations']} activations): {size_kb:.0f} KB,"
        f" {m['output']['n_classes']} classes; held-out float {p['float_accuracy']:.3f} vs integer"
        f" {p['int8_accuracy']:.3f}; top-1 agreement {p['top1_agreement']:.3f} ({verdict})"
    )
    t, fh = m.get("temperature", {}), m.get("fusion", {}).get("heldout")
    if "ece" in t and fh:
        lines.append(
            f"- **Confidence** on {fh['n']} held-out specimens' spectra (ECE, 10 bins): CNN {t['ece']:.3f} at"
            f" T {t['value']:.2f} ({t.get('criterion')}); fused result {fh['ece']:.3f} (mean top-1"
            f" {fh['mean_confidence']:.3f} vs accuracy {fh['accuracy']:.3f})"
        )
    rob = _load("robustness.json")
    if rob:
        pts = {(pt["factor"], pt["value"]): pt["all"] for pt in rob["points"]}
        base = pts.get(("calibration", 0))
        off, fixed = pts.get(("calibration", 10)), pts.get(("calibration_corrected", 10))
        shipped = json.loads((ROOT / "models" / "fmcnn-rruff" / "manifest.json").read_text())["files"]["model.tflite"]
        ran_on = rob["parameters"].get("bundle_sha256", "")
        stale = (
            f" (measured with an earlier bundle, model.tflite {ran_on[:12]}; not re-run with the shipped one)"
            if ran_on and ran_on != shipped
            else ""
        )
        if base and off and fixed:
            lines.append(
                f"- **Robustness** (emulated instrument spectra, {rob['parameters']['n_sources']} per point; the edge's"
                " answer, whose library holds the sources: an upper bound):"
                f" {100 * base['cnn']['acc']:.1f} % vs correlation search-match {100 * base['corr']['acc']:.1f} % at"
                f" baseline; 10 cm-1 calibration error: {100 * off['cnn']['acc']:.1f} % vs"
                f" {100 * off['corr']['acc']:.1f} %, and {100 * fixed['cnn']['acc']:.1f} % after"
                f" `edge calibrate`{stale}"
            )
    perf = _load("edge_perf_latency.json")
    if perf:
        tot, c = perf["pipeline"]["total"], perf["classify"]
        lines.append(
            f"- **Edge latency** per spectrum (one core, shared): p50 {tot['p50']:.1f} ms / p99 {tot['p99']:.1f} ms;"
            f" classification int8 {c['int8_litert']['p50']:.2f} ms vs float32 TFLite"
            f" {c['float32_tflite']['p50']:.2f} ms vs Keras predict {c['keras_predict_1']['p50']:.0f} ms (p50);"
            f" TensorFlow imported: {perf['cold']['tensorflow_imported_any']}"
        )
    tp = _load("throughput.json")
    if tp:
        link = tp["link"][0]
        rate = tp.get("zero_loss_rate")
        best = max((r.get("delivered_per_s") or 0 for r in tp.get("runs", [])), default=0)
        what = (
            f"{rate:.1f} spectra/s delivered with zero loss"
            if rate is not None
            else f"no loss-free phase (frames lost before the daemon read them); at most {best:.1f} spectra/s delivered"
        )
        lines.append(
            f"- **Throughput**: {what} (emulator -> daemon -> Mosquitto, shared loaded machine); a USB full-speed"
            f" CDC link carries ~{link['usb_cdc_spectra_per_s']:.0f}/s of {link['pixels']}-pixel frames"
        )
    soak = _load("soak.json")
    if soak:
        sm = soak["summary"]
        lines.append(
            f"- **Soak** {sm['duration_s']:.0f} s: {sm['delivered_unique']}/{sm['sent']} delivered, RSS"
            f" {sm['rss_start_mib']:.1f} -> {sm['rss_end_mib']:.1f} MiB"
        )
    faults = _load("faults.json")
    if faults:
        lost = {c["case"]: c.get("committed_lost", 0) for c in faults["cases"] if c.get("committed_lost", 0)}
        where = ", ".join(f"{n} in `{k}`" for k, n in lost.items()) or "none"
        lines.append(
            f"- **Faults**: {len(faults['cases'])} cases against the real daemon; committed results lost: {where}"
        )
    return lines


def section() -> str:
    out = [
        "## Results",
        "",
        "Generated by `bench/readme_results.py` from `bench/results/` (machine and versions are in each JSON).",
        "All runs used a shared 2-core machine (each result records its load average): read ratios and side-by-side",
        "columns, not absolute times. In short:",
        "",
        *headlines(),
        "",
    ]
    for title, patterns in SECTIONS:
        out.append(f"### {title}")
        out.append("")
        if patterns == ["bundle.md"]:
            out.append(bundle_table())
            continue
        if patterns == ["figures"]:
            figs = sorted((RESULTS / "figures").glob("attribution_*.png"))
            out.append(
                "`trainer report --bundle models/fmcnn-rruff` on real RRUFF spectra; dotted lines are the top "
                "attribution peaks the edge publishes as `peaks`.\n"
            )
            out.extend(f"![{f.stem}](bench/results/figures/{f.name})" for f in figs[:3])
            out.append("")
            continue
        files = sorted({f for pat in patterns for f in RESULTS.glob(pat)})
        if not files:
            out.append("_Not run yet in this checkout._\n")
        for f in files:
            text = f.read_text().strip()
            text = re.sub(r"^# .*\n+", "", text)  # drop a file's own top-level title
            if f.stem in CAPTIONS:
                out.append(f"_{CAPTIONS[f.stem]}_")
                out.append("")
            out.append(text)
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    readme = README.read_text()
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md lacks the {START} ... {END} markers")
    head, rest = readme.split(START, 1)
    _old, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{section()}{END}{tail}")
    print("README.md results section regenerated")


if __name__ == "__main__":
    main()
