"""Late fusion of the CNN, the embedding search and the correlation search into one top-k.

Pure numpy. Per class c the fused logit is

    s_c = w_cnn * log p_cnn(c) + w_emb * e_c + w_corr * r_c

with p_cnn the (host-side, temperature-scaled) CNN softmax, e_c the best cosine similarity
of the spectrum's embedding to a reference of class c and r_c the best shift-tolerant
correlation to a reference of class c (edge.library; the zero-lag one when the axis looks
calibrated, `calibrated_gap`: edge.alignment.calibrated_view). The fused probability is
softmax(s / temperature). The spectrum is `unknown` when its unknown score is below
`unknown_threshold`; the score is the fused top-1 probability (`unknown_score` "top_p") or
the fused top-1 logit s_max ("top_logit": not normalised over the classes, so it stays low
when nothing matches well, even if one class is far ahead of the others). Weights,
temperature, the unknown score and its threshold are fitted in
`trainer export` on held-out spectra (trainer/hybrid.py) and read from the manifest
(`fusion`); the edge only applies them. A component that is absent (no embedding in this
bundle, or a class that only exists in an added library and so has no CNN output) simply
contributes nothing for that class; an added mineral gets the CNN's best log p, so the library
decides between it and the CNN's favourite.

Noisy spectra get their own parameters (`noisy`, applied when the spectrum's measured SNR is
below `noisy_below_snr`). Shot noise, e.g. under a strong fluorescence background, breaks the
CNN and the embedding long before the correlation search: on simulated raw readouts of the
shipped bundle's held-out specimens at a background 10x the strongest band (SNR ~16) the CNN
alone fell to 0.243 and the hybrid to 0.421 while correlation on the same input kept 0.696
(bench/results/raw_spectra.md, 2026-12-03). One set of weights fitted on clean spectra cannot
serve both; `trainer refit-fusion` fits the second set on emulated readouts of the calibration
specimens (trainer/noisy_fusion.py). A bundle without it uses one set for every SNR.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.alignment import CNN_VIEWS
from edge.corr_view import CORR_VIEWS, CorrView
from edge.errors import BundleError

#: log p floor: an int8 softmax reads exactly 0 below its 1/256 step.
LOG_P_FLOOR = float(np.log(1e-4))
UNKNOWN_SCORES = ("top_p", "top_logit")


@dataclass(frozen=True)
class FusionParams:
    w_cnn: float = 1.0
    w_emb: float = 0.0
    w_corr: float = 50.0  # identification-notes.md's naive fusion: correlation / 0.02
    temperature: float = 1.0
    unknown_threshold: float = 0.0  # unknown score below this => unknown
    unknown_keep_fraction: float = 0.95
    unknown_score: str = "top_p"  # "top_p" (fused top-1 probability) or "top_logit" (fused top-1 logit)
    #: Move the spectrum by its best library match's lag before the CNN when |lag| >= this many
    #: grid points (edge.alignment); 0 = never (bundles fitted before it).
    align_min_lag_pts: int = 0
    #: "moved": the CNN and the embedding see only the moved spectrum; "both": a moved spectrum
    #: is scored unmoved too and each class keeps its better score (edge.alignment.better_view).
    cnn_views: str = "moved"
    #: Score the spectrum as on a calibrated axis (zero-lag correlation, nothing moved) when its
    #: best zero-lag library similarity is within this of its best over all lags
    #: (edge.alignment.calibrated_view); < 0: never (bundles fitted before it).
    calibrated_gap: float = -1.0
    #: What the correlation search compares (edge.corr_view): "pearson" (the spectra; bundles
    #: fitted before 2026-12-08) or "sqrt_d1" (their square roots and slopes). The weights and
    #: gap above were fitted with this view's similarities, so the library must be searched
    #: with it (edge.pipeline.bundle_library).
    corr_view: CorrView = "pearson"
    #: Parameters for spectra whose measured SNR (edge.preprocess: strongest band over pixel
    #: noise) is below `noisy_below_snr`; None or 0: these parameters serve every SNR.
    noisy: FusionParams | None = None
    noisy_below_snr: float = 0.0

    def for_snr(self, snr: float | None) -> FusionParams:
        """The parameters for a spectrum of this SNR (unknown SNR: these)."""
        if self.noisy is not None and snr is not None and np.isfinite(snr) and snr < self.noisy_below_snr:
            return self.noisy
        return self

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> FusionParams | None:
        raw = manifest.get("fusion")
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise BundleError("manifest fusion section malformed (not an object)")
        p = cls._from_dict(raw)
        noisy = raw.get("noisy")
        if noisy is not None:
            if not isinstance(noisy, dict) or "noisy" in noisy:
                raise BundleError("manifest fusion.noisy must be an object of fusion parameters (not nested)")
            # One library serves both regimes: the noisy set searches with the clean set's view.
            p = replace(p, noisy=replace(cls._from_dict(noisy), corr_view=p.corr_view))
            if not p.noisy_below_snr > 0:
                raise BundleError(f"manifest fusion noisy_below_snr must be > 0, got {p.noisy_below_snr}")
        return p

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> FusionParams:
        values: dict[str, Any] = {}
        for k, v in raw.items():
            if k not in cls.__dataclass_fields__ or k == "noisy":
                continue
            try:
                values[k] = (
                    str(v)
                    if k in ("unknown_score", "cnn_views", "corr_view")
                    else int(v)
                    if k == "align_min_lag_pts"
                    else float(v)
                )
            except (TypeError, ValueError) as err:
                raise BundleError(f"manifest fusion section malformed: {k} = {v!r} ({err})") from err
        p = cls(**values)
        if p.unknown_score not in UNKNOWN_SCORES:
            raise BundleError(f"manifest fusion unknown_score must be one of {UNKNOWN_SCORES}, got {p.unknown_score!r}")
        if p.cnn_views not in CNN_VIEWS:
            raise BundleError(f"manifest fusion cnn_views must be one of {CNN_VIEWS}, got {p.cnn_views!r}")
        if p.corr_view not in CORR_VIEWS:
            raise BundleError(f"manifest fusion corr_view must be one of {CORR_VIEWS}, got {p.corr_view!r}")
        if p.align_min_lag_pts < 0:
            raise BundleError(f"manifest fusion align_min_lag_pts must be >= 0, got {p.align_min_lag_pts}")
        if p.temperature <= 0:
            raise BundleError(f"manifest fusion temperature must be > 0, got {p.temperature}")
        return p

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.corr_view == "pearson":
            del d["corr_view"]  # bundles fitted before the field keep their manifest
        if self.noisy is None:
            # Bundles without a noisy regime keep the manifest they always had.
            del d["noisy"], d["noisy_below_snr"]
        else:
            d["noisy"] = self.noisy.to_dict()
        return d


@dataclass(frozen=True)
class Fused:
    probabilities: NDArray[np.float64]  # (n_classes,) over the fused label list
    order: NDArray[np.int64]  # classes best first (top-k)
    unknown: bool
    unknown_score: float = float("nan")  # the value compared with the threshold


def fused_logits(
    params: FusionParams,
    n_classes: int,
    log_p_cnn: NDArray[np.floating] | None,
    corr_per_class: NDArray[np.floating] | None,
    emb_per_class: NDArray[np.floating] | None = None,
) -> NDArray[np.float64]:
    """Fused logits, vectorised: the inputs may be (n_classes,) or (n_spectra, n_classes).

    `log_p_cnn` may cover only the first n_cnn classes (the bundle's labels); classes beyond
    have no CNN term. -inf similarities (no reference of that class) are neutral (0 term)
    for classes that do have a CNN output and exclude classes that have neither."""
    shape = (
        (n_classes,)
        if (corr_per_class is None or np.ndim(corr_per_class) == 1)
        else (np.shape(corr_per_class)[0], n_classes)
    )
    s = np.zeros(shape, np.float64)
    evidence = np.zeros(shape, bool)
    if log_p_cnn is not None and params.w_cnn:
        lp = np.maximum(np.asarray(log_p_cnn, np.float64), LOG_P_FLOOR)
        n = lp.shape[-1]
        s[..., :n] += params.w_cnn * lp
        # Added classes (beyond the CNN) get the CNN's best log p: the CNN is neutral between
        # its favourite and a mineral it cannot know, so the library decides between them.
        s[..., n:] += params.w_cnn * lp.max(axis=-1, keepdims=True)
        evidence[..., :n] = True
    for w, sim in ((params.w_corr, corr_per_class), (params.w_emb, emb_per_class)):
        if sim is None or not w:
            continue
        v = np.asarray(sim, np.float64)
        ok = np.isfinite(v)
        s += w * np.where(ok, v, 0.0)
        evidence |= ok
    return np.where(evidence, s, -np.inf)


def softmax(logits: NDArray[np.float64], temperature: float = 1.0) -> NDArray[np.float64]:
    z = np.asarray(logits, np.float64) / temperature
    z = z - np.max(z, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def fuse(
    params: FusionParams,
    n_classes: int,
    log_p_cnn: NDArray[np.floating] | None,
    corr_per_class: NDArray[np.floating] | None,
    emb_per_class: NDArray[np.floating] | None = None,
    k: int = 3,
) -> Fused:
    s = fused_logits(params, n_classes, log_p_cnn, corr_per_class, emb_per_class)
    p = softmax(s, params.temperature)
    kk = min(k, n_classes)
    top = np.argpartition(-p, kk - 1)[:kk]
    order = top[np.argsort(-p[top], kind="stable")]
    score = float(s[order[0]]) if params.unknown_score == "top_logit" else float(p[order[0]])
    return Fused(p, order.astype(np.int64), bool(score < params.unknown_threshold), score)
