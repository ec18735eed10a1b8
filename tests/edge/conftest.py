"""Edge fixtures: result factory, a real MQTT subscriber, a minimal JSON Schema check."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

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


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


class Subscriber:
    """A real paho subscriber. Persistent session (clean_session=False) so that, with a
    persistent broker, messages published while it is disconnected are queued for it."""

    def __init__(self, url: str, topic: str) -> None:
        b = parse_broker_url(url)
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(b.host, b.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[Received]], bool], timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: pred(self.messages), timeout_s)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


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
