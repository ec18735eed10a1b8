"""Does a "the axis looks calibrated" gate win back the hybrid's clean accuracy? (diagnostic)

    .venv/bin/python bench/calibrated_gate.py [--bundle models/fmcnn-rruff]

The hybrid trails plain zero-lag correlation where a sibling or close relative of the query is
in the library: its correlation term is the best over +-20 cm-1 of lags, which also lets wrong
references align, and its CNN sees the spectrum moved onto its best match (bench/results/
corr_lag_gate.md, edge/alignment.py). A gate keeps both: when the best zero-lag similarity is
within `delta` of the best free-lag one, the axis is taken as calibrated and the spectrum is
scored as-is (zero-lag correlation, unmoved CNN and embedding); otherwise as today (free-lag
correlation, CNN on the moved and unmoved spectrum).

On the bundle's own split (trainer.refit.bundle_split): the fusion of every variant is fitted
on the calibration specimens (unshifted, as `trainer export`), delta is reported on a grid,
and every variant is scored on the held-out specimens moved by 0-20 cm-1 (as
bench/shift_heldout.py). Everything runs through the edge's own library, classifier and fusion.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.alignment import aligned, better_view  # noqa: E402
from edge.bundle import load_bundle  # noqa: E402
from edge.fusion import fused_logits  # noqa: E402
from edge.pipeline import Analyzer  # noqa: E402
from trainer.augment import shift_stretch  # noqa: E402
from trainer.hybrid import fit_fusion  # noqa: E402
from trainer.refit import bundle_split  # noqa: E402
from trainer.rruff import DEFAULT_RRUFF_PATH  # noqa: E402

SHIFTS_CM1 = (0, 5, 10, 20)
DELTAS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 1.0)


def components(an: Analyzer, X: np.ndarray, align_pts: int) -> dict[str, np.ndarray]:
    lib = an.library
    assert lib is not None
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("gap", "corr", "corr0", "lp_both", "emb_both", "lp0", "emb0")}
    for x in X:
        sim, lag, sim0 = lib.search(x)
        xm, moved = aligned(x, sim, lag, align_pts)
        lp0, emb0 = an._cnn_scores(an.classifier.classify(x, k=1), lib)
        lp, emb = (lp0, emb0)
        if moved:
            lpm, embm = an._cnn_scores(an.classifier.classify(xm, k=1), lib)
            lp, emb = better_view(lpm, lp0), better_view(embm, emb0)
        out["gap"].append(np.float64(sim.max() - sim0.max()))
        out["corr"].append(lib.per_class(sim))
        out["corr0"].append(lib.per_class(sim0))
        out["lp_both"].append(lp)
        out["emb_both"].append(emb)
        out["lp0"].append(lp0)
        out["emb0"].append(emb0)
    return {k: np.stack(v).astype(np.float64) for k, v in out.items()}


def gated(c: dict[str, np.ndarray], delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    g = (c["gap"] <= delta)[:, None]
    return (
        np.where(g, c["lp0"], c["lp_both"]),
        np.where(g, c["corr0"], c["corr"]),
        np.where(g, c["emb0"], c["emb_both"]),
        g[:, 0],
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, default=Path("models/fmcnn-rruff"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/calibrated_gate"))
    a = ap.parse_args(argv)
    b = load_bundle(a.bundle)
    an = Analyzer(b)
    ds, is_val, is_cal = bundle_split(b.manifest, DEFAULT_RRUFF_PATH, spec=b.spec)
    align = max(an.fusion.align_min_lag_pts, 3)
    n = len(an.library.minerals)  # type: ignore[union-attr]
    cal = components(an, ds.X[is_cal], align)
    Xh, yh = ds.X[is_val], ds.y[is_val]
    sign = np.where(np.arange(yh.size) % 2 == 0, 1.0, -1.0)
    held = {}
    for s in SHIFTS_CM1:
        Xs = shift_stretch(Xh, sign * s, np.zeros(yh.size))
        Xs = Xs / np.maximum(Xs.max(axis=1, keepdims=True), 1e-6)
        held[s] = components(an, Xs, align)
    rows = []
    for delta in (None, *DELTAS):
        name = "no gate (both views, free lag)" if delta is None else f"gate delta {delta:g}"
        d = -1.0 if delta is None else delta
        lp, corr, emb, g = gated(cal, d)
        params, info = fit_fusion(lp, corr, ds.y[is_cal], emb, align_min_lag_pts=align, cnn_views="both")
        row = {
            "variant": name,
            "w_corr": params.w_corr,
            "w_emb": params.w_emb,
            "T": params.temperature,
            "cal_acc": info["heldout_accuracy"],
            "cal_gated": float(g.mean()),
        }
        for s in SHIFTS_CM1:
            lp, corr, emb, g = gated(held[s], d)
            f = fused_logits(params, n, lp, corr, emb)
            row[f"acc_{s}"] = float((f.argmax(1) == yh).mean())
            row[f"gated_{s}"] = float(g.mean())
        rows.append(row)
        print(json.dumps(row), flush=True)
    corr0 = {s: float((held[s]["corr0"].argmax(1) == yh).mean()) for s in SHIFTS_CM1}
    out = {
        "bundle": str(a.bundle),
        "n_cal": int(is_cal.sum()),
        "n_heldout": int(yh.size),
        "rows": rows,
        "zero_lag_corr": corr0,
        "note": __doc__,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    md = [
        f"Calibrated-axis gate (bench/calibrated_gate.py), bundle {a.bundle}: fusion fitted on {out['n_cal']} "
        f"calibration spectra, top-1 on {yh.size} held-out spectra moved by s cm-1",
        "",
        "| variant | w_corr | w_emb | cal acc | " + " | ".join(f"{s} cm-1 (gated)" for s in SHIFTS_CM1) + " |",
        "|---" * (4 + len(SHIFTS_CM1)) + "|",
    ]
    for r in rows:
        md.append(
            f"| {r['variant']} | {r['w_corr']:g} | {r['w_emb']:g} | {r['cal_acc']:.3f} | "
            + " | ".join(f"{r[f'acc_{s}']:.3f} ({r[f'gated_{s}']:.2f})" for s in SHIFTS_CM1)
            + " |"
        )
    md += ["", "Zero-lag correlation alone (same library): " + ", ".join(f"{s}: {v:.3f}" for s, v in corr0.items())]
    a.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
