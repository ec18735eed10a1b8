"""`set` on a running daemon over the real Mosquitto: applied from the next spectrum, bad values refused."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from test_replay import Client

from edge.config import load_config
from edge.daemon import run
from edge.result import Result
from firmware_bridge.emulator import Emulator, EmulatorConfig


def test_set_changes_integration_and_bad_values_change_nothing(tmp_path: Path, mosquitto: Any) -> None:
    emu = Emulator(EmulatorConfig(seed=6))
    cfg = load_config(
        None,
        env={},
        overrides={
            "port": emu.start(),
            "broker": mosquitto.url,
            "device_id": "st",
            "prefix": "test",
            "outbox_path": tmp_path / "outbox.sqlite",
            "integration_ms": 100,
            "allow_requests": ("status", "set"),
        },
    )
    c = Client(mosquitto.url, "test/st/result", "test/st/response/#")
    stop = threading.Event()
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(run(cfg, stop=stop)))
    t.start()

    def integrations() -> list[float]:
        return [Result.from_json(p).instrument.integration_ms for p in c.on("test/st/result")]

    def ask(body: dict[str, Any], n: int) -> dict[str, Any]:
        c.c.publish("test/st/request/set", json.dumps(body), qos=1)
        assert c.wait(lambda ms: sum(tp == "test/st/response/set" for tp, _, _ in ms) >= n)
        return json.loads(c.on("test/st/response/set")[n - 1])

    try:
        assert c.wait(lambda ms: len(ms) >= 3, 60)
        assert set(integrations()) == {100.0}
        bad = ask({"integration_ms": 0, "transaction": 1}, 1)
        assert bad["status"] == "error" and "minimum" in bad["error"] and bad["transaction"] == 1
        ae = ask({"auto_exposure": "yes"}, 2)
        assert ae["status"] == "error" and "boolean" in ae["error"]
        n_before = len(integrations())
        assert c.wait(lambda ms: len(integrations()) >= n_before + 3, 30)
        assert set(integrations()) == {100.0}, "a refused set changed the acquisition"
        ok = ask({"integration_ms": 50, "transaction": "s"}, 3)
        assert ok["status"] == "ok" and ok["data"]["integration_ms"] == 50, ok
        assert c.wait(lambda ms: integrations()[-3:] == [50.0] * 3, 30), integrations()[-5:]
        c.c.publish("test/st/request/status", b"{}", qos=1)
        assert c.wait(lambda ms: any(tp == "test/st/response/status" for tp, _, _ in ms))
        assert json.loads(c.on("test/st/response/status")[0])["data"]["acquisition"]["integration_ms"] == 50
    finally:
        stop.set()
        t.join(60)
        emu.stop()
        c.close()
    assert rc == [0]
