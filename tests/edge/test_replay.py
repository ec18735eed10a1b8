"""Replay and requests end to end: real emulator -> daemon -> real Mosquitto -> late consumer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from brokers import Subscriber
from daemon_thread import DaemonThread
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.result import Result
from firmware_bridge.emulator import EmulatorConfig


def test_late_consumer_recovers_every_missed_result_with_one_replay_and_bad_requests_change_nothing(
    tmp_path: Path, mosquitto: Any
) -> None:
    early = Subscriber(mosquitto.url, "test/rp/result", mqtt5=True)  # the ground truth of what was published
    device = DaemonThread(
        tmp_path, mosquitto.url, EmulatorConfig(seed=4), device_id="rp", request_rate_per_s=1.0, request_burst=8
    )
    late = None
    try:
        assert early.wait_for(lambda ms: len(ms) >= 12, 60)
        late = Subscriber(mosquitto.url, "test/rp/result", "test/rp/response/#", "late/replies", mqtt5=True)
        missed = {Result.from_json(p).seq: p for p in early.on("test/rp/result")}
        # One replay from seq 1, as MQTT 5 with a response topic and correlation data too.
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "late/replies"
        props.CorrelationData = b"corr-1"
        late.publish(
            "test/rp/request/replay", json.dumps({"since_seq": 1, "transaction": "r1"}), qos=1, properties=props
        )
        assert late.wait_for(lambda ms: any(m.topic == "test/rp/response/replay" for m in ms), 30)
        resp = json.loads(late.on("test/rp/response/replay")[0])
        assert resp["status"] == "ok" and resp["transaction"] == "r1", resp
        assert resp["data"]["first_seq"] == 1 and resp["data"]["count"] >= len(missed) - 4, resp
        assert resp["data"]["not_held_count"] == 0
        direct = [(m.payload, m.properties) for m in late.messages if m.topic == "late/replies"]
        assert late.wait_for(lambda ms: any(m.topic == "late/replies" for m in ms), 30)
        direct = [(m.payload, m.properties) for m in late.messages if m.topic == "late/replies"]
        assert json.loads(direct[0][0]) == resp and direct[0][1].CorrelationData == b"corr-1"
        last = resp["data"]["last_seq"]

        def got_all(ms: list[Any]) -> bool:
            seqs = {Result.from_json(m.payload).seq for m in ms if m.topic == "test/rp/result"}
            return set(range(1, last + 1)) <= seqs

        assert late.wait_for(got_all, 30)
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
            late.publish(f"test/rp/request/{cmd}", payload, qos=1)
        late.publish("test/rp/request/replay", b'{"since_seq": 0, "transaction": 5}', qos=1)
        late.publish("test/rp/request/replay", b'{"since_seq": 1, "speed": 9}', qos=1)
        for topic in ("replay", "reboot", "set"):
            assert late.wait_for(lambda ms, tp=topic: any(m.topic == f"test/rp/response/{tp}" for m in ms), 30)
        assert late.wait_for(lambda ms: sum(m.topic == "test/rp/response/replay" for m in ms) >= 4, 30)
        errs = [json.loads(p) for p in late.on("test/rp/response/replay")[1:]]
        assert all(e["status"] == "error" for e in errs), errs
        assert json.loads(late.on("test/rp/response/set")[0])["error"].startswith("command 'set' is not enabled")
        assert json.loads(late.on("test/rp/response/reboot")[0])["error"].startswith("unknown command")
        # A flood: 200 status requests; most are refused by the rate limit, results keep flowing.
        for i in range(200):
            late.publish("test/rp/request/status", json.dumps({"transaction": i}), qos=0)
        assert early.wait_for(lambda ms: len(ms) >= n_before + 20, 30), "results stalled by a request flood"
        assert late.wait_for(lambda ms: sum(m.topic == "test/rp/response/status" for m in ms) >= 20, 30)
        statuses = [json.loads(p) for p in late.on("test/rp/response/status")]
        assert any(s["status"] == "error" and "rate limited" in s["error"] for s in statuses)
        ok = [s for s in statuses if s["status"] == "ok"]
        assert ok and ok[0]["data"]["device_id"] == "rp" and ok[0]["data"]["acquisition"]["averages"] == 1
    finally:
        rc = device.stop()
        early.close()
        if late is not None:
            late.close()
    assert rc == 0
