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
    logits: NDArray[np.float32] | None = None  # (n_classes,), dequantised int8 logits
    embedding: NDArray[np.float32] | None = None  # (d,), L2-normalised penultimate vector


class Classifier:
    """One interpreter per process (not thread-safe: the daemon calls it from one thread)."""

    def __init__(self, bundle: Bundle, *, runtime: str | None = None, num_threads: int = 1) -> None:
        interp_cls, self.runtime = load_interpreter_class(runtime)
        self.bundle = bundle
        try:
            self._interp = interp_cls(model_path=str(bundle.model_path), num_threads=num_threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise BundleError(f"{bundle.model_path}: the runtime cannot load it ({err})") from err
        inp = self._interp.get_input_details()[0]
        outs = self._interp.get_output_details()
        # Outputs are told apart by width: logits have one per label, the embedding the rest.
        by_width = [o for o in outs if int(o["shape"][-1]) == len(bundle.labels)]
        out = by_width[0] if by_width else outs[0]
        others = [o for o in outs if o["index"] != out["index"]]
        self._emb = others[0] if others else None
        self._in_index, self._out_index = inp["index"], out["index"]
        self._in_dtype, self._out_dtype = inp["dtype"], out["dtype"]
        self._in_q = inp["quantization"]
        self._out_q = out["quantization"]
        # Bundles with a fitted temperature output logits (softmax on the host); older ones
        # output int8 softmax probabilities directly.
        temp = bundle.manifest.get("temperature")
        self.temperature: float | None = float(temp["value"]) if isinstance(temp, dict) else None
        expected = (1, bundle.spec.grid_n, 1)
        if tuple(inp["shape"]) != expected:
            raise BundleError(
                f"{bundle.model_path}: input shape {tuple(inp['shape'])} does not match the "
                f"preprocessing grid {expected}"
            )
        if int(out["shape"][-1]) != len(bundle.labels):
            raise BundleError(f"{bundle.model_path}: {out['shape'][-1]} outputs but {len(bundle.labels)} labels")

    def _run(self, values: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        x = np.asarray(values, dtype=np.float32).reshape(1, -1, 1)
        if x.shape[1] != self.bundle.spec.grid_n:
            raise SpectrumError(f"model input must have {self.bundle.spec.grid_n} points, got {x.shape[1]}")
        if self._in_dtype in (np.int8, np.uint8, np.int16):
            scale, zero = self._in_q
            info = np.iinfo(self._in_dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self._in_dtype)
        self._interp.set_tensor(self._in_index, x)
        self._interp.invoke()
        out = _dequantise(self._interp.get_tensor(self._out_index)[0], self._out_dtype, self._out_q)
        emb = None
        if self._emb is not None:
            emb = _dequantise(
                self._interp.get_tensor(self._emb["index"])[0], self._emb["dtype"], self._emb["quantization"]
            )
            # L2-normalised on the host: only its direction is meant for matching.
            emb = (emb / max(float(np.linalg.norm(emb)), 1e-12)).astype(np.float32)
        return out, emb

    def logits(self, values: NDArray[np.float32]) -> NDArray[np.float32]:
        """Dequantised logits (for old softmax-output bundles: the probabilities themselves)."""
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


def _dequantise(y: NDArray[Any], dtype: Any, quant: tuple[float, int]) -> NDArray[np.float32]:
    if dtype in (np.int8, np.uint8, np.int16):
        scale, zero = quant
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
    return y.astype(np.float32)
