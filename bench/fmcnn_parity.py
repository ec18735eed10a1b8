"""Where int rounding flips FMCNN decisions: top-1 agreement with the float model by where
the integer model ends and by activation width.

    .venv/bin/python bench/fmcnn_parity.py --model DIR/model.keras --data DIR/data.npz

DIR is a `trainer train` output (data.npz: X, y, is_val). For each cut point the BN-folded
inference twin is truncated there and converted (weights int8 per channel, activations int16
"16x8" or int8), and the layers after the cut run on the host in float32:

- `flatten`: only the convolutions are integer (pool output to the host);
- `bottleneck`: the shipped design, the embedding is the model's output, logits on the host;
- `logits`: everything integer, as bundles before this change.

Rows compared with the float Keras model: the held-out spectra, the same shifted by +/-10 cm-1
(what an uncalibrated instrument gives), and 1,000 augmented training spectra. Each run goes
through edge.classifier.TFLiteNet (the edge's own path). The per-layer part (the TFLite
quantization debugger's per-tensor RMSE / scale, int8 activations) says which layer's
rounding is largest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.classifier import Head, TFLiteNet  # noqa: E402
from trainer.augment import augment, shift_stretch  # noqa: E402
from trainer.export import convert_int8, representative_rows  # noqa: E402
from trainer.fmcnn import fold_batchnorm  # noqa: E402

OUT = Path("bench/results/fmcnn_parity")


class _Rows:
    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X, self.y = X, y


def _debugger(inf: object, cal: np.ndarray) -> list[dict[str, object]]:
    """Per-layer error of full-int8 quantisation (tf.lite.experimental.QuantizationDebugger)."""
    import tensorflow as tf

    def gen():  # type: ignore[no-untyped-def]
        for r in cal:
            yield [r.reshape(1, -1, 1).astype(np.float32)]

    c = tf.lite.TFLiteConverter.from_keras_model(inf)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = gen
    dbg = tf.lite.experimental.QuantizationDebugger(converter=c, debug_dataset=gen)
    dbg.run()
    path = Path("/tmp/raman_quant_debug.csv")
    with path.open("w") as fh:
        dbg.layer_statistics_dump(fh)
    import csv

    rows = list(csv.DictReader(path.open()))
    out = []
    for r in rows:
        scale = float(r.get("scale") or 0) or float("nan")
        rmse = float(r.get("mean_squared_error") or 0) ** 0.5
        out.append({"tensor": r["tensor_name"], "op": r["op_name"], "rmse_over_scale": rmse / scale})
    return out


def main(argv: list[str] | None = None) -> int:
    import keras

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    z = np.load(a.data)
    X, y, is_val = z["X"], z["y"], z["is_val"]
    Xh = X[is_val]
    sign = np.where(np.arange(len(Xh)) % 2 == 0, 1.0, -1.0)
    Xs = shift_stretch(Xh, sign * 10, np.zeros(len(Xh)))
    Xs /= np.maximum(Xs.max(axis=1, keepdims=True), 1e-6)
    Xa = augment(X[~is_val][:1000], np.random.default_rng(5))
    sets = {"heldout": Xh, "heldout_shift10": Xs, "augmented_train": Xa}
    model = keras.models.load_model(a.model)
    inf = fold_batchnorm(model)
    cal = representative_rows(_Rows(X[~is_val], y[~is_val]), 400, 0)  # type: ignore[arg-type]
    wb, bb = inf.get_layer("bottleneck").get_weights()
    wl, bl = inf.get_layer("logits").get_weights()
    rows = []
    for act in ("int16", "int8"):
        for cut in ("flatten", "bottleneck", "logits"):
            tfl = convert_int8(model, cal, activations=act, output_layer=cut)
            width = int(inf.get_layer(cut).output.shape[-1])
            n = wl.shape[1]
            # TFLiteNet with a host head expects the head's input width; for the flatten cut the
            # host runs bottleneck then logits, folded into one float32 head.
            if cut == "flatten":
                head = Head(w=(wb @ wl).astype(np.float32), b=(bb @ wl + bl).astype(np.float32))
            elif cut == "bottleneck":
                head = Head(w=wl.astype(np.float32), b=bl.astype(np.float32))
            else:
                head = None
            net = TFLiteNet(model_content=tfl, n_logits=n, head=head)
            assert head is None or head.w.shape[0] == width
            row: dict[str, object] = {"activations": act, "cut": cut, "tflite_bytes": len(tfl)}
            for name, Xset in sets.items():
                ref = np.asarray(model.predict(Xset[..., None], verbose=0, batch_size=256)).argmax(1)
                got = np.array([int(np.argmax(net.run(x)[0])) for x in Xset])
                row[name] = float((got == ref).mean())
                row[f"n_{name}"] = int(len(Xset))
            print(json.dumps(row), flush=True)
            rows.append(row)
    per_layer = _debugger(inf, cal[:100])
    result = {
        "model": str(a.model),
        "rows": rows,
        "per_layer_int8": per_layer,
        "loadavg_1m": os.getloadavg()[0],
        "note": __doc__,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"Top-1 agreement int vs float by cut point (bench/fmcnn_parity.py, {a.model})",
        "",
        "| activations | integer up to | tflite KB | held-out | held-out ±10 cm-1 | augmented train |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['activations']} | {r['cut']} | {int(r['tflite_bytes']) / 1024:.0f} | {r['heldout']:.4f} "
            f"(n={r['n_heldout']}) | {r['heldout_shift10']:.4f} | {r['augmented_train']:.4f} |"
        )
    lines += ["", "Per-layer RMSE / scale of full-int8 quantisation (QuantizationDebugger, 100 rows):", ""]
    lines += ["| tensor | op | RMSE/scale |", "|---|---|---|"]
    for p in per_layer:
        lines.append(f"| {p['tensor']} | {p['op']} | {float(p['rmse_over_scale']):.3f} |")
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
