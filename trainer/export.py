"""Export a trained FMCNN as a self-describing int8 TFLite bundle (docs/bundle.md)."""

from __future__ import annotations

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

from edge.bundle import BUNDLE_FORMAT, REQUIRED_FILES, load_bundle, sha256_file
from edge.classifier import Classifier
from trainer.dataset import Dataset
from trainer.deconv_ref import extract_weights
from trainer.errors import ExportError

PARITY_MIN = 0.99
UNKNOWN_KEEP = 0.95


def representative_rows(ds: Dataset, per_class: int = 2, max_rows: int = 1000, seed: int = 0) -> NDArray[np.float32]:
    """Class-balanced calibration set of real preprocessed spectra for int8 ranges."""
    rng = np.random.default_rng(seed)
    rows: list[int] = []
    for c in np.unique(ds.y):
        idx = np.flatnonzero(ds.y == c)
        rows.extend(rng.choice(idx, size=min(per_class, idx.size), replace=False).tolist())
    rng.shuffle(rows)
    return ds.X[np.array(rows[:max_rows])]


def convert_int8(model: Any, calibration: NDArray[np.float32]) -> bytes:
    import tensorflow as tf

    def gen() -> Iterator[list[NDArray[np.float32]]]:
        for row in calibration:
            yield [row.reshape(1, -1, 1).astype(np.float32)]

    from trainer.fmcnn import fold_batchnorm

    converter = tf.lite.TFLiteConverter.from_keras_model(fold_batchnorm(model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = gen
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return bytes(converter.convert())


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
) -> dict[str, Any]:
    """Write the bundle to `out_dir` (atomically: a temp dir renamed at the end)."""
    out = Path(out_dir)
    labels = train.labels
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out.parent if out.parent.exists() else None))
    try:
        (tmp / "model.tflite").write_bytes(convert_int8(model, representative_rows(train)))
        (tmp / "labels.json").write_text(json.dumps(list(labels), indent=0, ensure_ascii=False) + "\n")
        (tmp / "preprocess.json").write_text(
            json.dumps({"spec": train.spec.to_dict(), "grid_cm1": train.spec.grid_cm1().tolist()}) + "\n"
        )
        extract_weights(model).save(tmp / "deconv.npz")
        # Provisional manifest so the edge loader can run the int8 model for parity.
        manifest: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "name": name,
            "files": {f: sha256_file(tmp / f) for f in REQUIRED_FILES},
            "output": {"n_classes": len(labels)},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        clf = Classifier(load_bundle(tmp))
        Xh = heldout.X
        float_p = (
            np.asarray(model.predict(Xh[..., None], verbose=0, batch_size=256))
            if len(Xh)
            else np.zeros((0, len(labels)))
        )
        int8_p = np.stack([clf.probabilities(x) for x in Xh]) if len(Xh) else np.zeros((0, len(labels)))
        parity = parity_report(float_p, int8_p, heldout.y, labels)
        if heldout.y.size and parity["top1_agreement"] < parity_min:
            raise ExportError(
                f"int8 model agrees with the float model on only {parity['top1_agreement']:.1%} of "
                f"{heldout.y.size} held-out spectra (need {parity_min:.0%}); int8 calibration "
                "collapsed (see tensorflow issue 60903); try a larger representative set"
            )
        # Unknown threshold: the max-probability that keeps UNKNOWN_KEEP of known held-out spectra.
        maxp = int8_p.max(axis=1) if len(Xh) else np.array([0.0])
        threshold = float(np.quantile(maxp, 1 - UNKNOWN_KEEP))
        interp_details = clf._interp.get_input_details()[0], clf._interp.get_output_details()[0]
        manifest.update(
            {
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "input": {
                    "name": "spectrum",
                    "shape": [1, train.spec.grid_n, 1],
                    "dtype": "int8",
                    "scale": float(interp_details[0]["quantization"][0]),
                    "zero_point": int(interp_details[0]["quantization"][1]),
                    "meaning": "preprocessed spectrum (edge.preprocess), quantised: q = round(x / scale) + zero_point",
                },
                "output": {
                    "n_classes": len(labels),
                    "shape": [1, len(labels)],
                    "dtype": "int8",
                    "scale": float(interp_details[1]["quantization"][0]),
                    "zero_point": int(interp_details[1]["quantization"][1]),
                    "meaning": "softmax probabilities, p = (q - zero_point) * scale (1/256 resolution)",
                },
                "unknown": {
                    "method": "max_probability",
                    "threshold": threshold,
                    "keep_fraction": UNKNOWN_KEEP,
                    "calibrated_on": f"{heldout.y.size} held-out known spectra (int8 model)",
                },
                "training": training_info,
                "parity": {k: v for k, v in parity.items() if k != "per_class"},
                "metrics": metrics or {},
                "versions": _versions(),
                "size_bytes": {f: (tmp / f).stat().st_size for f in REQUIRED_FILES},
            }
        )
        (tmp / "parity.json").write_text(json.dumps(parity, indent=1) + "\n")
        if model_card is not None:
            (tmp / "MODEL_CARD.md").write_text(model_card)
        manifest["files"] = {f.name: sha256_file(f) for f in sorted(tmp.iterdir()) if f.name != "manifest.json"}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
        return manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
