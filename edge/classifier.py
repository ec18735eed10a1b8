"""int8 TFLite classification through LiteRT, never TensorFlow.

Runtimes, in order: `ai_edge_litert` (the successor, pip install ai-edge-litert) then
`tflite_runtime` (pip install tflite-runtime; 2.14 is the last, needs numpy < 2). The
loaded one is reported in `Classifier.runtime` and by `edge check`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.bundle import Bundle
from edge.errors import BundleError, RuntimeNotFoundError, SpectrumError


def load_interpreter_class(prefer: str | None = None) -> tuple[Any, str]:
    """Return (Interpreter class, runtime name). `prefer` forces one ("ai_edge_litert"/"tflite_runtime")."""
    order = ["ai_edge_litert", "tflite_runtime"]
    forced = prefer or os.environ.get("RAMAN_TFLITE_RUNTIME")
    if forced:
        order = [forced]
    errors = []
    for name in order:
        try:
            if name == "ai_edge_litert":
                from ai_edge_litert.interpreter import Interpreter
            elif name == "tflite_runtime":
                from tflite_runtime.interpreter import Interpreter
            else:
                raise ImportError(f"unknown runtime {name!r}")
            return Interpreter, name
        except ImportError as err:
            errors.append(f"{name}: {err}")
    raise RuntimeNotFoundError(
        "no TFLite runtime found (" + "; ".join(errors) + "); install one: "
        "pip install ai-edge-litert (or tflite-runtime on older Pi images)"
    )


def softmax(logits: NDArray[np.floating], temperature: float = 1.0) -> NDArray[np.float64]:
    """Row-wise softmax(logits / temperature) in float64, stable for large logits."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Prediction:
    probabilities: NDArray[np.float32]  # (n_classes,), host softmax(logits / T)
    top: tuple[tuple[str, float], ...]  # best first
    unknown: bool
    class_index: int
    logits: NDArray[np.float32] | None = None  # (n_classes,)
    embedding: NDArray[np.float32] | None = None  # (d,), L2-normalised penultimate vector


@dataclass(frozen=True)
class Head:
    """The logits layer, run on the host in float32: logits = embedding @ w + b.

    Exported bundles keep it out of model.tflite: the int8 body's rounding then reaches the
    decision only through the embedding, and there is no int8/int16 logits tensor whose step
    would tie the top of 1,203 classes (docs/bundle.md, "Logits on the host").
    """

    w: NDArray[np.float32]  # (d, n_classes)
    b: NDArray[np.float32]  # (n_classes,)
    #: The bottleneck layer too, when model.tflite ends at the flattened features (dynamic-range
    #: bundles): embedding = features @ bottleneck_w + bottleneck_b, float32 on the host from
    #: int8 weights with one scale per column. LiteRT's dynamic-range kernel quantises the
    #: 2,720-wide features per tensor on the fly, which flipped 3 of 214 held-out decisions
    #: (parity 0.986); on the host in float the same weights flipped none (1.000).
    bottleneck_w: NDArray[np.float32] | None = None  # (features, d)
    bottleneck_b: NDArray[np.float32] | None = None  # (d,)

    @property
    def input_width(self) -> int:
        """Width of the model output the head reads (features or embedding)."""
        return int(self.bottleneck_w.shape[0] if self.bottleneck_w is not None else self.w.shape[0])


class TFLiteNet:
    """One quantised TFLite model: quantise the input, invoke, dequantise every output.

    The only place that talks to a TFLite interpreter for inference (edge classify, the daemon,
    `trainer export`'s calibration choice and parity all come through here). `model_path` or
    `model_content` (bytes); `n_logits` tells the logits output from the embedding by width.
    """

    def __init__(
        self,
        *,
        model_path: str | os.PathLike[str] | None = None,
        model_content: bytes | None = None,
        n_logits: int,
        head: Head | None = None,
        runtime: str | None = None,
        num_threads: int = 1,
    ) -> None:
        interp_cls, self.runtime = load_interpreter_class(runtime)
        where = str(model_path) if model_path is not None else "model"
        try:
            if model_path is not None:
                self._interp = interp_cls(model_path=str(model_path), num_threads=num_threads)
            else:
                self._interp = interp_cls(model_content=model_content, num_threads=num_threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise BundleError(f"{where}: the runtime cannot load it ({err})") from err
        self.head = head
        inp = self._interp.get_input_details()[0]
        outs = self._interp.get_output_details()
        self.input_shape = tuple(int(v) for v in inp["shape"])
        self._in_index, self._in_dtype, self._in_q = inp["index"], inp["dtype"], inp["quantization"]
        self.input_quantization = {
            "dtype": np.dtype(self._in_dtype).name,
            "scale": float(self._in_q[0]),
            "zero_point": int(self._in_q[1]),
        }
        if head is not None:
            widths = [int(o["shape"][-1]) for o in outs]
            if len(outs) != 1 or widths[0] != head.input_width:
                what = "features" if head.bottleneck_w is not None else "embedding"
                raise BundleError(
                    f"{where}: a bundle with a host head needs one {what} output of width "
                    f"{head.input_width}, the model has outputs of width {widths}"
                )
            self._logits, self._emb = None, outs[0]
        else:
            # Outputs are told apart by width: logits have one per label, the embedding the rest.
            by_width = [o for o in outs if int(o["shape"][-1]) == n_logits]
            if not by_width:
                raise BundleError(f"{where}: {[int(o['shape'][-1]) for o in outs]} outputs but {n_logits} labels")
            self._logits = by_width[0]
            others = [o for o in outs if o["index"] != self._logits["index"]]
            self._emb = others[0] if others else None

    @staticmethod
    def _q(o: dict[str, Any] | None) -> dict[str, Any] | None:
        if o is None:
            return None
        return {
            "width": int(o["shape"][-1]),
            "dtype": np.dtype(o["dtype"]).name,
            "scale": float(o["quantization"][0]),
            "zero_point": int(o["quantization"][1]),
        }

    @property
    def output_quantization(self) -> dict[str, Any]:
        """{"logits": ... or None (host head), "embedding": ... or None}: dtype, scale, zero point
        (an embedding computed on the host from the model's features: float32, width d)."""
        emb = self._q(self._emb)
        if emb is not None and self.head is not None and self.head.bottleneck_w is not None:
            emb = {"width": int(self.head.bottleneck_w.shape[1]), "dtype": "float32", "scale": 0.0, "zero_point": 0}
        return {"logits": self._q(self._logits), "embedding": emb}

    def quantise(self, values: NDArray[np.float32]) -> NDArray[Any]:
        """One model-grid spectrum -> the input tensor (1, n, 1) in the model's input dtype."""
        x = np.asarray(values, dtype=np.float32).reshape(1, -1, 1)
        if x.shape[1] != self.input_shape[1]:
            raise SpectrumError(f"model input must have {self.input_shape[1]} points, got {x.shape[1]}")
        if self._in_dtype in (np.int8, np.uint8, np.int16):
            scale, zero = self._in_q
            info = np.iinfo(self._in_dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self._in_dtype)
        return x

    def invoke(self, x: NDArray[Any]) -> None:
        """Run the interpreter on an input tensor from `quantise` (the interpreter's own time)."""
        self._interp.set_tensor(self._in_index, x)
        self._interp.invoke()

    def run(self, values: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        """(logits, L2-normalised embedding or None) for one model-grid spectrum."""
        self.invoke(self.quantise(values))
        emb = None
        if self._emb is not None:
            emb = _dequantise(
                self._interp.get_tensor(self._emb["index"])[0], self._emb["dtype"], self._emb["quantization"]
            )
        if self.head is not None:
            assert emb is not None
            if self.head.bottleneck_w is not None:
                emb = emb @ self.head.bottleneck_w + self.head.bottleneck_b
            out = (emb @ self.head.w + self.head.b).astype(np.float32)
        else:
            assert self._logits is not None
            out = _dequantise(
                self._interp.get_tensor(self._logits["index"])[0], self._logits["dtype"], self._logits["quantization"]
            )
        if emb is not None:
            # L2-normalised on the host: only its direction is meant for matching.
            emb = (emb / max(float(np.linalg.norm(emb)), 1e-12)).astype(np.float32)
        return out, emb


class Classifier:
    """One interpreter per process (not thread-safe: the daemon calls it from one thread)."""

    def __init__(self, bundle: Bundle, *, runtime: str | None = None, num_threads: int = 1) -> None:
        self.bundle = bundle
        self.net = TFLiteNet(
            model_path=bundle.model_path,
            n_logits=len(bundle.labels),
            head=load_head(bundle),
            runtime=runtime,
            num_threads=num_threads,
        )
        self.runtime = self.net.runtime
        # Bundles with a fitted temperature output logits (softmax on the host); older ones
        # output int8 softmax probabilities directly.
        temp = bundle.manifest.get("temperature")
        self.temperature: float | None = float(temp["value"]) if isinstance(temp, dict) else None
        expected = (1, bundle.spec.grid_n, 1)
        if self.net.input_shape != expected:
            raise BundleError(
                f"{bundle.model_path}: input shape {self.net.input_shape} does not match the "
                f"preprocessing grid {expected}"
            )

    def _run(self, values: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        return self.net.run(values)

    def logits(self, values: NDArray[np.float32]) -> NDArray[np.float32]:
        """Logits (for old softmax-output bundles: the probabilities themselves)."""
        return self._run(values)[0]

    def probabilities(self, values: NDArray[np.float32]) -> NDArray[np.float32]:
        out = self._run(values)[0]
        if self.temperature is None:
            return out
        return softmax(out, self.temperature).astype(np.float32)

    def classify(self, values: NDArray[np.float32], k: int = 3) -> Prediction:
        out, emb = self._run(values)
        logits = out if self.temperature is not None else None
        p = softmax(out, self.temperature).astype(np.float32) if self.temperature is not None else out
        order = np.argsort(-p, kind="stable")[:k]
        # Below the int8 softmax's 1/256 step every class reads 0: listing those would rank
        # hundreds of tied classes alphabetically. The best candidate is always kept.
        order = np.array([i for j, i in enumerate(order) if j == 0 or p[i] > 0], dtype=np.int64)
        top = tuple((self.bundle.labels[i], round(float(p[i]), 4)) for i in order)
        unknown = bool(p[order[0]] < self.bundle.unknown_threshold)
        return Prediction(p, top, unknown, int(order[0]), logits, emb)


def load_head(bundle: Bundle) -> Head | None:
    """The bundle's host-side logits layer (head.npz), or None for bundles whose model.tflite
    outputs logits itself."""
    if "head" not in bundle.manifest:
        return None
    path = bundle.path / "head.npz"
    if "head.npz" not in bundle.manifest.get("files", {}):
        raise BundleError(f"{bundle.path}: manifest names a host head but records no SHA-256 for head.npz")
    bw = bb = None
    try:
        with np.load(path) as z:
            w, b = np.asarray(z["w"], np.float32), np.asarray(z["b"], np.float32)
            if "bottleneck_q" in z.files:
                q = np.asarray(z["bottleneck_q"])
                scale = np.asarray(z["bottleneck_scale"], np.float32)
                bb = np.asarray(z["bottleneck_b"], np.float32)
                if q.dtype != np.int8 or q.ndim != 2 or scale.shape != (q.shape[1],) or bb.shape != (q.shape[1],):
                    raise ValueError(f"bottleneck q {q.dtype} {q.shape}, scale {scale.shape}, b {bb.shape}")
                bw = np.ascontiguousarray(q.astype(np.float32) * scale[None, :])
    except (OSError, ValueError, KeyError) as err:
        raise BundleError(f"{path}: cannot read the logits head ({err})") from err
    n = len(bundle.labels)
    if w.ndim != 2 or w.shape[1] != n or b.shape != (n,):
        raise BundleError(f"{path}: head shapes w {w.shape}, b {b.shape} do not fit {n} labels")
    if bw is not None and bw.shape[1] != w.shape[0]:
        raise BundleError(f"{path}: bottleneck width {bw.shape[1]} does not feed a head of {w.shape[0]} inputs")
    return Head(w=np.ascontiguousarray(w), b=b, bottleneck_w=bw, bottleneck_b=bb)


def quantize_columns(w: NDArray[np.floating]) -> tuple[NDArray[np.int8], NDArray[np.float32]]:
    """Symmetric int8 per output column: w ~ q * scale[None, :]."""
    w = np.asarray(w, np.float32)
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
    q = np.clip(np.round(w / scale[None, :]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def save_head(
    w: NDArray[np.floating],
    b: NDArray[np.floating],
    path: str | os.PathLike[str],
    *,
    bottleneck: tuple[NDArray[np.floating], NDArray[np.floating]] | None = None,
) -> None:
    """Write head.npz (float32: 96 x 1,203 is 0.46 MB; float16 would move near-tie decisions),
    with the bottleneck (int8 per column + float32 bias) when the model ends at the features."""
    arrays = {"w": np.asarray(w, np.float32), "b": np.asarray(b, np.float32)}
    if bottleneck is not None:
        q, scale = quantize_columns(bottleneck[0])
        arrays |= {"bottleneck_q": q, "bottleneck_scale": scale, "bottleneck_b": np.asarray(bottleneck[1], np.float32)}
    np.savez_compressed(path, **arrays)


def _dequantise(y: NDArray[Any], dtype: Any, quant: tuple[float, int]) -> NDArray[np.float32]:
    if dtype in (np.int8, np.uint8, np.int16):
        scale, zero = quant
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
    return y.astype(np.float32)
