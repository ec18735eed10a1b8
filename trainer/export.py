"""Export a trained FMCNN as a self-describing int8 TFLite bundle (docs/bundle.md)."""

from __future__ import annotations

import contextlib
import json
import platform
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.bundle import BUNDLE_FORMAT, REQUIRED_FILES, load_bundle, save_deconv_weights, sha256_file
from edge.classifier import Classifier, Head, TFLiteNet, quantize_columns, save_head, softmax
from trainer.dataset import Dataset
from trainer.deconv_ref import extract_weights
from trainer.errors import ExportError
from trainer.hybrid import fit_noisy_fusion, fused_reliability, write_hybrid
from trainer.temperature import fit_temperature, nll, reliability, reliability_png

PARITY_MIN = 0.99
UNKNOWN_KEEP = 0.95


def representative_rows(ds: Dataset, n_rows: int, seed: int = 0) -> NDArray[np.float32]:
    """Class-balanced calibration set of real preprocessed spectra for int8 ranges.

    Classes are visited in a random order, one spectrum each, cycling until `n_rows`: every
    class appears once before any appears twice.
    """
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(ds.y == c)) for c in rng.permutation(np.unique(ds.y))]
    rows: list[int] = []
    depth = 0
    while len(rows) < n_rows and any(depth < idx.size for idx in by_class):
        rows.extend(int(idx[depth]) for idx in by_class if depth < idx.size)
        depth += 1
    return ds.X[np.array(rows[:n_rows])]


#: Calibration candidates (rows, seed, cross-layer equalisation). More rows are not better here:
#: rare extreme activations widen the ranges of every spectrum, and equalisation helps some
#: models and not others, so the candidate is chosen by agreement on a tuning set. (With int16
#: activations equalisation lowered agreement in bench/results/fmcnn_parity: 0.987 vs 0.993.)
CALIBRATION_CANDIDATES = tuple((rows, 0, eq) for eq in (False, True) for rows in (200, 400, 800))


def _head_of(model: Any, activations: str = "int16") -> Head:
    """The trained logits layer for the host (edge.classifier.Head); for dynamic-range models
    ("float32" activations) the bottleneck too, with the int8 per-column weights the edge reads."""
    w, b = model.get_layer("logits").get_weights()
    head = Head(w=np.asarray(w, np.float32), b=np.asarray(b, np.float32))
    if activations != "float32":
        return head
    bw, bb = model.get_layer("bottleneck").get_weights()
    q, scale = quantize_columns(bw)
    return Head(
        head.w, head.b, bottleneck_w=q.astype(np.float32) * scale[None, :], bottleneck_b=np.asarray(bb, np.float32)
    )


def _tflite_top1(tflite: bytes, X: NDArray[np.float32], head: Head) -> NDArray[np.int64]:
    """Top-1 of a candidate model run exactly as the edge runs it (edge.classifier.TFLiteNet)."""
    net = TFLiteNet(model_content=tflite, n_logits=head.b.size, head=head)
    return np.array([int(np.argmax(net.run(x)[0])) for x in X])


def choose_calibration(
    model: Any,
    train: Dataset,
    seed: int = 0,
    candidates: tuple[tuple[int, int, bool], ...] = CALIBRATION_CANDIDATES,
    activations: str | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Convert with each calibration candidate; keep the one whose int8 model agrees best with
    the float model on a tuning set of *augmented training* spectra.

    The held-out spectra that the parity report (and its 99 % gate) is computed on are never
    used to choose: augmentation (shift jitter, noise, baseline) makes the low-margin cases on
    which int8 rounding flips decisions, from training data alone.
    """
    from trainer.fmcnn import augment

    rng = np.random.default_rng(seed)
    pick = rng.choice(len(train.y), size=min(600, len(train.y)), replace=False)
    tune = augment(train.X[pick], rng)
    ref = np.asarray(model.predict(tune[..., None], verbose=0, batch_size=256)).argmax(1)
    act = activations or ACTIVATIONS
    if act == "float32":
        # Dynamic range: nothing to calibrate (activation ranges are taken per input at run time).
        tflite = convert_int8(model, train.X[:1], activations=act)
        agreement = float((_tflite_top1(tflite, tune, _head_of(model, act)) == ref).mean())
        return tflite, {
            "method": "dynamic range (no representative set)",
            "tuning_agreement": agreement,
            "tuning_set": f"{len(pick)} augmented training spectra",
            "candidates": [],
        }
    best: tuple[float, bytes, dict[str, Any]] | None = None
    tried = []
    for n_rows, cand_seed, eq in candidates:
        tflite = convert_int8(model, representative_rows(train, n_rows, cand_seed), equalize=eq, activations=act)
        agreement = float((_tflite_top1(tflite, tune, _head_of(model)) == ref).mean())
        tried.append({"rows": n_rows, "seed": cand_seed, "equalize": eq, "tuning_agreement": agreement})
        if best is None or agreement > best[0]:
            best = (agreement, tflite, {"rows": n_rows, "seed": cand_seed, "equalize": eq})
    assert best is not None
    info = {
        **best[2],
        "tuning_agreement": best[0],
        "tuning_set": f"{len(pick)} augmented training spectra",
        "candidates": tried,
    }
    return best[1], info


#: Activations of the exported model. "float32" (dynamic range: int8 weights, activations
#: float, quantised per tensor on the fly inside each convolution) with model.tflite ending at
#: the flattened features and the bottleneck run on the host (head.npz, int8 weights per
#: column, float32 arithmetic): the convolutions take ~0.1 ms per spectrum against 4.4 ms for
#: 16x8 (LiteRT has no optimised int16 kernels). With the bottleneck inside model.tflite the
#: on-the-fly quantisation of its 2,720-wide input flipped 3 of 214 held-out decisions
#: (parity 0.986, below the gate); with it on the host, none of 214 for the 2026-12-03 model.
#: "int16" ("16x8", the 2026-12-03 morning bundle: parity 0.991) and "int8" (full integer,
#: 0.971-0.975, bench/results/fmcnn_parity.md) keep the bottleneck inside.
ACTIVATIONS = "float32"


def convert_int8(
    model: Any,
    calibration: NDArray[np.float32],
    *,
    equalize: bool = False,
    activations: str = ACTIVATIONS,
    output_layer: str = "bottleneck",
) -> bytes:
    """The BN-folded model up to `output_layer` ("bottleneck" for bundles; bench/fmcnn_parity
    also cuts at "flatten" and "logits"), weights int8, activations `activations`."""
    import tensorflow as tf

    def gen() -> Iterator[list[NDArray[np.float32]]]:
        for row in calibration:
            yield [row.reshape(1, -1, 1).astype(np.float32)]

    import keras

    from trainer.fmcnn import equalize_channels, fold_batchnorm

    inference = fold_batchnorm(model)
    if equalize:
        inference = equalize_channels(inference, calibration)
    # model.tflite ends at the embedding (the bottleneck vector); the logits layer runs on the
    # host in float32 (head.npz, edge.classifier.Head). Measured with 16x8 on held-out specimens
    # plus shifted and augmented copies: 0.996 vs 0.994 agreement for an earlier variant, equal
    # (1.000 held-out) for the shipped one, and a 160 KB smaller file either way; the rounding
    # left is the convolutions' (bench/results/fmcnn_parity.md).
    if activations == "float32" and output_layer == "bottleneck":
        output_layer = "flatten"  # the bottleneck runs on the host (ACTIVATIONS says why)
    body = keras.Model(inference.input, inference.get_layer(output_layer).output, name="fmcnn_body")
    converter = tf.lite.TFLiteConverter.from_keras_model(body)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = gen
    # Weights int8 either way (file size); activations int16 by default ("16x8"): with 1,203
    # logits an int8 output step is ~0.23 logit and int8 activations flipped 5 % of top-1
    # decisions of the logits model (parity 0.947); int16 activations keep the same file size.
    if activations == "float32":
        # Dynamic-range quantisation: int8 weights (the file size), float32 activations, so
        # no activation rounding at all; LiteRT quantises each layer's input on the fly.
        converter.representative_dataset = None
        return bytes(converter.convert())
    if activations == "int16":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        converter.inference_input_type = tf.int16
        converter.inference_output_type = tf.int16
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return bytes(converter.convert())


def _write_provisional_manifest(tmp: Path, manifest: dict[str, Any]) -> None:
    """The manifest so far, with the hashes of the files so far: the edge can load the bundle."""
    (tmp / "manifest.json").write_text(
        json.dumps(manifest | {"files": {f.name: sha256_file(f) for f in tmp.iterdir() if f.name != "manifest.json"}})
    )


def _fused_reliability(tmp: Path, manifest: dict[str, Any], heldout: Dataset) -> dict[str, Any]:
    """Accuracy and ECE of the fused top-1 (what a result reports) on the held-out spectra,
    through the edge's own identification path on the bundle as written so far."""
    from edge.pipeline import Analyzer

    _write_provisional_manifest(tmp, manifest)
    return fused_reliability(Analyzer(load_bundle(tmp)), heldout)


def _versions() -> dict[str, str]:
    import keras
    import sklearn
    import tensorflow as tf

    import edge

    return {
        "raman_edge": edge.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def parity_report(
    float_probs: NDArray[Any], int8_probs: NDArray[Any], y: NDArray[np.int64], labels: tuple[str, ...]
) -> dict[str, Any]:
    pf, pq = float_probs.argmax(1), int8_probs.argmax(1)
    per_class = {}
    for c in np.unique(y):
        m = y == c
        per_class[labels[c]] = {
            "n": int(m.sum()),
            "agreement": float((pf[m] == pq[m]).mean()),
            "float_accuracy": float((pf[m] == c).mean()),
            "int8_accuracy": float((pq[m] == c).mean()),
        }
    return {
        "n": int(y.size),
        "top1_agreement": float((pf == pq).mean()) if y.size else float("nan"),
        "float_accuracy": float((pf == y).mean()) if y.size else float("nan"),
        "int8_accuracy": float((pq == y).mean()) if y.size else float("nan"),
        "per_class": per_class,
    }


def export_bundle(
    model: Any,
    train: Dataset,
    heldout: Dataset,
    out_dir: str | Path,
    *,
    name: str,
    training_info: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    parity_min: float = PARITY_MIN,
    model_card: str | None = None,
    calibration_candidates: tuple[tuple[int, int, bool], ...] = CALIBRATION_CANDIDATES,
    activations: str = ACTIVATIONS,
    calibration_set: Dataset | None = None,
) -> dict[str, Any]:
    """Write the bundle to `out_dir` (atomically: a temp dir renamed at the end).

    `train` must not contain the `heldout` rows: it supplies the int8 calibration candidates
    and their tuning set; `heldout` gives the parity report. `calibration_set` (specimens in
    neither `train` nor `heldout`, so not seen by early stopping either) fits the temperature,
    the fusion and the unknown thresholds, and `heldout` then measures their calibration out of
    sample; without it `heldout` does both (older bundles).
    """
    cal = calibration_set if calibration_set is not None and calibration_set.y.size else heldout
    out = Path(out_dir)
    labels = train.labels
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out.parent if out.parent.exists() else None))
    try:
        if activations not in ("float32", "int16", "int8"):
            raise ExportError(f"activations must be float32, int16 or int8, got {activations!r}")
        tflite, calibration = choose_calibration(
            model, train, candidates=calibration_candidates, activations=activations
        )
        (tmp / "model.tflite").write_bytes(tflite)
        (tmp / "labels.json").write_text(json.dumps(list(labels), indent=0, ensure_ascii=False) + "\n")
        (tmp / "preprocess.json").write_text(
            json.dumps({"spec": train.spec.to_dict(), "grid_cm1": train.spec.grid_cm1().tolist()}) + "\n"
        )
        save_deconv_weights(extract_weights(model), tmp / "deconv.npz")
        head = _head_of(model)
        bottleneck = tuple(model.get_layer("bottleneck").get_weights()) if activations == "float32" else None
        save_head(head.w, head.b, tmp / "head.npz", bottleneck=bottleneck)  # type: ignore[arg-type]
        # Provisional manifest so the edge loader can run the int8 model for parity.
        manifest: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "name": name,
            "files": {f: sha256_file(tmp / f) for f in (*REQUIRED_FILES, "head.npz")},
            "output": {"n_classes": len(labels)},
            "temperature": {"value": 1.0},
            "head": {"file": "head.npz"},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        clf = Classifier(load_bundle(tmp))
        Xh = heldout.X
        float_p = (
            np.asarray(model.predict(Xh[..., None], verbose=0, batch_size=256))
            if len(Xh)
            else np.zeros((0, len(labels)))
        )
        int8_logits = np.stack([clf.logits(x) for x in Xh]) if len(Xh) else np.zeros((0, len(labels)))
        parity = parity_report(float_p, int8_logits, heldout.y, labels)
        if heldout.y.size and parity["top1_agreement"] < parity_min:
            raise ExportError(
                f"int8 model agrees with the float model on only {parity['top1_agreement']:.1%} of "
                f"{heldout.y.size} held-out spectra (need {parity_min:.0%}); int8 calibration "
                "collapsed (see tensorflow issue 60903) or the float model has many near-ties at the top "
                "(parity.json per class); try a larger representative set"
            )
        # Temperature: fitted through the int8 model, as the edge runs it, on the calibration
        # specimens (top-label Brier: trainer.temperature says why not NLL).
        cal_logits = np.stack([clf.logits(x) for x in cal.X]) if cal.y.size else np.zeros((0, len(labels)))
        temperature = fit_temperature(cal_logits, cal.y, criterion="top_label_brier") if cal.y.size else 1.0
        t_nll = fit_temperature(cal_logits, cal.y, criterion="nll") if cal.y.size else 1.0
        int8_p = softmax(int8_logits, temperature) if len(Xh) else np.zeros((0, len(labels)))
        before = reliability(softmax(int8_logits, 1.0), heldout.y) if len(Xh) else {"ece": float("nan"), "bins": []}
        after = reliability(int8_p, heldout.y) if len(Xh) else {"ece": float("nan"), "bins": []}
        separate = cal is not heldout
        temperature_info = {
            "value": temperature,
            "criterion": "top_label_brier",
            "fitted_on": f"{cal.y.size} {'calibration' if separate else 'held-out'} spectra (int8 logits)",
            "measured_on": f"{heldout.y.size} held-out spectra"
            + (" (specimens disjoint from the calibration set)" if separate else " (the same spectra)"),
            "nll_t1": nll(int8_logits, heldout.y, 1.0) if len(Xh) else float("nan"),
            "nll": nll(int8_logits, heldout.y, temperature) if len(Xh) else float("nan"),
            "ece_t1": before["ece"],
            "ece": after["ece"],
            "min_nll_temperature": t_nll,
            "ece_at_min_nll_temperature": reliability(softmax(int8_logits, t_nll), heldout.y)["ece"]
            if len(Xh)
            else float("nan"),
            "mean_top1_probability": after.get("mean_confidence"),
            "accuracy": after.get("accuracy"),
        }
        # matplotlib is optional; the numbers are in the manifest either way.
        if len(Xh):
            with contextlib.suppress(ImportError):
                reliability_png(
                    before, after, tmp / "reliability.png", f"{name}: {heldout.y.size} held-out, T={temperature:.2f}"
                )
        # Unknown threshold: the max-probability that keeps UNKNOWN_KEEP of known calibration spectra.
        cal_p = softmax(cal_logits, temperature) if cal.y.size else np.zeros((0, len(labels)))
        maxp = cal_p.max(axis=1) if cal.y.size else np.array([0.0])
        threshold = float(np.quantile(maxp, 1 - UNKNOWN_KEEP))
        q_in = clf.net.input_quantization
        q_emb = clf.net.output_quantization["embedding"]
        manifest.update(
            {
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "input": {
                    "name": "spectrum",
                    "shape": [1, train.spec.grid_n, 1],
                    "dtype": q_in["dtype"],
                    "scale": q_in["scale"],
                    "zero_point": q_in["zero_point"],
                    "meaning": "preprocessed spectrum (edge.preprocess), as float32"
                    if q_in["dtype"] == "float32"
                    else "preprocessed spectrum (edge.preprocess), quantised: q = round(x / scale) + zero_point",
                },
                "output": {
                    "n_classes": len(labels),
                    "shape": [1, len(labels)],
                    "dtype": "float32",
                    "meaning": "logits = embedding @ head.w + head.b on the host; p = softmax(l / temperature)",
                },
                "head": {
                    "file": "head.npz",
                    "shape": list(head.w.shape),
                    "dtype": "float32",
                    "meaning": "the logits layer, run on the host: logits = e @ w + b (e: the raw embedding)",
                }
                | (
                    {
                        "bottleneck": {
                            "shape": list(model.get_layer("bottleneck").get_weights()[0].shape),
                            "dtype": "int8 per column (bottleneck_q * bottleneck_scale) + float32 bottleneck_b",
                            "meaning": "model.tflite ends at the flattened features f; e = f @ W + b on the host",
                        }
                    }
                    if activations == "float32"
                    else {}
                ),
                "outputs": {
                    "logits": {"width": len(labels), "on": "host"},
                    "embedding": {
                        "width": q_emb["width"],
                        "dtype": q_emb["dtype"],
                        "scale": q_emb["scale"],
                        "zero_point": q_emb["zero_point"],
                        "meaning": "penultimate (bottleneck) vector, computed on the host from the features "
                        "(head.bottleneck); the edge L2-normalises it"
                        if activations == "float32"
                        else "penultimate (bottleneck) vector, the only output; the edge L2-normalises it",
                    },
                },
                "temperature": temperature_info,
                "calibration": calibration,
                "quantization": {"weights": "int8", "activations": activations},
                "unknown": {
                    "method": "max_probability",
                    "threshold": threshold,
                    "keep_fraction": UNKNOWN_KEEP,
                    "calibrated_on": f"{cal.y.size} {'calibration' if separate else 'held-out'} known spectra",
                },
                "training": training_info,
                "parity": {k: v for k, v in parity.items() if k != "per_class"} | {"gate": parity_min},
                "metrics": metrics or {},
                "versions": _versions(),
                "size_bytes": {f: (tmp / f).stat().st_size for f in (*REQUIRED_FILES, "head.npz")},
            }
        )
        (tmp / "parity.json").write_text(json.dumps(parity, indent=1) + "\n")
        if model_card is not None:
            (tmp / "MODEL_CARD.md").write_text(model_card)
        manifest.update(write_hybrid(tmp, model, train, cal, temperature))  # issue 12: library + fusion
        if "fusion" in manifest and cal.y.size:
            # Parameters for noisy spectra, fitted on emulated readouts of the same calibration
            # specimens through the bundle as written so far (trainer.noisy_fusion).
            _write_provisional_manifest(tmp, manifest)
            seed = int((training_info.get("config") or {}).get("seed", 0))
            with_noisy, noisy_info = fit_noisy_fusion(tmp, cal, seed=seed)
            manifest["fusion"] = with_noisy.to_dict() | {"fitted_on": manifest["fusion"].get("fitted_on")}
            manifest["library"]["fit"]["noisy"] = noisy_info
        if len(Xh) and "fusion" in manifest:
            manifest["fusion"]["heldout"] = _fused_reliability(tmp, manifest, heldout)
        manifest["files"] = {f.name: sha256_file(f) for f in sorted(tmp.iterdir()) if f.name != "manifest.json"}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
        # mkdtemp made it 0700; a bundle is read by the daemon's own (systemd) user.
        out.chmod(0o755)
        return manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
