"""NumPy deconvnet for FMCNN: which Raman bands drove the decision (no TensorFlow).

Follows Zeiler & Fergus (2014) as used by the FMCNN paper, from the pooling layer before
Flatten back to the Raman-shift axis. Exactly what is projected:

1. Forward pass in float32 from the bundle's `deconv.npz` weights, recording the max-pool
   switches (argmax position inside each non-overlapping window).
2. Class evidence at the pooled layer: R = max(p * v_c, 0), where p is the pooled feature
   map (85 x 32) and v_c the predicted class's column of the effective dense matrix
   W_bottleneck @ W_logits, reshaped like p. Only features that vote *for* the class.
3. Unpool: R goes back to each window's recorded max position, zeros elsewhere.
4. Fire module, backwards: LeakyReLU, then transposed 1x1 and 3x1 expand convolutions
   (summed, as the two branches read the same squeeze output), LeakyReLU, transposed 1x1
   squeeze convolution.
5. BatchNorm, backwards: its linear part transposed (per-channel gamma / sqrt(var + eps)).
6. LeakyReLU, transposed first convolution -> one value per grid point: the attribution.

Biases are not used on the way back (a deconvnet projects with transposed weights only).
The trainer's reference (`trainer.deconv_ref`) computes steps 3-6 with TensorFlow autodiff
instead; the two must agree (tests: correlation >= 0.999).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]

WEIGHT_KEYS = (
    "conv0_kernel",
    "conv0_bias",
    "bn_gamma",
    "bn_beta",
    "bn_mean",
    "bn_var",
    "bn_eps",
    "squeeze_kernel",
    "squeeze_bias",
    "e1_kernel",
    "e1_bias",
    "e3_kernel",
    "e3_bias",
    "pool",
    "alpha",
    "w_bottleneck",
    "w_logits",
)


@dataclass(frozen=True)
class DeconvWeights:
    conv0_kernel: F32  # (k, 1, C0)
    conv0_bias: F32
    bn_gamma: F32
    bn_beta: F32
    bn_mean: F32
    bn_var: F32
    bn_eps: float
    squeeze_kernel: F32  # (1, C0, S)
    squeeze_bias: F32
    e1_kernel: F32  # (1, S, E)
    e1_bias: F32
    e3_kernel: F32  # (3, S, E)
    e3_bias: F32
    pool: int
    alpha: float
    w_bottleneck: F32  # (L/pool * 2E, B)
    w_logits: F32  # (B, n_classes)


def lrelu(x: F32, alpha: float) -> F32:
    return np.where(x >= 0, x, alpha * x).astype(np.float32)


def _same_pads(k: int) -> tuple[int, int]:
    left = (k - 1) // 2  # TensorFlow's SAME puts the extra pad on the right
    return left, k - 1 - left


def conv1d_same(x: F32, kernel: F32, bias: F32 | None = None) -> F32:
    """Keras Conv1D(padding="same", stride 1): x (L, Cin), kernel (k, Cin, Cout)."""
    k = kernel.shape[0]
    left, right = _same_pads(k)
    xp = np.pad(x, ((left, right), (0, 0)))
    n = x.shape[0]
    out = sum(xp[i : i + n] @ kernel[i] for i in range(k))
    out = np.asarray(out, np.float32)
    return out + bias if bias is not None else out


def conv1d_same_transpose(y: F32, kernel: F32) -> F32:
    """Adjoint of `conv1d_same` (no bias): y (L, Cout) -> (L, Cin)."""
    k = kernel.shape[0]
    left, right = _same_pads(k)
    yp = np.pad(y, ((right, left), (0, 0)))
    n = y.shape[0]
    out = sum(yp[k - 1 - i : k - 1 - i + n] @ kernel[i].T for i in range(k))
    return np.asarray(out, np.float32)


@dataclass(frozen=True)
class Forward:
    fire: F32  # (L, 2E) fire module output
    pooled: F32  # (L/pool, 2E)
    switches: NDArray[np.int64]  # (L/pool, 2E) argmax offset inside each window


def forward(x: F32, w: DeconvWeights) -> Forward:
    a = w.alpha
    h = lrelu(conv1d_same(x[:, None].astype(np.float32), w.conv0_kernel, w.conv0_bias), a)
    b = (h - w.bn_mean) / np.sqrt(w.bn_var + w.bn_eps) * w.bn_gamma + w.bn_beta
    s = lrelu(conv1d_same(b, w.squeeze_kernel, w.squeeze_bias), a)
    e1 = lrelu(conv1d_same(s, w.e1_kernel, w.e1_bias), a)
    e3 = lrelu(conv1d_same(s, w.e3_kernel, w.e3_bias), a)
    f = np.concatenate([e1, e3], axis=1)
    n_win = f.shape[0] // w.pool
    windows = f[: n_win * w.pool].reshape(n_win, w.pool, f.shape[1])
    switches = windows.argmax(axis=1)
    pooled = windows.max(axis=1)
    return Forward(f, pooled, switches)


def class_evidence(pooled: F32, w: DeconvWeights, class_index: int) -> F32:
    """Step 2: positive contributions of pooled features to the class logit."""
    v = (w.w_bottleneck @ w.w_logits[:, class_index]).reshape(pooled.shape)
    return np.maximum(pooled * v, 0).astype(np.float32)


def unpool(r: F32, switches: NDArray[np.int64], pool: int, length: int) -> F32:
    out = np.zeros((length, r.shape[1]), np.float32)
    n_win = r.shape[0]
    rows = np.arange(n_win)[:, None] * pool + switches
    cols = np.broadcast_to(np.arange(r.shape[1]), r.shape)
    out[rows, cols] = r
    return out


def backward_from_fire(r_fire: F32, w: DeconvWeights) -> F32:
    """Steps 4-6: a relevance map on the fire output -> attribution over the input axis."""
    a = w.alpha
    e = w.e1_kernel.shape[2]
    r_s = conv1d_same_transpose(lrelu(r_fire[:, :e], a), w.e1_kernel) + conv1d_same_transpose(
        lrelu(r_fire[:, e:], a), w.e3_kernel
    )
    r_b = conv1d_same_transpose(lrelu(r_s, a), w.squeeze_kernel)
    r_h = r_b * (w.bn_gamma / np.sqrt(w.bn_var + w.bn_eps))
    return conv1d_same_transpose(lrelu(r_h.astype(np.float32), a), w.conv0_kernel)[:, 0]


def attribution(x: F32, w: DeconvWeights, class_index: int) -> F32:
    """Deconvnet attribution curve (same length as x) for one class."""
    fw = forward(x, w)
    r = class_evidence(fw.pooled, w, class_index)
    return backward_from_fire(unpool(r, fw.switches, w.pool, x.shape[0]), w)


@dataclass(frozen=True)
class Peak:
    shift_cm1: float
    relevance: float  # attribution height, 1.0 for the strongest
    intensity: float  # the preprocessed spectrum there (max-normalised, 0-1)


def top_peaks(
    attr: F32,
    spectrum: F32,
    grid_cm1: NDArray[np.float64],
    k: int = 5,
    snap_cm1: float = 6.0,
) -> list[Peak]:
    """Top-k attribution peaks, each snapped to the spectrum's nearest band maximum.

    The attribution is a smeared image of a band (it passes through 9-point kernels), so
    its maximum can sit a few cm-1 off the band; a band is reported at the spectrum's local
    maximum within `snap_cm1` of the attribution peak (if there is one).
    """
    # Imported here: scipy.signal costs 1-2.5 s of import time, which `edge run` pays at
    # start-up only if it ever names peaks (measured by bench/edge_perf).
    from scipy.signal import find_peaks

    pos = np.maximum(attr, 0)
    top = float(pos.max())
    if top <= 0:
        return []
    step = float(grid_cm1[1] - grid_cm1[0])
    idx, props = find_peaks(pos, height=0.05 * top, distance=max(1, int(round(8 / step))))
    order = np.argsort(props["peak_heights"])[::-1][:k]
    half = max(1, int(round(snap_cm1 / step)))
    peaks: list[Peak] = []
    for i in idx[order]:
        lo, hi = max(0, i - half), min(spectrum.size, i + half + 1)
        j = lo + int(np.argmax(spectrum[lo:hi]))
        if j in (lo, hi - 1) and not (0 < j < spectrum.size - 1):
            j = int(i)
        if any(abs(float(grid_cm1[j]) - p.shift_cm1) < snap_cm1 for p in peaks):
            continue  # two attribution lobes of one band
        peaks.append(
            Peak(
                shift_cm1=round(float(grid_cm1[j]), 1),
                relevance=round(float(pos[i] / top), 4),
                intensity=round(float(spectrum[j]), 4),
            )
        )
    return peaks
