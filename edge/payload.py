"""An `Analysis` as payload values: the fields the daemon's MQTT result and `edge classify
--json` share (status, reason, top, unknown, match, mixture, peaks, quality; docs/mqtt.md).

Mapped in this one place so that the two outputs cannot drift apart; each adds only what is
its own (the daemon: device, instrument, model, latency; the offline command: file name and
whether the file was read as corrected).
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

from edge.pipeline import Analysis
from edge.result import Candidate, Match, MixtureComponent, Quality


def findings(a: Analysis) -> dict[str, Any]:
    """`Result` keyword arguments that come from the analysis alone, in payload order."""
    return {
        "status": "ok" if a.status == "ok" else "rejected",
        "reason": a.reason,
        # Softmax outputs can round a hair outside 0..1 (int8 dequantisation); the type refuses that.
        "top": tuple(Candidate(mineral=m, p=min(1.0, max(0.0, float(p)))) for m, p in a.top),
        "unknown": a.unknown,
        "match": None
        if a.match is None
        else Match(mineral=a.match.mineral, rruff_id=a.match.rruff_id, similarity=a.match.similarity),
        "mixture": None if a.mixture is None else tuple(MixtureComponent(mineral=m, fraction=f) for m, f in a.mixture),
        "peaks": tuple(a.peaks),  # already the payload's Peak (edge.deconv returns edge.result.Peak)
        "quality": Quality(
            snr=a.snr,
            coverage=a.coverage,
            n_spikes=a.n_spikes,
            saturated=a.saturated,
            fluorescence_ratio=a.fluorescence_ratio,
        ),
    }


def findings_json(a: Analysis) -> dict[str, Any]:
    """`findings` as JSON-ready values: objects as dicts, arrays as lists."""
    return {k: _plain(v) for k, v in findings(a).items()}


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if is_dataclass(v) and not isinstance(v, type):
        return asdict(v)
    return v
