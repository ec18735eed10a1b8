"""Calibration health, sans I/O: a reference measurement -> the retained `health` message.

The daemon measures the configured reference (edge.calibrate.measure_reference, the same code
as `edge calibrate`) on request or every `calibration_check_interval_s`, and publishes the
verdict retained on `<prefix>/<device_id>/health`. The measurement is on the device's own
shift axis, so `shift_offset_cm1` is the whole error of the device; `drift_cm1` is what is
left after the offset in use. A new offset is applied only with `calibration_apply = true`,
and only from a measurement whose lines agree (residual within MAX_RESIDUAL_CM1): a bad
polynomial is not something an offset can fix.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from edge.calibrate import MAX_RESIDUAL_CM1
from edge.calibration import CalibrationCheck

HEALTH_SCHEMA = "raman-edge/health/1"
HealthStatus = Literal["ok", "drift", "error"]


@dataclass(frozen=True)
class Health:
    device_id: str
    checked_at: str  # UTC ISO 8601, ms, Z
    reference: str
    status: HealthStatus
    shift_offset_cm1: float | None  # measured on the device's own axis (what edge calibrate reports)
    residual_cm1: float | None  # RMS disagreement of the lines around that offset
    lines_found: int
    lines_total: int
    offset_in_use_cm1: float  # shift_offset_cm1 applied to results when the check ran
    drift_cm1: float | None  # measured - in use: the error results still carry
    limit_cm1: float  # calibration_drift_limit_cm1
    applied: bool  # the measured offset replaced the one in use (calibration_apply)
    error: str | None  # why no offset could be measured (status "error")
    schema: str = HEALTH_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"schema": d.pop("schema"), **d}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()


def iso_utc(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def assess(
    check: CalibrationCheck | None,
    *,
    device_id: str,
    reference: str,
    checked_at: datetime,
    offset_in_use_cm1: float,
    limit_cm1: float,
    apply: bool,
    error: str | None = None,
) -> Health:
    """The verdict: `ok` when the offset in use is within `limit_cm1` of the measured one and the
    lines agree; `drift` otherwise; `error` when the reference was not measured (`error` says why)."""
    common = dict(
        device_id=device_id,
        checked_at=iso_utc(checked_at),
        reference=reference,
        offset_in_use_cm1=round(offset_in_use_cm1, 2),
        limit_cm1=limit_cm1,
    )
    if check is None:
        return Health(
            **common,  # type: ignore[arg-type]
            status="error",
            shift_offset_cm1=None,
            residual_cm1=None,
            lines_found=0,
            lines_total=0,
            drift_cm1=None,
            applied=False,
            error=error or "no measurement",
        )
    drift = round(check.offset_cm1 - offset_in_use_cm1, 2)
    lines_agree = check.residual_cm1 <= MAX_RESIDUAL_CM1
    status: HealthStatus = "ok" if abs(drift) <= limit_cm1 and lines_agree else "drift"
    applied = apply and status == "drift" and lines_agree
    return Health(
        **common,  # type: ignore[arg-type]
        status=status,
        shift_offset_cm1=check.offset_cm1,
        residual_cm1=check.residual_cm1,
        lines_found=check.n_found,
        lines_total=len(check.lines),
        drift_cm1=drift,
        applied=applied,
        error=None
        if lines_agree
        else f"the lines disagree by {check.residual_cm1:.2f} cm-1 (> {MAX_RESIDUAL_CM1}): the wavelength "
        "polynomial is off; an offset cannot correct it",
    )
