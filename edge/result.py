"""The result payload published on `<prefix>/<device_id>/result` (schema `raman-edge/result/2`).

`raman-edge/result/1` (no `match`, no `mixture`) is superseded; `from_dict` still reads it
(an outbox written by an older daemon), with `match` and `mixture` null.

One frozen dataclass per JSON object. `Result.to_json()` is the only encoder and
`Result.from_json()` the only decoder, so docs/result.schema.json, the publisher and the
`edge watch` subscriber cannot drift apart. Any change to the field set bumps `SCHEMA_ID`.

`seq` and `id` are stamped by the outbox at commit time (`Result.stamped`); the daemon builds
results with the defaults and never invents them, because only the outbox knows the next
persisted sequence number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from datetime import datetime, timezone
from typing import Any, Literal

from edge.errors import PayloadError, UsageError

SCHEMA_ID = "raman-edge/result/2"
SUPERSEDED_IDS = ("raman-edge/result/1",)
Status = Literal["ok", "rejected"]


@dataclass(frozen=True, kw_only=True)
class Instrument:
    serial: str
    laser_nm: float
    integration_ms: float
    #: The device's own spectrum counter (SPECTRUM.seq): joins a result to the raw frame or
    #: to the emulator's ground-truth log. None for offline/file input.
    frame_seq: int | None = None
    #: The calibration correction applied to the shift axis (config `shift_offset_cm1`).
    shift_offset_cm1: float = 0.0
    #: Exposures averaged into the spectrum (the frame's own count); None for file input.
    averages: int | None = None
    #: The integration time and averages were chosen by auto-exposure for this spectrum.
    auto_exposure: bool = False


@dataclass(frozen=True, kw_only=True)
class ModelRef:
    name: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class Candidate:
    mineral: str
    p: float  # softmax probability, 0..1

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise UsageError(f"candidate {self.mineral!r}: p={self.p} is outside 0..1")


@dataclass(frozen=True, kw_only=True)
class Match:
    """The closest reference spectrum: provenance a geologist can look up in RRUFF."""

    mineral: str
    rruff_id: str
    similarity: float  # best correlation over the lag window under the bundle's view (edge.corr_view), -1..1


@dataclass(frozen=True, kw_only=True)
class MixtureComponent:
    mineral: str
    fraction: float  # of the fitted intensity, 0..1; the components sum to 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise UsageError(f"mixture {self.mineral!r}: fraction={self.fraction} is outside 0..1")


@dataclass(frozen=True, kw_only=True)
class Peak:
    """One band that drove the decision; `edge.deconv.top_peaks` returns these, so the payload
    carries the deconvnet's peaks as they are."""

    shift_cm1: float  # Raman shift of the peak centre, cm^-1
    relevance: float  # deconvnet relevance, normalised so the strongest peak is 1
    intensity: float  # preprocessed (normalised) intensity at the peak, dimensionless


@dataclass(frozen=True, kw_only=True)
class Quality:
    #: strongest band over the pixel noise sigma (1.4826 * MAD of first differences / sqrt 2),
    #: after baseline removal (edge.preprocess.signal_to_noise); dimensionless
    snr: float | None = None
    coverage: float | None = None  # fraction of the model's shift grid covered by the spectrum
    n_spikes: int = 0  # cosmic-ray spikes removed by despiking
    saturated: bool = False  # any raw pixel at the detector's full scale
    #: height (peak-to-peak) of the removed background over the strongest band after removal;
    #: None for already-corrected input (files), where no background was removed
    fluorescence_ratio: float | None = None


@dataclass(frozen=True, kw_only=True)
class Latency:
    """Milliseconds per stage. `None` means the stage did not run (e.g. classify on a reject).

    `commit` and `publish` are filled by the publisher when a copy is sent: `publish` is the
    time the result waited in the outbox before this copy went to the network, so it includes
    any time the broker was unreachable. `total` is the sum of every stage that ran.
    """

    decode: float | None = None
    preprocess: float | None = None
    classify: float | None = None
    deconv: float | None = None
    commit: float | None = None
    publish: float | None = None
    total: float | None = None

    def with_sent(self, *, commit_ms: float | None, publish_ms: float) -> Latency:
        stages = (self.decode, self.preprocess, self.classify, self.deconv, commit_ms, publish_ms)
        return replace(
            self,
            commit=commit_ms,
            publish=publish_ms,
            total=sum(s for s in stages if s is not None),
        )


@dataclass(frozen=True, kw_only=True)
class Result:
    device_id: str
    acquired_at: datetime  # timezone-aware; encoded as UTC ISO 8601 with a trailing Z
    instrument: Instrument
    model: ModelRef
    status: Status
    reason: str | None = None  # why a spectrum was rejected; None when status == "ok"
    top: tuple[Candidate, ...] = ()  # best first
    unknown: bool = False  # fused evidence below the bundle's threshold
    match: Match | None = None  # closest library reference; None without a library or when rejected
    mixture: tuple[MixtureComponent, ...] | None = None  # two-mineral answer, largest first
    peaks: tuple[Peak, ...] = ()
    quality: Quality = field(default_factory=Quality)
    latency_ms: Latency = field(default_factory=Latency)
    seq: int = 0  # stamped by the outbox; 0 means "not committed yet"
    id: str = ""  # stamped by the outbox; stable across redeliveries
    schema: str = SCHEMA_ID

    def __post_init__(self) -> None:
        if self.schema != SCHEMA_ID:
            raise UsageError(f"result schema {self.schema!r} is not {SCHEMA_ID!r}")
        if self.status not in ("ok", "rejected"):
            raise UsageError(f"result status {self.status!r} is not 'ok' or 'rejected'")
        if self.status == "rejected" and not self.reason:
            raise UsageError("a rejected result needs a reason")
        if self.acquired_at.tzinfo is None:
            raise UsageError("acquired_at must be timezone-aware (UTC)")
        ps = [c.p for c in self.top]
        if ps != sorted(ps, reverse=True):
            raise UsageError("top candidates must be sorted best first")
        # Tuples keep the dataclass hashable/immutable even when built from lists.
        object.__setattr__(self, "top", tuple(self.top))
        object.__setattr__(self, "peaks", tuple(self.peaks))
        if self.mixture is not None:
            object.__setattr__(self, "mixture", tuple(self.mixture))
            if abs(sum(m.fraction for m in self.mixture) - 1.0) > 1e-3:
                raise UsageError("mixture fractions must sum to 1")

    def stamped(self, *, seq: int, id: str) -> Result:
        return replace(self, seq=seq, id=id)

    def to_dict(self) -> dict[str, Any]:
        d = _plain(self)
        d["acquired_at"] = _iso_utc(self.acquired_at)
        ordered = {"schema": d.pop("schema"), "id": d.pop("id"), "device_id": d.pop("device_id")}
        ordered.update(d)
        return ordered

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes | bytearray) -> Result:
        try:
            obj = json.loads(text)
        except (ValueError, UnicodeDecodeError) as err:
            raise PayloadError(f"result payload is not JSON: {err}") from None
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: Any) -> Result:
        if not isinstance(obj, Mapping):
            raise PayloadError("result payload is not a JSON object")
        old = obj.get("schema") in SUPERSEDED_IDS
        if obj.get("schema") != SCHEMA_ID and not old:
            raise PayloadError(f"result schema {obj.get('schema')!r} is not {SCHEMA_ID!r}")
        try:
            match = None if old or obj["match"] is None else Match(**obj["match"])
            mix = None if old or obj["mixture"] is None else tuple(MixtureComponent(**m) for m in _seq(obj["mixture"]))
            return cls(
                id=_str(obj["id"]),
                device_id=_str(obj["device_id"]),
                seq=int(obj["seq"]),
                acquired_at=_parse_iso(obj["acquired_at"]),
                instrument=Instrument(**obj["instrument"]),
                model=ModelRef(**obj["model"]),
                status=obj["status"],
                reason=obj["reason"],
                top=tuple(Candidate(**c) for c in _seq(obj["top"])),
                unknown=bool(obj["unknown"]),
                match=match,
                mixture=mix,
                peaks=tuple(Peak(**p) for p in _seq(obj["peaks"])),
                quality=Quality(**obj["quality"]),
                latency_ms=Latency(**obj["latency_ms"]),
            )
        except PayloadError:
            raise
        except (KeyError, TypeError, ValueError, UsageError) as err:
            raise PayloadError(f"result payload does not match {SCHEMA_ID}: {err!r}") from None


def _iso_utc(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(text: Any) -> datetime:
    t = datetime.fromisoformat(_str(text).replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise PayloadError(f"acquired_at {text!r} has no timezone")
    return t


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise PayloadError(f"expected a string, got {v!r}")
    return v


def _seq(v: Any) -> Sequence[Mapping[str, Any]]:
    if not isinstance(v, list):
        raise PayloadError(f"expected a list, got {type(v).__name__}")
    return v


_FIELDS: dict[type, tuple[str, ...]] = {}


def _plain(v: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists, non-finite floats -> None, in one pass.

    What `dataclasses.asdict` gives, with JSON's lack of NaN/Infinity handled (an undefined
    metric, e.g. the SNR of a flat spectrum, is sent as null), without asdict's deep copy of
    every leaf (0.38 ms of a result's 1.1 ms commit at 1,360 pixels, bench/profile_daemon.py)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if v is None or isinstance(v, str | int):
        return v
    names = _FIELDS.get(type(v))
    if names is None and is_dataclass(v):
        names = _FIELDS[type(v)] = tuple(f.name for f in fields(v))
    if names is not None:
        return {n: _plain(getattr(v, n)) for n in names}
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v
