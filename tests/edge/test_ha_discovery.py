"""Home Assistant discovery on a real Mosquitto: retained configs appear, and go when disabled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.ha_discovery import SENSORS
from edge.outbox import Outbox
from edge.publisher import Publisher


def test_discovery_configs_are_retained_with_availability_and_removed_when_disabled(
    tmp_path: Path, mosquitto: Any, subscriber_factory: Any, mqtt_settings: Any, make_result: Any
) -> None:
    s_on = mqtt_settings(mosquitto.url, device_id="ha.1", ha_discovery=True, ha_prefix="hatest")
    with Publisher(s_on, Outbox(tmp_path / "o.sqlite", device_id="ha.1"), owns_outbox=True) as pub:
        assert pub.wait_connected(10)
        pub.enqueue(make_result(0, device_id="ha.1"))
        assert pub.wait_drained(10)
    # A subscriber arriving afterwards gets the retained configs (the device itself is gone).
    sub = subscriber_factory(mosquitto.url, "hatest/#")
    assert sub.wait_for(lambda ms: len(ms) >= len(SENSORS), 10)
    configs = {m.topic: json.loads(m.payload) for m in sub.messages}
    assert set(configs) == {f"hatest/sensor/raman_edge_ha_1/{o}/config" for o in SENSORS}
    assert all(m.retain for m in sub.messages)
    for cfg in configs.values():
        assert cfg["availability_topic"] == "test/ha.1/status"
        assert cfg["payload_available"] == "online"
        assert cfg["device"]["identifiers"] == ["raman_edge_ha_1"]
        assert cfg["state_topic"] in ("test/ha.1/result", "test/ha.1/stats")
    assert configs["hatest/sensor/raman_edge_ha_1/outbox_backlog/config"]["state_topic"] == "test/ha.1/stats"

    s_off = mqtt_settings(mosquitto.url, device_id="ha.1", ha_discovery=False, ha_prefix="hatest")
    with Publisher(s_off, Outbox(tmp_path / "o.sqlite", device_id="ha.1"), owns_outbox=True) as pub:
        assert pub.wait_connected(10)
        # Empty retained payloads: the subscriber sees the deletions...
        assert sub.wait_for(lambda ms: sum(m.payload == b"" for m in ms) >= len(SENSORS), 10)
    # ...and a new subscriber finds nothing retained any more (status is a different prefix).
    late = subscriber_factory(mosquitto.url, "hatest/#")
    assert not late.wait_for(lambda ms: len(ms) > 0, 1.0)
