"""Replay and requests end to end: real emulator -> daemon -> real Mosquitto -> late consumer."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import load_config, parse_broker_url
from edge.daemon import run
from edge.result import Result
from firmware_bridge.emulator import Emulator, EmulatorConfig


class Client:
    """A real MQTT 5 client recording every message on the topics it subscribes."""

    def __init__(self, url: str, *topics: str) -> None:
        b = parse_broker_url(url)
        self.messages: list[tuple[str, bytes, Any]] = []
        self.cond = threading.Condition()
        sub = threading.Event()
        self.c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"t-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.c.on_subscribe = lambda *a: sub.set()
        self.c.on_message = self._on
        self.c.connect(b.host, b.port)
        self.c.loop_start()
        assert sub.wait(10)

    def _on(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append((m.topic, bytes(m.payload), m.properties))
            self.cond.notify_all()

    def wait(self, pred: Any, timeout_s: float = 30) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: pred(self.messages), timeout_s)

    def on(self, topic: str) -> list[bytes]:
        with self.cond:
            return [p for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_late_consumer_recovers_every_missed_result_with_one_replay_and_bad_requests_change_nothing(
    tmp_path: Path, mosquitto: Any
) -> None:
    emu = Emulator(EmulatorConfig(seed=4))
    port = emu.start()
    cfg = load_config(
        None,
        env={},
        overrides={
            "port": port,
            "broker": mosquitto.url,
            "device_id": "rp",
            "prefix": "test",
            "outbox_path": tmp_path / "outbox.sqlite",
            "integration_ms": 100,
            "request_rate_per_s": 1.0,
            "request_burst": 8,
        },
    )
    early = Client(mosquitto.url, "test/rp/result")  # the ground truth of what was published
    stop = threading.Event()
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(run(cfg, stop=stop)))
    t.start()
    late = None
    try:
        assert early.wait(lambda ms: len(ms) >= 12, 60)
        late = Client(mosquitto.url, "test/rp/result", "test/rp/response/#", "late/replies")
        missed = {Result.from_json(p).seq: p for p in early.on("test/rp/result")}
        # One replay from seq 1, as MQTT 5 with a response topic and correlation data too.
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "late/replies"
        props.CorrelationData = b"corr-1"
        late.c.publish(
            "test/rp/request/replay", json.dumps({"since_seq": 1, "transaction": "r1"}), qos=1, properties=props
        )
        assert late.wait(lambda ms: any(t == "test/rp/response/replay" for t, _, _ in ms))
        resp = json.loads(late.on("test/rp/response/replay")[0])
        assert resp["status"] == "ok" and resp["transaction"] == "r1", resp
        assert resp["data"]["first_seq"] == 1 and resp["data"]["count"] >= len(missed) - 4, resp
        assert resp["data"]["not_held_count"] == 0
        direct = [(p, pr) for t, p, pr in late.messages if t == "late/replies"]
        assert late.wait(lambda ms: any(t == "late/replies" for t, _, _ in ms))
        direct = [(p, pr) for t, p, pr in late.messages if t == "late/replies"]
        assert json.loads(direct[0][0]) == resp and direct[0][1].CorrelationData == b"corr-1"
        last = resp["data"]["last_seq"]

        def got_all(ms: list[Any]) -> bool:
            seqs = {Result.from_json(p).seq for t, p, _ in ms if t == "test/rp/result"}
            return set(range(1, last + 1)) <= seqs

        assert late.wait(got_all, 30)
        # Byte-identical: each replayed copy equals the first copy the early consumer got.
        first_copy: dict[int, bytes] = {}
        for p in early.on("test/rp/result"):
            first_copy.setdefault(Result.from_json(p).seq, p)
        replayed = {}
        for p in late.on("test/rp/result"):
            replayed.setdefault(Result.from_json(p).seq, p)
        for seq in range(1, last + 1):
            assert replayed[seq] == first_copy[seq], seq

        # Bad requests: errors, and nothing changes (status shows the same config).
        n_before = len(early.on("test/rp/result"))
        bad = {
            "replay": b"{oops",
            "reboot": b"{}",
            "set": b'{"averages": 2, "transaction": "s"}',
        }
        for cmd, payload in bad.items():
            late.c.publish(f"test/rp/request/{cmd}", payload, qos=1)
        late.c.publish("test/rp/request/replay", b'{"since_seq": 0, "transaction": 5}', qos=1)
        late.c.publish("test/rp/request/replay", b'{"since_seq": 1, "speed": 9}', qos=1)
        for topic in ("replay", "reboot", "set"):
            assert late.wait(lambda ms, tp=topic: any(t == f"test/rp/response/{tp}" for t, _, _ in ms))
        assert late.wait(lambda ms: sum(t == "test/rp/response/replay" for t, _, _ in ms) >= 4)
        errs = [json.loads(p) for p in late.on("test/rp/response/replay")[1:]]
        assert all(e["status"] == "error" for e in errs), errs
        assert json.loads(late.on("test/rp/response/set")[0])["error"].startswith("command 'set' is not enabled")
        assert json.loads(late.on("test/rp/response/reboot")[0])["error"].startswith("unknown command")
        # A flood: 200 status requests; most are refused by the rate limit, results keep flowing.
        for i in range(200):
            late.c.publish("test/rp/request/status", json.dumps({"transaction": i}), qos=0)
        assert early.wait(lambda ms: len(ms) >= n_before + 20, 30), "results stalled by a request flood"
        assert late.wait(lambda ms: sum(t == "test/rp/response/status" for t, _, _ in ms) >= 20)
        statuses = [json.loads(p) for p in late.on("test/rp/response/status")]
        assert any(s["status"] == "error" and "rate limited" in s["error"] for s in statuses)
        ok = [s for s in statuses if s["status"] == "ok"]
        assert ok and ok[0]["data"]["device_id"] == "rp" and ok[0]["data"]["acquisition"]["averages"] == 1
    finally:
        stop.set()
        t.join(60)
        emu.stop()
        early.close()
        if late is not None:
            late.close()
    assert rc == [0]
