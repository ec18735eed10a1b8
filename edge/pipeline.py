"""Per-spectrum analysis: counts -> quality gate -> identification -> deconv peaks.

Identification is the int8 CNN alone for a bundle without a reference library, and the
hybrid (edge.fusion of the CNN, the embedding search and the shift-tolerant correlation
search of edge.library) when the bundle has one (`library.npz` + a `fusion` manifest
section) or a library directory is given (`edge classify --library`, config `library_dir`).

Pure computation on arrays (no serial, no MQTT): the daemon feeds it frames, `edge
classify` feeds it files, the benchmarks feed it emulator output, and all get the same
answer. The quality gate turns unusable spectra into a *rejected* analysis with a reason
instead of a classification (docs/mqtt.md lists the reasons).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edge.alignment import aligned, better_view, calibrated_view
from edge.bundle import Bundle, load_deconv_weights
from edge.classifier import Classifier, Prediction
from edge.deconv import DeconvWeights, Peak, attribution, top_peaks
from edge.errors import SpectrumError
from edge.fusion import Fused, FusionParams, fuse
from edge.library import Match, ReferenceLibrary, SearchParams, load_library
from edge.mixture import MixtureParams, fit_mixture
from edge.preprocess import Prepared, pixel_shifts, preprocess
from edge.quality import QualityLimits

# Detector full scale for uint16 counts: one definition (raman_core), shared with the emulator.
from raman_core.units import FULL_SCALE

__all__ = ["Analysis", "Analyzer", "Evidence", "QualityLimits", "classify_library_spectrum"]


@dataclass(frozen=True)
class Analysis:
    status: str  # "ok" | "rejected"
    reason: str | None
    top: tuple[tuple[str, float], ...] = ()
    unknown: bool = False
    peaks: tuple[Peak, ...] = ()
    snr: float | None = None
    coverage: float | None = None
    n_spikes: int = 0
    saturated: bool = False
    fluorescence_ratio: float | None = None
    match: Match | None = None  # closest library reference (hybrid only)
    mixture: tuple[tuple[str, float], ...] | None = None  # (mineral, fraction), largest first
    latency_ms: dict[str, float] = field(default_factory=dict)
    values: NDArray[np.float32] | None = field(default=None, repr=False)  # model input, for raw publishing


@dataclass(frozen=True)
class Evidence:
    """The scores behind one identification (`Analyzer.evidence`)."""

    prediction: Prediction  # the CNN (calibrated softmax, optional embedding)
    sim: NDArray[np.float32] | None = None  # correlation with every reference (hybrid only)
    lag: NDArray[np.int32] | None = None
    corr_per_class: NDArray[np.float32] | None = None  # best correlation per class
    emb_per_class: NDArray[np.float32] | None = None  # best embedding cosine per class
    fused: Fused | None = None  # the hybrid's fused distribution (None: CNN alone)
    aligned_lag_pts: int = 0  # the CNN's input was moved by this many points (edge.alignment)

    @property
    def cnn_max_p(self) -> float:
        return float(np.max(self.prediction.probabilities))

    @property
    def corr_best(self) -> float:
        return float(np.max(self.sim)) if self.sim is not None and self.sim.size else float("nan")

    @property
    def fused_top_p(self) -> float:
        f = self.fused
        return float(f.probabilities[f.order[0]]) if f is not None else self.cnn_max_p


def _finite_or_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 3)


def bundle_library(bundle: Bundle) -> ReferenceLibrary | None:
    """The bundle's own reference library, if it ships one (hashed with the bundle's files)."""
    if "library.npz" not in bundle.manifest.get("files", {}):
        return None
    return load_library(bundle.path, grid_n=bundle.spec.grid_n, params=search_params(bundle))


def search_params(bundle: Bundle) -> SearchParams:
    """How this bundle's library is searched: with the correlation view its fusion was fitted
    with (manifest fusion `corr_view`; "pearson" for bundles without it)."""
    fusion = FusionParams.from_manifest(bundle.manifest)
    return SearchParams(view=fusion.corr_view) if fusion is not None else SearchParams()


def combined_library(
    bundle: Bundle, extra: ReferenceLibrary | None, *, with_bundle_library: bool = True
) -> ReferenceLibrary | None:
    """Bundle library + added references; class indices of the bundle's labels come first.
    `with_bundle_library=False`: the added references alone (still indexed after the labels)."""
    base = bundle_library(bundle) if with_bundle_library else None
    if base is None and extra is None:
        return None
    if base is not None and base.minerals[: len(bundle.labels)] != bundle.labels:
        from edge.errors import BundleError

        raise BundleError(f"{bundle.path}: library minerals do not start with the model's labels")
    if extra is None:
        return base
    if base is None:
        from edge.library import build_library

        base = build_library(
            bundle.labels, np.zeros(0), [], np.zeros(0), np.zeros((0, bundle.spec.grid_n)), params=search_params(bundle)
        )
    return base.extended(extra)


class Analyzer:
    def __init__(
        self,
        bundle: Bundle,
        classifier: Classifier | None = None,
        weights: DeconvWeights | None = None,
        limits: QualityLimits | None = None,
        shift_offset_cm1: float = 0.0,
        *,
        top_k: int = 3,
        n_peaks: int = 5,
        library: ReferenceLibrary | None = None,
        use_bundle_library: bool = True,
    ) -> None:
        self.bundle = bundle
        self.classifier = classifier or Classifier(bundle)
        self.weights = weights or load_deconv_weights(bundle.deconv_path)
        self.limits = limits or QualityLimits()
        self.shift_offset_cm1 = float(shift_offset_cm1)
        self.top_k = top_k
        self.n_peaks = n_peaks
        self._use_bundle_library = use_bundle_library
        self.library = combined_library(bundle, library, with_bundle_library=use_bundle_library)
        fusion = FusionParams.from_manifest(bundle.manifest)
        # A library without fitted fusion (e.g. references added to a CNN-only bundle): the
        # notes' naive fusion, and the CNN's own unknown threshold does not apply to it.
        self.fusion = fusion or FusionParams()
        self.mixture_params = MixtureParams.from_manifest(bundle.manifest)
        self._last_mixture: tuple[tuple[str, float], ...] | None = None

    def set_library(self, library: ReferenceLibrary | None) -> None:
        """Swap the added references (the daemon, on a change of `library_dir`)."""
        self.library = combined_library(self.bundle, library, with_bundle_library=self._use_bundle_library)

    def evidence(self, values: NDArray[np.float32], *, k: int | None = None, snr: float | None = None) -> Evidence:
        """Every score identification rests on, for one preprocessed spectrum (no mixture fit).

        `identify` is built on this; the benchmarks read the components from it, so what they
        measure is what the edge decides on. `snr` (the preprocessing's measurement) picks the
        fusion parameters (edge.fusion: noisy spectra have their own); None: the clean ones."""
        lib = self.library
        kk = self.top_k if k is None else k
        if lib is None or len(lib) == 0:
            return Evidence(self.classifier.classify(values, k=kk))
        sim, lag, sim0 = lib.search(values)
        params = self.fusion.for_snr(snr)
        # Zero-lag similarities and no move when the axis looks calibrated (edge.alignment).
        sim_f, lag_f = calibrated_view(sim, lag, sim0, params.calibrated_gap)
        corr = lib.per_class(sim_f)
        # The CNN sees the spectrum moved onto its best match when the axis looks off.
        x, moved = aligned(values, sim_f, lag_f, params.align_min_lag_pts)
        pred = self.classifier.classify(x, k=1)
        log_p, emb = self._cnn_scores(pred, lib)
        if moved and params.cnn_views == "both":
            # The unmoved spectrum too; each class keeps its better score (edge.alignment).
            lp0, emb0 = self._cnn_scores(self.classifier.classify(values, k=1), lib)
            log_p = better_view(log_p, lp0)
            if emb is not None and emb0 is not None:
                emb = better_view(emb, emb0).astype(np.float32)
        f = fuse(params, len(lib.minerals), log_p, corr, emb, k=kk)
        return Evidence(pred, sim, lag, corr, emb, f, moved)

    @staticmethod
    def _cnn_scores(pred: Prediction, lib: ReferenceLibrary) -> tuple[NDArray[np.float64], NDArray[np.float32] | None]:
        """(CNN log p, best embedding similarity per class or None) of one prediction.
        Bundles whose model exports an embedding (issue 11) add the embedding search; a model
        without one (the older shipped int8 model) simply skips this term."""
        log_p = np.log(np.maximum(pred.probabilities.astype(np.float64), 1e-12))
        if pred.embedding is None or not lib.has_embedding:
            return log_p, None
        return log_p, lib.per_class(lib.embedding_similarities(pred.embedding))

    def identify(
        self, values: NDArray[np.float32], snr: float | None = None
    ) -> tuple[tuple[tuple[str, float], ...], bool, int, Match | None]:
        """(top, unknown, class index, match): the one identification path for every caller."""
        self._last_mixture = None
        ev = self.evidence(values, snr=snr)
        lib, f = self.library, ev.fused
        if lib is None or f is None or ev.sim is None:
            pred = ev.prediction
            return pred.top, pred.unknown, pred.class_index, None
        self._last_mixture = fit_mixture(values, lib, ev.sim, ev.lag, self.mixture_params).components
        order = [i for j, i in enumerate(f.order) if j == 0 or f.probabilities[i] >= 1e-4]
        top = tuple((lib.minerals[i], round(float(f.probabilities[i]), 4)) for i in order)
        return top, f.unknown, int(order[0]), lib.match(ev.sim, ev.lag)

    def shifts_for(self, calibration_nm: ArrayLike, laser_nm: float, n_pixels: int) -> NDArray[np.float64]:
        """Raman shift of every pixel from the device's calibration polynomial and laser line,
        minus the measured offset of this device (`edge calibrate`)."""
        shifts = pixel_shifts(calibration_nm, laser_nm, n_pixels)
        return shifts - self.shift_offset_cm1 if self.shift_offset_cm1 else shifts

    def analyze_counts(
        self,
        counts: ArrayLike,
        shift_cm1: NDArray[np.float64],
        *,
        dark: ArrayLike | None = None,
        saturated_flag: bool = False,
    ) -> Analysis:
        """A raw instrument spectrum (counts per pixel) -> analysis, never an exception."""
        t0 = time.perf_counter()
        c = np.asarray(counts)
        if c.ndim != 1 or c.size != shift_cm1.size:
            return Analysis(
                "rejected",
                f"wrong_length: spectrum has {c.size} pixels, the device reported {shift_cm1.size}",
            )
        y = c.astype(np.float64)
        n_sat = int(np.sum(y >= FULL_SCALE))
        saturated = saturated_flag or n_sat > self.limits.max_saturated_pixels
        if dark is not None:
            d = np.asarray(dark, dtype=np.float64)
            if d.shape == y.shape:
                y = y - d
        if saturated:
            return Analysis("rejected", f"saturated: {n_sat} pixels at full scale", saturated=True)
        try:
            prep = preprocess(shift_cm1, y, self.bundle.spec, corrected=False)
        except SpectrumError as err:
            return Analysis("rejected", f"invalid_spectrum: {err}")
        t1 = time.perf_counter()
        reason = self._gate(prep)
        if reason is not None:
            return self._rejected(prep, reason, {"preprocess": (t1 - t0) * 1e3})
        return self._classify(prep, {"preprocess": (t1 - t0) * 1e3})

    def analyze_corrected(self, shift_cm1: ArrayLike, intensity: ArrayLike) -> Analysis:
        """A library-style, already baseline-corrected spectrum (RRUFF Processed, CSV)."""
        t0 = time.perf_counter()
        try:
            prep = preprocess(shift_cm1, intensity, self.bundle.spec, corrected=True)
        except SpectrumError as err:
            return Analysis("rejected", f"invalid_spectrum: {err}")
        t1 = time.perf_counter()
        if prep.coverage < self.limits.min_coverage:
            return self._rejected(prep, f"low_coverage: {prep.coverage:.2f} of the model grid", {})
        return self._classify(prep, {"preprocess": (t1 - t0) * 1e3})

    def _gate(self, prep: Prepared) -> str | None:
        lim = self.limits
        if prep.n_spikes > lim.max_spikes:
            return f"cosmic_rays: {prep.n_spikes} spike pixels (limit {lim.max_spikes})"
        if math.isfinite(prep.fluorescence_ratio) and prep.fluorescence_ratio > lim.max_fluorescence_ratio:
            return (
                f"fluorescence: background {prep.fluorescence_ratio:.0f}x the strongest band "
                f"(limit {lim.max_fluorescence_ratio:.0f}x)"
            )
        if prep.snr < lim.min_snr:
            return f"low_snr: {prep.snr:.1f} (limit {lim.min_snr:.1f})"
        if prep.coverage < lim.min_coverage:
            return f"low_coverage: {prep.coverage:.2f} of the model grid"
        return None

    def _rejected(self, prep: Prepared, reason: str, latency: dict[str, float]) -> Analysis:
        return Analysis(
            "rejected",
            reason,
            snr=_finite_or_none(prep.snr),
            coverage=round(prep.coverage, 4),
            n_spikes=prep.n_spikes,
            fluorescence_ratio=_finite_or_none(prep.fluorescence_ratio),
            latency_ms=latency,
            values=prep.values,
        )

    def _classify(self, prep: Prepared, latency: dict[str, float]) -> Analysis:
        t1 = time.perf_counter()
        top, unknown, class_index, match = self.identify(prep.values, prep.snr)
        t2 = time.perf_counter()
        # Deconv weights exist for the model's classes only; an added mineral shows the
        # peaks of the model's best class (edge library add docs).
        if class_index >= len(self.bundle.labels):
            class_index = int(self.classifier.classify(prep.values, k=1).class_index)
        attr = attribution(prep.values, self.weights, class_index)
        peaks = top_peaks(attr, prep.values, self.bundle.grid_cm1, k=self.n_peaks)
        t3 = time.perf_counter()
        latency = {**latency, "classify": (t2 - t1) * 1e3, "deconv": (t3 - t2) * 1e3}
        return Analysis(
            "ok",
            None,
            top=top,
            unknown=unknown,
            match=match,
            mixture=self._last_mixture,
            peaks=tuple(peaks),
            snr=_finite_or_none(prep.snr),
            coverage=round(prep.coverage, 4),
            n_spikes=prep.n_spikes,
            fluorescence_ratio=_finite_or_none(prep.fluorescence_ratio),
            latency_ms={k: round(v, 3) for k, v in latency.items()},
            values=prep.values,
        )


def classify_library_spectrum(
    classifier: Classifier, shift_cm1: ArrayLike, intensity: ArrayLike, k: int = 3
) -> Prediction:
    """Score one already-corrected library spectrum (RRUFF Processed) as `edge classify` does.

    The same preprocessing and interpreter, without the quality gate and the deconv: what
    `trainer evaluate` and the runtime-compatibility check measure. Raises SpectrumError.
    """
    prep = preprocess(shift_cm1, intensity, classifier.bundle.spec, corrected=True)
    return classifier.classify(prep.values, k=k)
