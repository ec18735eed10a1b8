"""A fleet on one real Mosquitto: two daemons, a consumer group of two shared subscribers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from brokers import Received, Subscriber
from daemon_thread import DaemonThread

from edge.result import Result
from firmware_bridge.emulator import EmulatorConfig


class Member(Subscriber):
    """A member of a consumer group: keeps the results it is given."""

    def __init__(self, url: str, topic: str) -> None:
        self.got: list[Result] = []
        super().__init__(url, topic, mqtt5=True, client_id_prefix="m")

    def receive(self, msg: Received) -> None:
        self.got.append(Result.from_json(msg.payload))


def test_two_daemons_shared_subscription_group_gets_each_result_once_and_replay_is_per_device(
    tmp_path: Path, mosquitto: Any, wait_until: Any
) -> None:
    group = [Member(mosquitto.url, "$share/g1/fleet/+/result") for _ in range(2)]
    devices = [
        DaemonThread(tmp_path / dev, mosquitto.url, EmulatorConfig(seed=10 + i), device_id=dev, prefix="fleet")
        for i, dev in enumerate(("dev-a", "dev-b"))
    ]

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
        asker = Subscriber(mosquitto.url, "fleet/dev-a/response/replay", mqtt5=True)
        asker.publish("fleet/dev-a/request/replay", b'{"since_seq": 1, "until_seq": 5}', qos=1)
        wait_until(lambda: bool(asker.on("fleet/dev-a/response/replay")), 20, "replay response")
        asker.close()
        resp = json.loads(asker.on("fleet/dev-a/response/replay")[0])
        assert resp["status"] == "ok" and resp["data"]["count"] == 5, resp
        wait_until(
            lambda: all(sum(r.device_id == "dev-a" and r.seq == q for r in all_got()) >= 2 for q in range(1, 6)),
            20,
            "dev-a's seq 1-5 replayed to the group",
        )
        b_dups = [r.id for r in all_got() if r.device_id == "dev-b"]
        assert len(b_dups) == len(set(b_dups)) and len(b_dups) >= b_before  # dev-b not replayed
        for d in devices:
            d.stop(60)  # stop acquisition; the daemon drains and exits
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
        for d in devices:
            d.stop(60)
        for m in group:
            m.close()
