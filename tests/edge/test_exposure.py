"""The auto-exposure control law (edge/exposure.py), without a device.

Unit cases on hand-built probes, then the law closed over the emulator's physics model on
samples whose brightness varies 30x: never saturated, SNR target met within the budget.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.exposure import ExposureLimits, ExposureTarget, Plan, Probe, measure_probe, next_probe_ms, plan_exposure
from edge.preprocess import despike, remove_baseline, signal_to_noise
from raman_core.units import FULL_SCALE

LIMITS = ExposureLimits(integration_min_ms=1, integration_max_ms=60_000, averages_max=1000, max_acquisition_ms=5000)
TARGET = ExposureTarget(target_snr=20.0, max_peak_fraction=0.6)


def probe(**kw: object) -> Probe:
    base = dict(
        integration_ms=10,
        averages=1,
        max_counts=1500.0,
        dark_at_max=500.0,
        rate_counts_per_ms=100.0,
        snr=10.0,
        saturated=False,
    )
    return Probe(**(base | kw))  # type: ignore[arg-type]


def test_snr_limited_exposure_scales_with_the_square_of_the_snr_ratio() -> None:
    plan = plan_exposure(probe(snr=10.0), LIMITS, TARGET)
    snr_true = (10.0**2 - 3.5**2) ** 0.5
    assert plan.kind == "acquire" and plan.limited_by == "snr" and plan.averages == 1
    assert plan.integration_ms == pytest.approx(10 * (20.0 / snr_true) ** 2, abs=1)
    assert plan.predicted_snr == pytest.approx(20.0, abs=0.2)


def test_bright_sample_is_capped_by_headroom_and_averaged_for_snr() -> None:
    # 10000 counts/ms: 0.6 * full scale is reached after ~3.9 ms; SNR 8 needs ~8x the exposure.
    plan = plan_exposure(probe(integration_ms=1, rate_counts_per_ms=10_000.0, snr=8.0), LIMITS, TARGET)
    t_sat = (0.6 * FULL_SCALE - 500.0) / 10_000.0
    assert plan.limited_by == "headroom"
    assert plan.integration_ms == int(t_sat)
    assert plan.averages > 1
    assert plan.predicted_snr is not None and plan.predicted_snr >= 20.0


def test_budget_bounds_integration_times_averages_probe_included() -> None:
    plan = plan_exposure(probe(snr=3.6, rate_counts_per_ms=1.0), LIMITS, TARGET, spent_ms=40)
    assert plan.limited_by == "budget"
    assert plan.total_ms <= LIMITS.max_acquisition_ms - 40
    headroom_bound = plan_exposure(probe(snr=4.0, rate_counts_per_ms=500.0), LIMITS, TARGET)
    assert headroom_bound.total_ms <= LIMITS.max_acquisition_ms
    assert headroom_bound.integration_ms * 500.0 + 500.0 <= 0.6 * FULL_SCALE


def test_device_limits_hold() -> None:
    narrow = ExposureLimits(integration_min_ms=5, integration_max_ms=50, averages_max=4, max_acquisition_ms=5000)
    plan = plan_exposure(probe(snr=4.0, rate_counts_per_ms=1.0), narrow, TARGET)
    assert 5 <= plan.integration_ms <= 50 and plan.averages <= 4
    too_bright = plan_exposure(probe(integration_ms=5, rate_counts_per_ms=1e6, snr=50.0), narrow, TARGET)
    assert too_bright.integration_ms == 5 and too_bright.limited_by == "device_min"


def test_saturated_probe_reprobes_shorter_down_to_the_minimum() -> None:
    plan = plan_exposure(probe(integration_ms=80, saturated=True), LIMITS, TARGET)
    assert plan == Plan("reprobe", 10, 1, None, "saturated")
    last = plan_exposure(probe(integration_ms=1, saturated=True), LIMITS, TARGET)
    assert last.kind == "acquire" and last.integration_ms == 1 and last.limited_by == "device_min"


def test_no_signal_spends_the_budget_in_one_exposure() -> None:
    plan = plan_exposure(probe(snr=float("nan"), rate_counts_per_ms=0.0), LIMITS, TARGET)
    assert plan.kind == "acquire" and plan.total_ms <= LIMITS.max_acquisition_ms
    assert plan.integration_ms == LIMITS.max_acquisition_ms


def test_measure_probe_uses_the_dark_frame_and_flags_full_scale() -> None:
    dark = np.full(100, 500.0)
    counts = dark.copy()
    counts[40] = 2500.0
    p = measure_probe(counts, dark, 20, 1, snr=12.0)
    assert p.rate_counts_per_ms == pytest.approx(100.0) and p.dark_at_max == 500.0 and not p.saturated
    counts[41] = FULL_SCALE
    assert measure_probe(counts, dark, 20, 1, snr=float("nan")).saturated


def test_next_probe_follows_the_last_acquisition() -> None:
    assert next_probe_ms(None, TARGET, LIMITS) == TARGET.probe_ms
    assert next_probe_ms(Plan("acquire", 40, 1, 20.0, "snr"), TARGET, LIMITS) == 10
    assert next_probe_ms(Plan("acquire", 5000, 1, 20.0, "budget"), TARGET, LIMITS) == 10 * TARGET.probe_ms


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="max_peak_fraction"):
        ExposureTarget(max_peak_fraction=1.2)
    with pytest.raises(ConfigError, match="max_acquisition_ms"):
        ExposureLimits(integration_min_ms=10, max_acquisition_ms=5)


def test_closed_loop_on_the_physics_model_over_30x_brightness() -> None:
    from firmware_bridge.library import load_library
    from firmware_bridge.physics import InstrumentModel, fluorescence_background, simulate_counts

    rng = np.random.default_rng(3)
    base = InstrumentModel.default(signal_e_per_ms=60.0)
    dark = simulate_counts(np.zeros(2), np.zeros(2), base, rng, dark=True).astype(np.float64)

    def snr_of(c: np.ndarray) -> float:
        y, _ = despike(c.astype(np.float64) - dark)
        return signal_to_noise(remove_baseline(y))

    sample = load_library(None, None)[0]
    snrs = []
    for factor in np.geomspace(1 / 5.5, 5.5, 6):  # 30x
        model = replace(base, signal_e_per_ms=60.0 * factor)
        fluo = fluorescence_background(model, rng)
        t, spent, plan = 80, 0, None
        for _ in range(5):
            c = simulate_counts(
                sample.shift_cm1, sample.intensity, replace(model, integration_ms=t), rng, fluorescence=fluo
            )
            spent += t
            plan = plan_exposure(measure_probe(c, dark, t, 1, snr_of(c)), LIMITS, TARGET, spent_ms=spent)
            if plan.kind == "acquire":
                break
            t = plan.integration_ms
        assert plan is not None and plan.kind == "acquire"
        final = simulate_counts(
            sample.shift_cm1,
            sample.intensity,
            replace(model, integration_ms=plan.integration_ms, averages=plan.averages),
            rng,
            fluorescence=fluo,
        )
        assert final.max() < FULL_SCALE
        assert plan.total_ms + spent <= LIMITS.max_acquisition_ms
        snrs.append(snr_of(final))
    assert min(snrs) >= 12.0, snrs  # target 20, estimator scatter; the gate needs 8


def test_a_spectrum_far_below_its_prediction_or_saturated_is_not_confirmed() -> None:
    from edge.exposure import confirms

    plan = Plan("acquire", 100, 1, 20.0, "snr")
    assert confirms(plan, probe(snr=18.0))
    assert not confirms(plan, probe(snr=6.0))  # the spot changed after the probe
    assert not confirms(plan, probe(saturated=True))
    assert confirms(Plan("acquire", 5000, 1, None, "budget"), probe(snr=3.0))
