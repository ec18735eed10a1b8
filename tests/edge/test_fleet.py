"""A fleet on one real Mosquitto: two daemons, a consumer group of two shared subscribers."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import load_config, parse_broker_url
from edge.daemon import run
from edge.result import Result
from firmware_bridge.emulator import Emulator, EmulatorConfig


class Member:
    def __init__(self, url: str, topic: str) -> None:
        b = parse_broker_url(url)
        self.got: list[Result] = []
        self.cond = threading.Condition()
        ready = threading.Event()
        self.c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"m-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
        self.c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_message = self._on
        self.c.connect(b.host, b.port)
        self.c.loop_start()
        assert ready.wait(10)

    def _on(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.got.append(Result.from_json(m.payload))
            self.cond.notify_all()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_two_daemons_shared_subscription_group_gets_each_result_once_and_replay_is_per_device(
    tmp_path: Path, mosquitto: Any, wait_until: Any
) -> None:
    group = [Member(mosquitto.url, "$share/g1/fleet/+/result") for _ in range(2)]
    emus, threads, stops = [], [], []
    for i, dev in enumerate(("dev-a", "dev-b")):
        emu = Emulator(EmulatorConfig(seed=10 + i))
        emus.append(emu)
        cfg = load_config(
            None,
            env={},
            overrides={
                "port": emu.start(),
                "broker": mosquitto.url,
                "device_id": dev,
                "prefix": "fleet",
                "outbox_path": tmp_path / dev / "outbox.sqlite",
                "integration_ms": 100,
            },
        )
        stop = threading.Event()
        stops.append(stop)
        t = threading.Thread(target=run, args=(cfg,), kwargs={"stop": stop})
        t.start()
        threads.append(t)

    def all_got() -> list[Result]:
        return [r for m in group for r in m.got]

    def per_device(results: list[Result]) -> dict[str, set[int]]:
        out: dict[str, set[int]] = {"dev-a": set(), "dev-b": set()}
        for r in results:
            out[r.device_id].add(r.seq)
        return out

    try:
        wait_until(lambda: all(len(s) >= 10 for s in per_device(all_got()).values()), 60, "10 results per device")
        # Replay is per device: asking dev-a re-sends dev-a's results only, to the group.
        b_before = sum(r.device_id == "dev-b" for r in all_got())
        asker = Member(mosquitto.url, "fleet/dev-a/response/replay")  # its payloads are not results
        answers: list[bytes] = []
        asker.c.on_message = lambda _c, _u, m: answers.append(bytes(m.payload))
        asker.c.publish("fleet/dev-a/request/replay", b'{"since_seq": 1, "until_seq": 5}', qos=1)
        wait_until(lambda: bool(answers), 20, "replay response")
        asker.close()
        resp = json.loads(answers[0])
        assert resp["status"] == "ok" and resp["data"]["count"] == 5, resp
        wait_until(
            lambda: all(sum(r.device_id == "dev-a" and r.seq == q for r in all_got()) >= 2 for q in range(1, 6)),
            20,
            "dev-a's seq 1-5 replayed to the group",
        )
        b_dups = [r.id for r in all_got() if r.device_id == "dev-b"]
        assert len(b_dups) == len(set(b_dups)) and len(b_dups) >= b_before  # dev-b not replayed
        for s in stops:
            s.set()  # stop acquisition; the daemons drain and exit
        for t in threads:
            t.join(60)
        results = all_got()
        counts = {d: max(s) for d, s in per_device(results).items()}
        wait_until(
            lambda: all(s == set(range(1, counts[d] + 1)) for d, s in per_device(all_got()).items()),
            20,
            "every result of both devices",
        )
        results = all_got()
        ids = [r.id for r in results]
        # Exactly once per group after de-duplication by id; each member got a share; the only
        # duplicates are the 5 replayed dev-a results (and QoS 1 redeliveries, none expected here).
        assert len(set(ids)) == sum(counts.values())
        assert len(ids) - len(set(ids)) >= 5
        assert all(len(m.got) > 0 for m in group), [len(m.got) for m in group]
        print(f"\nfleet: {len(ids)} deliveries, {len(set(ids))} unique, split {[len(m.got) for m in group]}")
    finally:
        for s in stops:
            s.set()
        for t in threads:
            t.join(60)
        for e in emus:
            e.stop()
        for m in group:
            m.close()
