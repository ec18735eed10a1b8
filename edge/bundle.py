"""The model bundle: a directory the edge can trust or refuse, with a precise reason.

Layout (docs/bundle.md):

    manifest.json    format, name, SHA-256 of every other file, tensor dtypes and
                     quantisation, unknown threshold, training counts, metrics, versions
    model.tflite     full-integer int8 FMCNN
    labels.json      class names, index = model output index
    preprocess.json  edge.preprocess.PreprocessSpec + the grid itself (cm-1)
    deconv.npz       float weights for edge.deconv
    MODEL_CARD.md    for people (hashed only if given to `trainer export --model-card`)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.deconv import WEIGHT_KEYS, DeconvWeights
from edge.errors import BundleError
from edge.preprocess import PreprocessSpec
from models import default_bundle_path

BUNDLE_FORMAT = "raman-edge-bundle/1"
REQUIRED_FILES = ("model.tflite", "labels.json", "preprocess.json", "deconv.npz")

#: The shipped default bundle: package data of `models`, found wherever it is installed.
DEFAULT_BUNDLE = default_bundle_path()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Bundle:
    path: Path
    name: str
    sha256: str  # of model.tflite: identifies the model in every result
    labels: tuple[str, ...]
    spec: PreprocessSpec
    grid_cm1: NDArray[np.float64]
    unknown_threshold: float  # max-probability below this => unknown
    manifest: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.path / "model.tflite"

    @property
    def deconv_path(self) -> Path:
        return self.path / "deconv.npz"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: cannot read ({err})") from err
    except json.JSONDecodeError as err:
        raise BundleError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err


def load_bundle(path: str | Path | None = None, *, verify: bool = True) -> Bundle:
    """Open and check a bundle; `verify` checks SHA-256 of every file listed."""
    root = Path(path) if path is not None else DEFAULT_BUNDLE
    if not root.is_dir():
        hint = (
            " (the default ships with the package as models/fmcnn-rruff; reinstall raman-edge or pass --model DIR)"
            if path is None
            else ""
        )
        raise BundleError(f"model bundle {root} not found{hint}")
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise BundleError(f"{root}: no manifest.json; not a Raman Edge bundle")
    manifest = _read_json(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{manifest_path}: format {manifest.get('format') if isinstance(manifest, dict) else None!r}"
            f" is not {BUNDLE_FORMAT!r}; re-export the bundle with this version of trainer"
        )
    for name in REQUIRED_FILES:
        if not (root / name).is_file():
            raise BundleError(f"{root}: missing {name}")
    files = manifest.get("files", {})
    for name in REQUIRED_FILES:
        if name not in files:
            raise BundleError(f"{manifest_path}: no SHA-256 recorded for {name}")
    if verify:
        for name, expected in files.items():
            p = root / name
            if not p.is_file():
                raise BundleError(f"{root}: manifest lists {name} but the file is missing")
            actual = sha256_file(p)
            if actual != expected:
                raise BundleError(
                    f"{p}: SHA-256 mismatch (manifest {expected[:12]}..., file {actual[:12]}...); "
                    "the bundle was modified or damaged"
                )
    labels = _read_json(root / "labels.json")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels) or not labels:
        raise BundleError(f"{root / 'labels.json'}: expected a non-empty list of names")
    pre = _read_json(root / "preprocess.json")
    try:
        spec = PreprocessSpec.from_dict(pre["spec"])
        grid = np.asarray(pre["grid_cm1"], dtype=np.float64)
    except (KeyError, TypeError) as err:
        raise BundleError(f"{root / 'preprocess.json'}: malformed ({err})") from err
    except Exception as err:  # SpectrumError from an unknown spec version
        raise BundleError(f"{root / 'preprocess.json'}: {err}") from err
    if grid.shape != (spec.grid_n,) or not np.allclose(grid, spec.grid_cm1()):
        raise BundleError(f"{root / 'preprocess.json'}: stored grid does not match the spec")
    n_out = manifest.get("output", {}).get("n_classes")
    if n_out is not None and n_out != len(labels):
        raise BundleError(f"{root}: model has {n_out} outputs but labels.json has {len(labels)}")
    return Bundle(
        path=root,
        name=str(manifest.get("name", root.name)),
        sha256=files["model.tflite"],
        labels=tuple(labels),
        spec=spec,
        grid_cm1=grid,
        unknown_threshold=float(manifest.get("unknown", {}).get("threshold", 0.0)),
        manifest=manifest,
    )


def load_deconv_weights(path: str | Path) -> DeconvWeights:
    """Read a bundle's deconv.npz (edge.deconv stays pure: the file lives with the bundle)."""
    try:
        with np.load(path) as z:
            missing = [k for k in WEIGHT_KEYS if k not in z.files]
            if missing:
                raise BundleError(f"{path}: deconv weights lack {missing}")
            d = {k: z[k] for k in WEIGHT_KEYS}
    except (OSError, ValueError) as err:
        raise BundleError(f"{path}: cannot read deconv weights ({err})") from err
    scalars = {"bn_eps": float(d["bn_eps"]), "pool": int(d["pool"]), "alpha": float(d["alpha"])}
    arrays = {k: np.asarray(v, np.float32) for k, v in d.items() if k not in scalars}
    return DeconvWeights(**arrays, **scalars)  # type: ignore[arg-type]


def save_deconv_weights(weights: DeconvWeights, path: str | Path) -> None:
    arrays = {k: getattr(weights, k) for k in WEIGHT_KEYS}
    # The two dense matrices dominate the size; float16 keeps attribution intact.
    arrays["w_bottleneck"] = weights.w_bottleneck.astype(np.float16)
    arrays["w_logits"] = weights.w_logits.astype(np.float16)
    np.savez_compressed(path, **arrays)
