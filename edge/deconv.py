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

import functools
import weakref
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# The payload type itself: a peak goes into the MQTT result and `edge classify --json` as is.
from edge.result import Peak

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


def attribution_reference(x: F32, w: DeconvWeights, class_index: int) -> F32:
    """Steps 1-6 written out layer by layer: the readable definition `attribution` must equal."""
    fw = forward(x, w)
    r = class_evidence(fw.pooled, w, class_index)
    return backward_from_fire(unpool(r, fw.switches, w.pool, x.shape[0]), w)


@dataclass(frozen=True)
class DeconvPlan:
    """Constants derived once per bundle so that one attribution is a few small matmuls.

    BatchNorm follows the first LeakyReLU, so its affine part folds into the squeeze
    weights; the 1x1 and 3x1 expand convolutions read the same input and become one 3-tap
    convolution with 2E outputs (the 1x1 kernel on the centre tap), which is also the
    concatenated fire output the pooling reads.
    """

    k0: F32  # (k0, C0): first convolution taps
    b0: F32  # (C0,)
    bn_scale: F32  # (C0,) gamma / sqrt(var + eps): the linear part used on the way back
    w_squeeze: F32  # (C0, S), BatchNorm folded in
    b_squeeze: F32  # (S,)
    w_squeeze_t: F32  # (S, C0), the plain squeeze kernel transposed (no BatchNorm) for step 4
    w_fire: F32  # (3, S, 2E): expand taps, e1 on the centre tap
    w_fire_t: F32  # (3, 2E, S): each tap transposed (contiguous), for step 4
    b_fire: F32  # (2E,)
    pool: int
    alpha: float


def make_plan(w: DeconvWeights) -> DeconvPlan:
    if not 0.0 <= w.alpha <= 1.0:
        raise ValueError(f"deconv plan expects a LeakyReLU slope in [0, 1], got {w.alpha}")
    if w.e3_kernel.shape[0] != 3 or w.e1_kernel.shape[0] != 1 or w.squeeze_kernel.shape[0] != 1:
        raise ValueError("deconv plan expects 1x1 squeeze, 1x1 and 3x1 expand kernels (FMCNN)")
    scale = (w.bn_gamma / np.sqrt(w.bn_var + w.bn_eps)).astype(np.float32)
    shift = (w.bn_beta - w.bn_mean * scale).astype(np.float32)
    sq = w.squeeze_kernel[0]
    e = w.e1_kernel.shape[2]
    fire = np.zeros((3, sq.shape[1], 2 * e), np.float32)
    fire[1, :, :e] = w.e1_kernel[0]
    fire[:, :, e:] = w.e3_kernel
    return DeconvPlan(
        k0=np.ascontiguousarray(w.conv0_kernel[:, 0, :], dtype=np.float32),
        b0=w.conv0_bias.astype(np.float32),
        bn_scale=scale,
        w_squeeze=(scale[:, None] * sq).astype(np.float32),
        b_squeeze=(shift @ sq + w.squeeze_bias).astype(np.float32),
        w_squeeze_t=np.ascontiguousarray(sq.T, dtype=np.float32),
        w_fire=fire,
        w_fire_t=np.ascontiguousarray(fire.transpose(0, 2, 1)),
        b_fire=np.concatenate([w.e1_bias, w.e3_bias]).astype(np.float32),
        pool=int(w.pool),
        alpha=float(w.alpha),
    )


# One plan per weights object (the Analyzer keeps its weights for its lifetime). Keyed by
# id with a weak reference to check identity: DeconvWeights holds arrays, so it is unhashable.
_PLANS: dict[int, tuple[weakref.ref[DeconvWeights], DeconvPlan]] = {}


def plan_for(w: DeconvWeights) -> DeconvPlan:
    hit = _PLANS.get(id(w))
    if hit is not None and hit[0]() is w:
        return hit[1]
    plan = make_plan(w)
    key = id(w)

    def forget(_ref: weakref.ref[DeconvWeights]) -> None:
        _PLANS.pop(key, None)

    _PLANS[key] = (weakref.ref(w, forget), plan)
    return plan


def _lrelu_(x: F32, alpha: float) -> F32:
    """LeakyReLU in place (the arrays here are this call's own): max(x, alpha * x) for
    0 <= alpha <= 1. A masked multiply (`where=x < 0`) measured ~25x slower."""
    np.maximum(x, x * np.float32(alpha), out=x)
    return x


def _conv3_same(s: F32, taps: F32) -> F32:
    """sum_i pad(s, 1)[i:i+L] @ taps[i] for 3 taps, without building the padded copy.

    Row by row the same sums in the same order as the padded form (tap 0, 1, 2; the
    missing edge terms are exact zeros there)."""
    n = s.shape[0]
    out = np.empty((n, taps.shape[2]), np.float32)
    out[0] = 0.0
    np.matmul(s[:-1], taps[0], out=out[1:])
    out += s @ taps[1]
    out[:-1] += s[1:] @ taps[2]
    return out


def attribution(x: F32, w: DeconvWeights, class_index: int) -> F32:
    """Deconvnet attribution curve (same length as x) for one class.

    The same steps as `attribution_reference` with the per-bundle constants of `plan_for`;
    the largest per-spectrum arrays are L x 2E float32 (174 KB for 1,360 points, 32 channels).
    """
    p = plan_for(w)
    a = p.alpha
    n = x.shape[0]
    k = p.k0.shape[0]
    left, right = _same_pads(k)
    # Step 1, forward. First convolution: one (L, k) window matrix times the (k, C0) taps.
    xp = np.pad(x.astype(np.float32, copy=False), (left, right))
    h: F32 = np.lib.stride_tricks.sliding_window_view(xp, k) @ p.k0
    h += p.b0
    _lrelu_(h, a)
    s = h @ p.w_squeeze  # BatchNorm folded in
    s += p.b_squeeze
    _lrelu_(s, a)
    f = _conv3_same(s, p.w_fire)  # [e1 | e3] before their LeakyReLU
    f += p.b_fire
    _lrelu_(f, a)
    n_win, c = n // p.pool, f.shape[1]
    windows = f[: n_win * p.pool].reshape(n_win, p.pool, c)
    switches = windows.argmax(axis=1)
    pooled = np.take_along_axis(windows, switches[:, None, :], axis=1)[:, 0, :]
    # Step 2: evidence for the class (one matrix-vector product: the effective dense column).
    v = (w.w_bottleneck @ w.w_logits[:, class_index]).reshape(pooled.shape)
    r = np.maximum(pooled * v, 0, dtype=np.float32)
    # Step 3: unpool to the switch positions (r >= 0, so the LeakyReLU of step 4 keeps it),
    # as flat indices into the (L, C) map: window start row * C + switch * C + channel.
    r_fire = np.zeros_like(f)
    flat = switches * c
    flat += _window_base(n_win, p.pool, c)
    r_fire.reshape(-1)[flat.reshape(-1)] = r.reshape(-1)
    # Step 4: transposed fused expand convolution (taps reversed), LeakyReLU, transposed
    # squeeze; the padded form rp = pad(r_fire, 1) read as row shifts of r_fire.
    r_s = np.empty((n, p.w_fire.shape[1]), np.float32)
    np.matmul(r_fire[1:], p.w_fire_t[0], out=r_s[:-1])
    r_s[-1] = 0.0
    r_s += r_fire @ p.w_fire_t[1]
    r_s[1:] += r_fire[:-1] @ p.w_fire_t[2]
    _lrelu_(r_s, a)
    r_h = r_s @ p.w_squeeze_t
    # Step 5: BatchNorm's linear part; step 6: LeakyReLU, transposed first convolution.
    r_h *= p.bn_scale
    _lrelu_(r_h, a)
    g = r_h @ p.k0.T  # (L, k): each tap's projection; tap i lands `left - i` rows later
    out = g[:, 0].copy() if left == 0 else np.zeros(n, np.float32)
    if left:
        out[: n - left] = g[left:, 0]
    for i in range(1, k):
        d = left - i
        if d >= 0:
            out[: n - d] += g[d:, i]
        else:
            out[-d:] += g[: n + d, i]
    return out


@functools.lru_cache(maxsize=8)
def _window_base(n_win: int, pool: int, c: int) -> NDArray[np.intp]:
    """Flat index of (window start row, channel) in an (L, C) map: the unpooling offsets that
    do not depend on the spectrum (read-only, shared)."""
    base = np.arange(n_win, dtype=np.intp)[:, None] * (pool * c) + np.arange(c, dtype=np.intp)[None, :]
    base.setflags(write=False)
    return base


def find_peaks(x: F32, height: float, distance: int) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    """Local maxima of `x` at least `height` high, thinned to at least `distance` samples apart.

    The rules of scipy.signal.find_peaks(x, height=, distance=) (a flat top counts once, at
    its middle, rounded down; a higher peak removes lower ones closer than `distance`),
    without importing scipy.signal: that costs ~0.5-2.5 s and ~45 MB at start-up.
    Returns (indices, heights) in index order.
    """
    n = x.size
    if n < 3:
        return np.zeros(0, np.intp), np.zeros(0, x.dtype)
    # Runs of equal values: a run is a peak when both neighbouring runs are lower and it
    # touches neither end of the array.
    change = np.flatnonzero(x[1:] != x[:-1])
    starts = np.r_[0, change + 1]
    ends = np.r_[change, n - 1]
    vals = x[starts]
    inner = np.arange(1, starts.size - 1)
    is_peak = (vals[inner - 1] < vals[inner]) & (vals[inner + 1] < vals[inner])
    runs = inner[is_peak]
    peaks = (starts[runs] + ends[runs]) // 2
    heights = x[peaks]
    keep = heights >= height
    peaks, heights = peaks[keep], heights[keep]
    if distance > 1 and peaks.size > 1:
        pos = peaks.tolist()  # a few dozen candidates: plain ints beat array ops here
        kept = [True] * len(pos)
        # Highest first, in scipy's order (its default argsort, walked from the top); peaks
        # are sorted, so the ones too close to j are its contiguous neighbours.
        for j in np.argsort(heights)[::-1].tolist():
            if not kept[j]:
                continue
            i = j - 1
            while i >= 0 and pos[j] - pos[i] < distance:
                kept[i] = False
                i -= 1
            i = j + 1
            while i < len(pos) and pos[i] - pos[j] < distance:
                kept[i] = False
                i += 1
        mask = np.array(kept)
        peaks, heights = peaks[mask], heights[mask]
    return peaks, heights


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
    pos = np.maximum(attr, 0)
    top = float(pos.max())
    if top <= 0:
        return []
    step = float(grid_cm1[1] - grid_cm1[0])
    idx, heights = find_peaks(pos, height=0.05 * top, distance=max(1, int(round(8 / step))))
    order = np.argsort(heights)[::-1][:k]
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
