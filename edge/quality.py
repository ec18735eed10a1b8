"""Thresholds of the quality gate, with why each default is what it is.

Kept apart from the pipeline so the configuration can name them without importing NumPy
or a TFLite runtime. Every key is also a daemon configuration key (`min_snr` in edge.toml,
`RAMAN_EDGE_MIN_SNR`), so an operator tunes the gate for an instrument without code.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.errors import ConfigError


@dataclass(frozen=True)
class QualityLimits:
    # Strongest band over pixel noise after baseline removal. Below ~8 the emulator sweep
    # (bench/robustness, SNR 2) is right about 1 time in 4; at 10 it is right 3 times in 4.
    min_snr: float = 8.0
    # Background height over the strongest band. arPLS recovers bands under a background
    # 20x their height (72 % top-1 in bench/robustness); 200x leaves little but shot noise.
    max_fluorescence_ratio: float = 200.0
    # Cosmic-ray pixels replaced by the despiker in one spectrum. Despiking works: at 10
    # rays per frame top-1 is 85.5 % with no limit, and a limit of 12 rejected 64 % of those
    # frames (bench/robustness, cosmic). 50 (~5 % of a 1,024-pixel detector) only stops
    # frames that look like a failing detector or a light leak.
    max_spikes: int = 50
    # Fraction of the model's 150-1,509 cm-1 grid the spectrum covers.
    min_coverage: float = 0.3
    # Any saturated pixel distorts band ratios.
    max_saturated_pixels: int = 0

    def __post_init__(self) -> None:
        if not self.min_snr >= 0 or not self.max_fluorescence_ratio > 0:
            raise ConfigError(f"quality limits: min_snr >= 0 and max_fluorescence_ratio > 0, got {self}")
        if self.max_spikes < 0 or self.max_saturated_pixels < 0:
            raise ConfigError(f"quality limits: max_spikes and max_saturated_pixels must be >= 0, got {self}")
        if not 0.0 <= self.min_coverage <= 1.0:
            raise ConfigError(f"min_coverage must be within 0..1, got {self.min_coverage}")
