"""The calibration-health verdict (edge/health.py), without a device."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from edge.calibration import CalibrationCheck, LineMatch
from edge.health import assess

AT = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


def check(offset: float, residual: float) -> CalibrationCheck:
    return CalibrationCheck("polystyrene", offset, residual, (LineMatch(1001.4, 1001.4 + offset, 1.0),))


def verdict(c: CalibrationCheck | None, in_use: float = 0.0, apply: bool = False, error: str | None = None):  # noqa: ANN201
    return assess(
        c,
        device_id="d",
        reference="polystyrene",
        checked_at=AT,
        offset_in_use_cm1=in_use,
        limit_cm1=2.0,
        apply=apply,
        error=error,
    )


def test_ok_within_the_limit_of_the_offset_in_use() -> None:
    h = verdict(check(6.1, 0.3), in_use=5.0)
    assert h.status == "ok" and h.drift_cm1 == 1.1 and not h.applied and h.error is None
    assert h.checked_at == "2025-01-02T03:04:05.678Z"


def test_drift_is_reported_and_applied_only_when_configured() -> None:
    assert verdict(check(6.1, 0.3)).status == "drift" and not verdict(check(6.1, 0.3)).applied
    assert verdict(check(6.1, 0.3), apply=True).applied


def test_disagreeing_lines_are_drift_never_applied() -> None:
    h = verdict(check(0.5, 3.0), apply=True)
    assert h.status == "drift" and not h.applied and "polynomial" in (h.error or "")


def test_no_measurement_is_an_error_and_the_payload_is_json() -> None:
    h = verdict(None, error="found 1 of 5 polystyrene lines")
    assert h.status == "error" and h.shift_offset_cm1 is None and "1 of 5" in (h.error or "")
    body = json.loads(h.to_json())
    assert body["schema"] == "raman-edge/health/1" and list(body)[0] == "schema"
