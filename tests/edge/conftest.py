"""Edge fixtures: result factory, a real MQTT subscriber (tests/brokers.py), a JSON Schema check."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from brokers import Subscriber

from edge.config import parse_broker_url
from edge.publisher import MqttSettings
from edge.result import Candidate, Instrument, Latency, ModelRef, Peak, Quality, Result

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "result.schema.json"


def build_result(i: int = 0, *, device_id: str = "dev1", status: str = "ok") -> Result:
    return Result(
        device_id=device_id,
        acquired_at=datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc),
        instrument=Instrument(serial="WP-00123", laser_nm=785.0, integration_ms=1000.0),
        model=ModelRef(name="fmcnn-int8-v1", sha256="ab" * 32),
        status=status,  # type: ignore[arg-type]
        reason=None if status == "ok" else "saturated",
        top=(Candidate(mineral="quartz", p=0.91), Candidate(mineral="calcite", p=0.05)) if status == "ok" else (),
        unknown=False,
        peaks=(Peak(shift_cm1=464.0, relevance=1.0, intensity=0.97),) if status == "ok" else (),
        quality=Quality(snr=42.0 + i, coverage=0.98, n_spikes=1, fluorescence_ratio=0.2),
        latency_ms=Latency(decode=0.4, preprocess=3.1, classify=5.2, deconv=2.0, total=11.0),
    )


def build_settings(url: str, *, device_id: str = "dev1", **kw: Any) -> MqttSettings:
    kw.setdefault("reconnect_max_s", 2)
    kw.setdefault("prefix", "test")
    return MqttSettings(broker=parse_broker_url(url), device_id=device_id, **kw)


MakeResult = Callable[..., Result]
MakeSettings = Callable[..., MqttSettings]


@pytest.fixture
def make_result() -> MakeResult:
    """`make_result(i=0, device_id="dev1", status="ok")` -> an unstamped Result."""
    return build_result


@pytest.fixture
def mqtt_settings() -> MakeSettings:
    """`mqtt_settings(url, device_id="dev1", **MqttSettings fields)`, prefix "test"."""
    return build_settings


@pytest.fixture
def subscriber_factory() -> Iterator[Callable[[str, str], Subscriber]]:
    subs: list[Subscriber] = []

    def make(url: str, topic: str) -> Subscriber:
        s = Subscriber(url, topic)
        subs.append(s)
        return s

    yield make
    for s in subs:
        s.close()


@pytest.fixture(scope="session")
def schema_check() -> Callable[[Any], list[str]]:
    """`schema_check(obj)` -> the list of violations of docs/result.schema.json (empty = ok)."""
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return lambda obj: [f"{e.json_path}: {e.message}" for e in validator.iter_errors(obj)]
