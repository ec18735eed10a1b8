"""`set` on a running daemon over the real Mosquitto: applied from the next spectrum, bad values refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from brokers import Subscriber
from daemon_thread import DaemonThread

from edge.result import Result
from firmware_bridge.emulator import EmulatorConfig


def test_set_changes_integration_and_bad_values_change_nothing(tmp_path: Path, mosquitto: Any) -> None:
    c = Subscriber(mosquitto.url, "test/st/result", "test/st/response/#", mqtt5=True)
    device = DaemonThread(
        tmp_path, mosquitto.url, EmulatorConfig(seed=6), device_id="st", allow_requests=("status", "set")
    )

    def integrations() -> list[float]:
        return [Result.from_json(p).instrument.integration_ms for p in c.on("test/st/result")]

    def ask(body: dict[str, Any], n: int) -> dict[str, Any]:
        c.publish("test/st/request/set", json.dumps(body), qos=1)
        assert c.wait_for(lambda ms: sum(m.topic == "test/st/response/set" for m in ms) >= n, 30)
        return json.loads(c.on("test/st/response/set")[n - 1])

    try:
        assert c.wait_for(lambda ms: len(ms) >= 3, 60)
        assert set(integrations()) == {100.0}
        bad = ask({"integration_ms": 0, "transaction": 1}, 1)
        assert bad["status"] == "error" and "minimum" in bad["error"] and bad["transaction"] == 1
        ae = ask({"auto_exposure": "yes"}, 2)
        assert ae["status"] == "error" and "boolean" in ae["error"]
        n_before = len(integrations())
        assert c.wait_for(lambda ms: len(integrations()) >= n_before + 3, 30)
        assert set(integrations()) == {100.0}, "a refused set changed the acquisition"
        ok = ask({"integration_ms": 50, "transaction": "s"}, 3)
        assert ok["status"] == "ok" and ok["data"]["integration_ms"] == 50, ok
        assert c.wait_for(lambda ms: integrations()[-3:] == [50.0] * 3, 30), integrations()[-5:]
        c.publish("test/st/request/status", b"{}", qos=1)
        assert c.wait_for(lambda ms: any(m.topic == "test/st/response/status" for m in ms), 30)
        assert json.loads(c.on("test/st/response/status")[0])["data"]["acquisition"]["integration_ms"] == 50
    finally:
        rc = device.stop(60)
        c.close()
    assert rc == 0
