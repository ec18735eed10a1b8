"""Robustness of mineral identification to instrument conditions: FMCNN int8 vs search-match.

    .venv/bin/python bench/robustness.py [--quick] [--out bench/results] [--n-sources N]

What one trial is (the same path a spectrum takes in `edge run`):

1. a real RRUFF Processed spectrum of a mineral the bundle knows (paper selection: X-ray
   confirmed, byte duplicates removed) goes through the emulator's forward model
   `firmware_bridge.physics.simulate_counts` with one `InstrumentModel` per sweep point;
2. a dark frame of the same instrument is simulated once per point and subtracted, as the
   daemon does (`--no-dark` turns that off); it is cosmic-ray free, except in the
   `dark_cosmic` sweep, which adds one ray per trial to it (see `run_point`);
3. `edge.pipeline.Analyzer.analyze_counts(counts, shifts)` with the shifts computed from the
   calibration the *device reports* (`model.reported_calibration_nm()`, which is off by
   `shift_error_cm1` in the calibration sweep): quality gate, int8 FMCNN, top-1;
4. search-match on exactly the same model input (`Analysis.values`): Pearson correlation with
   every library spectrum (the same paper-selection spectra preprocessed with
   `corrected=True`), best match per class (`trainer.models.best_per_class`), top-1.

The library contains the source spectrum itself, which would be a self-match. Three library
variants are reported: `corr` excludes the source file (the headline comparison), `corr_spec`
excludes every spectrum of the source's specimen (RRUFF ID: other lasers/orientations of the
same crystal), `corr_self` keeps everything (an upper bound; what a naive benchmark shows).
The CNN has no such switch: the bundle was trained on most of these spectra (in clean,
library form). When the training split is known (`--heldout-npz`, the trainer's data.npz
with `X`, `groups` and `is_val`, used only if it matches the sources row for row), accuracy
on the held-out spectra is reported separately. That split is per spectrum, not per
specimen: most held-out spectra have sibling spectra of the same specimen in training.

A few RRUFF specimens carry two mineral names (plagioclase: Anorthite and Labradorite on the
same RRUFF ID), so excluding the specimen can remove a wrong-class near-duplicate and make
`corr_spec` score higher than `corr` on those sources.

Factors are swept one at a time around a baseline (`BASELINE`); every point uses the same
source spectra, and each source's random stream is seeded by (seed, source index) only, so
its fluorescence shape and noise draws are paired across the points of a sweep.

Metrics per point and method (N = trials at the point):
  acc          top-1 correct and not rejected, over N (a rejection counts as a failure)
  acc_accepted top-1 correct over the spectra the quality gate accepted
  acc_ungated  top-1 correct over N, classifying gate-rejected spectra anyway
  rejected     fraction rejected by the quality gate (identical for both methods: it runs
               before classification), with the reasons counted in the JSON
  unknown      (CNN only) fraction of accepted spectra flagged unknown (below threshold)
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DEFAULT_OUT,
    ensure_repo_on_path,
    log,
    machine_info,
    md_table,
    wilson,
    write_results,
)

ensure_repo_on_path()

from edge.bundle import load_bundle  # noqa: E402
from edge.calibration import measure_shift_offset  # noqa: E402
from edge.errors import SpectrumError  # noqa: E402
from edge.pipeline import Analyzer, QualityLimits  # noqa: E402
from edge.preprocess import preprocess  # noqa: E402
from firmware_bridge.physics import InstrumentModel, simulate_counts  # noqa: E402
from raman_core.bands import reference_sample  # noqa: E402
from trainer.models import best_per_class  # noqa: E402
from trainer.rruff import DEFAULT_RRUFF_PATH, load_rruff, select  # noqa: E402

NAME = "robustness"

#: The point every sweep passes through. 60 e-/ms x 40 ms = 2,400 photo-electrons at the
#: strongest band; with fluorescence 20x that is ~50,000 counts, still below full scale, so
#: the fluorescence sweep measures background and its shot noise, not saturation.
BASELINE: dict[str, float] = {
    "laser_nm": 785.0,
    "signal_e_per_ms": 60.0,
    "integration_ms": 40,
    "fluorescence_ratio": 2.0,
    "shift_error_cm1": 0.0,
    "cosmic_rate": 0.2,
    "dark_cosmic": 0,
}

#: factor -> (InstrumentModel field, values, axis label).
SWEEPS: dict[str, tuple[str, list[float], str]] = {
    "snr": ("integration_ms", [2, 5, 10, 20, 40, 100, 200], "integration (ms) at 60 e-/ms"),
    "fluorescence": ("fluorescence_ratio", [0, 2, 5, 10, 20], "fluorescence / strongest band"),
    "calibration": ("shift_error_cm1", [0, 2, 5, 10, 20, 30], "reported shift error (cm-1)"),
    # The same errors after `edge calibrate` measured them on an emulated polystyrene reference
    # (4 averaged exposures through the same instrument) and the offset was configured.
    "calibration_corrected": ("shift_error_cm1", [0, 2, 5, 10, 20, 30], "shift error (cm-1), corrected"),
    "cosmic": ("cosmic_rate", [0, 0.2, 1, 3, 10, 30], "cosmic rays per frame (mean)"),
    "laser": ("laser_nm", [532, 785], "laser (nm)"),
    "dark_cosmic": ("dark_cosmic", [0, 1], "cosmic rays in the dark frame"),
}

METHODS = ("cnn", "corr", "corr_spec", "corr_self")
METHOD_LABEL = {
    "cnn": "FMCNN int8",
    "corr": "corr (source excluded)",
    "corr_spec": "corr (specimen excluded)",
    "corr_self": "corr (source included)",
}


def instrument(params: dict[str, float]) -> InstrumentModel:
    """The InstrumentModel of a sweep point (`dark_cosmic`, `calibrated` are ours, not the model's)."""
    fields = {k: v for k, v in params.items() if k not in ("dark_cosmic", "calibrated")}
    return InstrumentModel.default(**fields)  # type: ignore[arg-type]


def nominal_snr(p: dict[str, float], read_noise_e: float) -> float:
    """Shot + read-noise SNR at the strongest band if the fluorescence peaks there too.

    A label for the x axis, not what the gate measures: the gate estimates SNR from the
    spectrum itself (`Prepared.snr`).
    """
    n = p["signal_e_per_ms"] * p["integration_ms"]
    return float(n / np.sqrt(n * (1 + p["fluorescence_ratio"]) + read_noise_e**2))


def load_sources(rruff: Path, labels: tuple[str, ...]) -> list[Any]:
    spectra, report = load_rruff(rruff, minerals=set(labels))
    chosen, counts = select(spectra, "paper")
    chosen = [s for s in chosen if s.mineral in labels]
    log(f"RRUFF: {report.summary()}; paper selection of bundle classes: {len(chosen)} spectra")
    return chosen


def build_library(sources: list[Any], bundle: Any) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray]:
    """Preprocess every source as a library entry (corrected=True); drop the ones that fail."""
    rows, kept = [], []
    for s in sources:
        try:
            rows.append(preprocess(s.shift_cm1, s.intensity, bundle.spec, corrected=True).values)
        except SpectrumError:
            continue
        kept.append(s)
    X = np.stack(rows).astype(np.float64)
    Z = X - X.mean(axis=1, keepdims=True)
    Z /= np.where((n := np.linalg.norm(Z, axis=1, keepdims=True)) == 0, 1.0, n)
    index = {m: i for i, m in enumerate(bundle.labels)}
    y = np.array([index[s.mineral] for s in kept], dtype=np.int64)
    return kept, X, Z, y


def heldout_rows(
    path: Path | None, bundle: Any, sources: list[Any], lib_X: np.ndarray
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Which sources the bundle's CNN never saw in training, from the trainer's data.npz.

    data.npz holds the training rows (X, groups, is_val) but no file names, so each source
    is matched to the row with the same specimen ID and the same preprocessed values
    (max |dx| < 1e-4). The split is used only if every source finds a row and the file has
    the bundle's training counts; otherwise it is reported as unknown.
    """
    if path is None or not path.is_file():
        return None, {"source": None, "note": "training split unknown; CNN sources include training spectra"}
    d = np.load(path)
    training = bundle.manifest.get("training", {})
    if len(d["groups"]) != training.get("n_spectra") or int(d["is_val"].sum()) != training.get("n_heldout"):
        return None, {"source": str(path), "note": "data.npz does not match the bundle's training counts; ignored"}
    rows_by_group: dict[str, list[int]] = {}
    for j, g in enumerate(d["groups"].tolist()):
        rows_by_group.setdefault(g, []).append(j)
    X = d["X"].astype(np.float64)
    held = np.zeros(len(sources), bool)
    for i, s in enumerate(sources):
        hits = [j for j in rows_by_group.get(s.rruff_id, []) if np.abs(X[j] - lib_X[i]).max() < 1e-4]
        if not hits:
            return None, {"source": str(path), "note": f"{s.file}: no matching row in data.npz; ignored"}
        # Identical rows (RRUFF has a few files with the same data): held out only if all were.
        held[i] = bool(d["is_val"][hits].all())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return held, {"source": str(path), "sha256": digest, "n_heldout": int(held.sum()), "n_rows": len(X)}


def run_point(
    params: dict[str, float],
    sources: list[Any],
    lib_Z: np.ndarray,
    lib_y: np.ndarray,
    groups: np.ndarray,
    analyzer: Analyzer,
    seed: int,
    use_dark: bool,
    heldout: np.ndarray | None,
) -> dict[str, Any]:
    model = instrument(params)
    shifts = analyzer.shifts_for(model.reported_calibration_nm(), model.laser_nm, model.pixels)
    offset = None
    if params.get("calibrated"):
        ref = reference_sample("polystyrene")
        ref_counts = np.mean(
            [
                simulate_counts(ref.shift_cm1, ref.intensity, model, np.random.default_rng([seed, 2 * 10**6, k]))
                for k in range(4)
            ],
            axis=0,
        )
        offset = measure_shift_offset(shifts, ref_counts, "polystyrene").offset_cm1
        shifts = shifts - offset
    dark = None
    if use_dark:
        # One dark frame per point, as the daemon takes one per session, but without cosmic
        # rays: a ray in the dark frame becomes a negative spike in *every* spectrum of the
        # point (the despiker only removes positive ones) and would confound the sweep. The
        # `dark_cosmic` factor measures that case on its own, with a new ray per trial.
        clean = replace(model, cosmic_rate=0.0)
        dark = simulate_counts([0.0, 1.0], [0.0, 0.0], clean, np.random.default_rng([seed, 10**6]), dark=True)
        dark = dark.astype(np.float64)
    labels = analyzer.bundle.labels
    n_classes = len(labels)
    n = len(sources)
    correct = {m: np.zeros(n, bool) for m in METHODS}
    correct_ungated = {m: np.zeros(n, bool) for m in METHODS}
    accepted = np.zeros(n, bool)
    unknown = np.zeros(n, bool)
    reasons: Counter[str] = Counter()
    t0 = time.perf_counter()
    for i, s in enumerate(sources):
        rng = np.random.default_rng([seed, i])
        counts = simulate_counts(s.shift_cm1, s.intensity, model, rng)
        dark_i = dark
        if dark is not None and params.get("dark_cosmic"):
            dark_i = dark.copy()
            for _ in range(int(params["dark_cosmic"])):
                pos, width = int(rng.integers(0, model.pixels)), int(rng.integers(1, 3))
                dark_i[pos : pos + width] += rng.uniform(*model.cosmic_counts)
        a = analyzer.analyze_counts(counts, shifts, dark=dark_i)
        truth = int(lib_y[i])
        accepted[i] = a.status == "ok"
        if a.status != "ok":
            reasons[(a.reason or "?").split(":")[0]] += 1
        if a.values is None:  # saturated / invalid: nothing to classify
            continue
        if a.status == "ok":
            cnn = labels.index(a.top[0][0])
            unknown[i] = a.unknown
        else:
            cnn = analyzer.classifier.classify(a.values, k=1).class_index
        correct_ungated["cnn"][i] = cnn == truth
        q = a.values.astype(np.float64)
        q = q - q.mean()
        q /= np.linalg.norm(q) or 1.0
        sim = lib_Z @ q
        variants = {
            "corr_self": sim,
            "corr": np.where(np.arange(len(sim)) == i, -np.inf, sim),
            "corr_spec": np.where(groups == groups[i], -np.inf, sim),
        }
        for m, v in variants.items():
            scores = best_per_class(v[None, :], lib_y, n_classes)[0]
            correct_ungated[m][i] = int(np.argmax(scores)) == truth
    for m in METHODS:
        correct[m] = correct_ungated[m] & accepted
    elapsed = time.perf_counter() - t0

    def summary(mask: np.ndarray) -> dict[str, Any]:
        k = int(mask.sum())
        out: dict[str, Any] = {"n": k, "rejected": float(1 - accepted[mask].mean()) if k else None}
        for m in METHODS:
            c = int(correct[m][mask].sum())
            na = int(accepted[mask].sum())
            out[m] = {
                "acc": c / k if k else None,
                "acc_ci95": wilson(c, k),
                "acc_accepted": c / na if na else None,
                "acc_ungated": float(correct_ungated[m][mask].mean()) if k else None,
            }
        out["cnn"]["unknown"] = float(unknown[mask & accepted].mean()) if (mask & accepted).any() else None
        return out

    result = {
        "params": params,
        "nominal_snr": nominal_snr(params, model.read_noise_e),
        "seconds": elapsed,
        "reasons": dict(reasons),
        "calibration_offset_cm1": offset,
        "all": summary(np.ones(n, bool)),
    }
    if heldout is not None:
        result["heldout"] = summary(heldout)
        result["trained"] = summary(~heldout)
    return result


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def markdown(data: dict[str, Any]) -> str:
    p = data["parameters"]
    lines = [
        "# Robustness: the edge's answer vs correlation search-match on emulated instrument spectra",
        "",
        f"Bundle `{p['bundle']}` ({p['n_classes']} classes, model sha256 {p['bundle_sha256'][:12]}); "
        f"{p['n_sources']} source spectra per point (RRUFF paper selection of the bundle's classes); "
        f"seed {p['seed']}; dark subtraction {'on' if p['dark'] else 'off'}. "
        f"Run {data['run_seconds']:.0f} s on {data['machine']['cpu_model']} ({data['machine']['nproc']} cores), "
        f"{data['machine']['date_utc']}.",
        "",
        "Baseline: " + ", ".join(f"{k}={v}" for k, v in p["baseline"].items()) + ". One factor varied at a time.",
        "",
        "acc = top-1 correct over all trials (gate rejections count as failures); "
        "acc|ok = over accepted trials; rej = rejected by the quality gate (same for both methods). "
        "corr excludes the source spectrum from the library; corr-spec excludes its whole specimen; "
        "corr-self keeps it (self-match upper bound). Percent; [95% Wilson CI] for the CNN.",
        "",
        "The CNN columns are the edge's answer (`Analyzer.analyze_counts`). For a bundle with a reference "
        "library (every bundle since 2026-12-02) that answer is the hybrid, and the bundle's library holds "
        "most source spectra themselves (its training rows): like corr-self, an upper bound for unseen "
        "specimens. bench/shift_heldout.py and bench/raw_spectra.py measure on held-out specimens instead.",
        "",
    ]
    header = [
        "factor",
        "value",
        "SNR*",
        "rej",
        "CNN acc",
        "CNN acc|ok",
        "CNN unk",
        "corr acc",
        "corr acc|ok",
        "corr-spec acc",
        "corr-self acc",
    ]
    has_held = any("heldout" in r for r in data["points"])
    if has_held:
        header += ["CNN acc held-out", "corr acc held-out"]
    rows = []
    for r in data["points"]:
        a = r["all"]
        lo, hi = a["cnn"]["acc_ci95"]
        row = [
            r["factor"],
            r["value"],
            f"{r['nominal_snr']:.0f}",
            fmt_pct(a["rejected"]),
            f"{fmt_pct(a['cnn']['acc'])} [{fmt_pct(lo)}-{fmt_pct(hi)}]",
            fmt_pct(a["cnn"]["acc_accepted"]),
            fmt_pct(a["cnn"]["unknown"]),
            fmt_pct(a["corr"]["acc"]),
            fmt_pct(a["corr"]["acc_accepted"]),
            fmt_pct(a["corr_spec"]["acc"]),
            fmt_pct(a["corr_self"]["acc"]),
        ]
        if has_held:
            h = r.get("heldout", {})
            row += [
                f"{fmt_pct(h.get('cnn', {}).get('acc'))} (n={h.get('n', 0)})",
                fmt_pct(h.get("corr", {}).get("acc")),
            ]
        rows.append(row)
    lines.append(md_table(header, rows, align="ll" + "r" * (len(header) - 2)))
    lines += [
        "",
        "SNR* = nominal shot+read-noise SNR at the strongest band with the fluorescence at its maximum "
        "there (an axis label, not the gate's estimate).",
        "",
        "Rejection reasons per point are in robustness.json (`points[].reasons`).",
    ]
    if data.get("heldout", {}).get("n_heldout"):
        lines.append(
            "Held-out = the trainer's held-out spectra, which the bundle's CNN never saw in training "
            f"({data['heldout']['source']}); the other spectra were training data in clean form."
        )
    else:
        lines.append("Training split unknown: the CNN was trained on (clean versions of) most source spectra.")
    lines += ["", "![robustness](robustness.png)"]
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    factors = list(dict.fromkeys(r["factor"] for r in data["points"]))
    fig, axes = plt.subplots(1, len(factors), figsize=(4.2 * len(factors), 3.8), sharey=True)
    styles = {
        "cnn": ("C0", "-", "o"),
        "corr": ("C1", "-", "s"),
        "corr_spec": ("C2", "--", "^"),
        "corr_self": ("0.6", ":", "x"),
    }
    for ax, f in zip(np.atleast_1d(axes), factors, strict=True):
        pts = [r for r in data["points"] if r["factor"] == f]
        xs = np.arange(len(pts))
        for m in METHODS:
            c, ls, mk = styles[m]
            ax.plot(xs, [100 * r["all"][m]["acc"] for r in pts], color=c, ls=ls, marker=mk, label=METHOD_LABEL[m])
        lo = [100 * r["all"]["cnn"]["acc_ci95"][0] for r in pts]
        hi = [100 * r["all"]["cnn"]["acc_ci95"][1] for r in pts]
        ax.fill_between(xs, lo, hi, color="C0", alpha=0.15, lw=0)
        ax.bar(xs, [100 * r["all"]["rejected"] for r in pts], color="C3", alpha=0.25, width=0.5, label="rejected")
        ax.set_xticks(xs, [str(r["value"]) for r in pts])
        ax.set_xlabel(SWEEPS[f][2] if f in SWEEPS else f)
        ax.set_title(f)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("top-1 accuracy / rejected (%)")
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="lower left")
    p = data["parameters"]
    fig.suptitle(
        f"{p['bundle']}: {p['n_sources']} spectra/point, baseline "
        + ", ".join(f"{k}={v}" for k, v in p["baseline"].items()),
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 15 sources per point")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument(
        "--n-sources", type=int, default=None, help="source spectra per point (default 400; quick 15; 0 = all)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=None, help="bundle directory (default: models/fmcnn-rruff)")
    ap.add_argument("--rruff", type=Path, default=DEFAULT_RRUFF_PATH)
    ap.add_argument(
        "--heldout-npz",
        type=Path,
        default=Path("runs/fmcnn-rruff/data.npz"),
        help="trainer data.npz of the bundle (groups, is_val) to report held-out accuracy",
    )
    ap.add_argument("--no-dark", action="store_true", help="do not subtract a dark frame")
    ap.add_argument("--max-spikes", type=int, default=None, help="override the gate's cosmic-ray pixel limit")
    ap.add_argument("--factors", default=",".join(SWEEPS), help="comma-separated subset of " + ",".join(SWEEPS))
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    machine = machine_info()

    bundle = load_bundle(args.model)
    analyzer = Analyzer(
        bundle, limits=QualityLimits() if args.max_spikes is None else QualityLimits(max_spikes=args.max_spikes)
    )
    sources = load_sources(args.rruff, bundle.labels)
    sources, lib_X, lib_Z, lib_y = build_library(sources, bundle)
    groups = np.array([s.rruff_id for s in sources])
    held_all, held_info = heldout_rows(args.heldout_npz, bundle, sources, lib_X)

    n_all = len(sources)
    n = (15 if args.quick else 400) if args.n_sources is None else (args.n_sources or n_all)
    order = np.random.default_rng(args.seed).permutation(n_all)[: min(n, n_all)]
    order.sort()
    # The library keeps every spectrum; the sources are a subset addressed by library index,
    # so "exclude the source" masks the right row.
    chosen = [sources[i] for i in order]
    heldout = None if held_all is None else held_all[order]
    log(f"{len(chosen)} sources per point; held-out among them: {None if heldout is None else int(heldout.sum())}")

    # run_point indexes the library by source position, so pass library rows in source order.
    perm = np.concatenate([order, np.setdiff1d(np.arange(n_all), order)])
    lib_Z_p, lib_y_p, groups_p = lib_Z[perm], lib_y[perm], groups[perm]

    points = []
    for factor in [f.strip() for f in args.factors.split(",") if f.strip()]:
        field_name, values, _label = SWEEPS[factor]
        for v in values:
            params = dict(BASELINE)
            params[field_name] = v
            if factor == "calibration_corrected":
                params["calibrated"] = 1
            r = run_point(params, chosen, lib_Z_p, lib_y_p, groups_p, analyzer, args.seed, not args.no_dark, heldout)
            r.update(factor=factor, value=v)
            points.append(r)
            a = r["all"]
            log(
                f"{factor}={v}: rej {fmt_pct(a['rejected'])}%  cnn {fmt_pct(a['cnn']['acc'])}%  "
                f"corr {fmt_pct(a['corr']['acc'])}%  corr_spec {fmt_pct(a['corr_spec']['acc'])}%  "
                f"corr_self {fmt_pct(a['corr_self']['acc'])}%  ({r['seconds']:.1f} s)"
            )

    base_model = instrument(BASELINE)
    data: dict[str, Any] = {
        "benchmark": NAME,
        "quick": args.quick,
        "machine": machine,
        "parameters": {
            "bundle": bundle.name,
            "bundle_path": str(bundle.path),
            "bundle_sha256": bundle.sha256,
            "n_classes": len(bundle.labels),
            "rruff": str(args.rruff),
            "selection": "paper (bundle classes)",
            "n_library": n_all,
            "n_sources": len(chosen),
            "source_files": [s.file for s in chosen],
            "seed": args.seed,
            "dark": not args.no_dark,
            "baseline": BASELINE,
            "instrument_model_baseline": asdict(replace(base_model, calibration_nm=())),
            "sweeps": {k: {"field": f, "values": v} for k, (f, v, _) in SWEEPS.items()},
            "quality_limits": asdict(analyzer.limits),
            "unknown_threshold": bundle.unknown_threshold,
        },
        "heldout": held_info,
        "points": points,
    }
    data["run_seconds"] = time.perf_counter() - t_start
    args.out.mkdir(parents=True, exist_ok=True)
    plot(data, args.out / f"{NAME}.png")
    jpath, mpath = write_results(args.out, NAME, data, markdown(data))
    log(f"wrote {jpath}, {mpath}, {args.out / (NAME + '.png')} in {data['run_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
