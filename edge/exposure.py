"""Auto-exposure, sans I/O: from a short probe exposure to the integration time and averages.

The daemon (edge/daemon.py) does the I/O: it takes a probe frame, asks `plan_exposure` what
to do, and either re-probes shorter (the probe saturated) or acquires the planned spectrum.
Everything here is a pure function of the probe's counts, the dark frame and the limits, so
the control law is tested without a device.

The law, for one acquisition:

1. **Headroom.** The brightest pixel (band or fluorescence, whatever is highest) grows
   linearly with the integration time: `counts = dark + rate * t`. The longest single
   exposure that keeps it below `max_peak_fraction` of full scale is
   `t_sat = (max_peak_fraction * FULL_SCALE - dark) / rate`. Averaging does not change the
   level, so this bounds the integration time only.
2. **SNR.** The quality gate's SNR (strongest band over pixel noise after baseline removal,
   edge.preprocess.signal_to_noise) grows as sqrt(t * averages) when shot noise dominates and
   faster (up to t) when read noise does; assuming sqrt is conservative (it never predicts more
   SNR than a longer exposure gives). The single exposure that reaches `target_snr` is
   `t_snr = t_probe * averages_probe * (target_snr / snr_probe)^2`.
3. **Choice.** `t = min(t_sat, t_snr, budget)`, within the device's limits; if one exposure
   of `t` does not reach the target (t was capped by headroom or the device), average as many
   as needed and as the budget `max_acquisition_ms` (minus the probe time) and the device's
   `averages_max` allow. The target may be out of reach within the budget: then the planned
   spectrum is the best the budget allows, and the quality gate still decides.
4. **Saturated probe.** Nothing is known about the rate: re-probe `saturated_step` times
   shorter, down to the device's minimum (then accept the minimum: the gate will reject it).

The noise floor of the SNR estimator (the maximum of pure noise over ~1000 pixels is ~3.5
sigma) makes a weak probe look better than it is; `plan_exposure` subtracts it in quadrature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from edge.errors import ConfigError
from raman_core.units import FULL_SCALE

#: Max of ~1000 independent unit-variance samples: what the SNR estimator reports on pure noise.
SNR_NOISE_FLOOR = 3.5


@dataclass(frozen=True)
class ExposureLimits:
    """What the device and the operator allow for one acquisition (probe included)."""

    integration_min_ms: int = 1
    integration_max_ms: int = 60_000
    averages_max: int = 1000
    max_acquisition_ms: int = 5000

    def __post_init__(self) -> None:
        if not 1 <= self.integration_min_ms <= self.integration_max_ms:
            raise ConfigError(f"exposure limits: need 1 <= integration_min_ms <= integration_max_ms, got {self}")
        if self.averages_max < 1 or self.max_acquisition_ms < self.integration_min_ms:
            raise ConfigError(
                f"exposure limits: averages_max >= 1 and max_acquisition_ms >= the device's minimum "
                f"integration ({self.integration_min_ms} ms), got {self}"
            )


@dataclass(frozen=True)
class ExposureTarget:
    target_snr: float = 20.0
    max_peak_fraction: float = 0.6  # brightest pixel at most this fraction of full scale
    probe_ms: int = 10  # first probe; later probes follow the previous acquisition
    saturated_step: float = 8.0  # a saturated probe is retried this many times shorter

    def __post_init__(self) -> None:
        if not self.target_snr > 0:
            raise ConfigError(f"auto_exposure_target_snr must be > 0, got {self.target_snr}")
        if not 0.05 <= self.max_peak_fraction <= 0.95:
            raise ConfigError(
                f"auto_exposure_max_peak_fraction must be within 0.05..0.95, got {self.max_peak_fraction}"
            )
        if self.probe_ms < 1 or self.saturated_step <= 1:
            raise ConfigError(f"auto-exposure probe: probe_ms >= 1 and saturated_step > 1, got {self}")


@dataclass(frozen=True)
class Probe:
    """What one probe frame tells: its exposure, brightest level, rate and SNR."""

    integration_ms: int
    averages: int
    max_counts: float  # brightest raw pixel
    dark_at_max: float  # the dark level under it
    rate_counts_per_ms: float  # brightest pixel's signal per ms of integration
    snr: float  # the quality gate's SNR of the probe (after baseline removal)
    saturated: bool


@dataclass(frozen=True)
class Plan:
    kind: Literal["acquire", "reprobe"]
    integration_ms: int
    averages: int
    predicted_snr: float | None  # None for a re-probe
    #: What bounded the choice: "snr" (target reached), "headroom", "budget", "device_max",
    #: "device_min" (even the shortest exposure is too bright), "saturated" (re-probe).
    limited_by: Literal["snr", "headroom", "budget", "device_max", "device_min", "saturated"]

    @property
    def total_ms(self) -> int:
        return self.integration_ms * self.averages


def measure_probe(
    counts: ArrayLike,
    dark: ArrayLike | None,
    integration_ms: int,
    averages: int,
    snr: float,
    *,
    saturated_flag: bool = False,
) -> Probe:
    """Summarise a probe frame. `snr` is the gate's SNR of the same frame (the caller runs
    edge.preprocess on it; a saturated frame may pass NaN)."""
    c = np.asarray(counts, dtype=np.float64)
    if dark is not None and np.shape(dark) == c.shape:
        d = np.asarray(dark, dtype=np.float64)
    else:
        d = np.full_like(c, float(np.min(c)) if c.size else 0.0)
    signal = c - d
    i = int(np.argmax(signal)) if c.size else 0
    saturated = bool(saturated_flag or (c.size and float(c.max()) >= FULL_SCALE))
    rate = max(float(signal[i]) if c.size else 0.0, 0.0) / max(integration_ms, 1)
    return Probe(
        integration_ms=int(integration_ms),
        averages=int(averages),
        max_counts=float(c.max()) if c.size else 0.0,
        dark_at_max=float(d[i]) if c.size else 0.0,
        rate_counts_per_ms=rate,
        snr=float(snr) if math.isfinite(snr) else float("nan"),
        saturated=saturated,
    )


def plan_exposure(probe: Probe, limits: ExposureLimits, target: ExposureTarget, *, spent_ms: int = 0) -> Plan:
    """The next step after `probe`: acquire (integration_ms, averages) or re-probe shorter.

    `spent_ms`: probe time already used for this acquisition (counts against the budget).
    """
    lo, hi = limits.integration_min_ms, limits.integration_max_ms
    if probe.saturated:
        if probe.integration_ms <= lo:
            return Plan("acquire", lo, 1, None, "device_min")
        t = max(lo, int(probe.integration_ms / target.saturated_step))
        return Plan("reprobe", t, 1, None, "saturated")
    budget = max(lo, limits.max_acquisition_ms - spent_ms)
    # 1. headroom
    ceiling = target.max_peak_fraction * FULL_SCALE - probe.dark_at_max
    t_sat = math.inf if probe.rate_counts_per_ms <= 0 else ceiling / probe.rate_counts_per_ms
    # 2. SNR per unit exposure (noise floor of the estimator removed in quadrature)
    snr = probe.snr if math.isfinite(probe.snr) else 0.0
    snr_true = math.sqrt(max(snr * snr - SNR_NOISE_FLOOR**2, 0.0))
    exposure_probe = probe.integration_ms * probe.averages
    snr_per_sqrt_ms = snr_true / math.sqrt(exposure_probe) if snr_true > 0 else 0.0
    t_snr = math.inf if snr_per_sqrt_ms <= 0 else (target.target_snr / snr_per_sqrt_ms) ** 2
    # 3. choice of t
    candidates: list[tuple[float, str]] = [(t_snr, "snr"), (t_sat, "headroom"), (budget, "budget"), (hi, "device_max")]
    t_best, why = min(candidates, key=lambda c: c[0])
    if t_best < lo:
        t, why = lo, ("device_min" if why == "headroom" else why)
    else:
        t = int(math.ceil(t_best)) if why == "snr" else int(math.floor(t_best))
        t = min(max(t, lo), hi, budget)
    averages = 1
    if why in ("headroom", "device_max") and snr_per_sqrt_ms > 0:
        need = (target.target_snr / snr_per_sqrt_ms) ** 2 / t
        averages = max(1, min(int(math.ceil(need)), limits.averages_max, budget // t))
        if averages * t >= budget and need > averages:
            why = "budget"
    elif why in ("headroom", "device_max"):
        # No usable SNR estimate: spend the budget (the gate decides).
        averages = max(1, min(limits.averages_max, budget // t))
        why = "budget"
    predicted = snr_per_sqrt_ms * math.sqrt(t * averages) if snr_per_sqrt_ms > 0 else None
    return Plan("acquire", t, averages, None if predicted is None else round(predicted, 2), why)  # type: ignore[arg-type]


def next_probe_ms(previous: Plan | None, target: ExposureTarget, limits: ExposureLimits) -> int:
    """First probe of the next acquisition: a quarter of the last single exposure (the same
    spot is often measured again; a brighter new one costs a re-probe), else `probe_ms`."""
    t = target.probe_ms if previous is None or previous.kind != "acquire" else max(1, previous.integration_ms // 4)
    return int(min(max(t, limits.integration_min_ms), limits.integration_max_ms, target.probe_ms * 10))


def probe_snr(counts: ArrayLike, dark: ArrayLike | None) -> float:
    """The quality gate's SNR of a raw frame (dark subtracted, despiked, baseline removed), as
    edge.pipeline computes it, on the native pixel axis."""
    from edge.preprocess import despike, remove_baseline, signal_to_noise

    y = np.asarray(counts, dtype=np.float64)
    if dark is not None and np.shape(dark) == y.shape:
        y = y - np.asarray(dark, dtype=np.float64)
    y, _ = despike(y)
    return signal_to_noise(remove_baseline(y))


def confirms(plan: Plan, measured: Probe, *, min_ratio: float = 0.5) -> bool:
    """Did the planned spectrum come out as predicted? False when it saturated or its SNR is
    below `min_ratio` of the prediction: the sample changed between probe and spectrum (a new
    spot), and the spectrum should serve as the probe for one more try."""
    if measured.saturated:
        return False
    if plan.predicted_snr is None or not math.isfinite(measured.snr):
        return True
    return measured.snr >= min_ratio * plan.predicted_snr
