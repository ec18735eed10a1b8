"""Home Assistant MQTT discovery messages (config `ha_discovery`, `ha_prefix`), sans I/O.

Home Assistant reads retained `<ha_prefix>/sensor/<node_id>/<object_id>/config` messages and
creates one entity per message; an empty retained message on the same topic deletes it. The
sensors read the topics the daemon already publishes (result, stats), so discovery adds no
traffic beyond these configs, and the daemon's retained `online`/`offline` status (with its
Last Will) is the availability topic: HA shows the sensors unavailable when the device is.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: object_id -> (name, state topic kind, value template, extra fields)
SENSORS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "last_mineral": (
        "Last mineral",
        "result",
        "{{ value_json.top[0].mineral if value_json.status == 'ok' and value_json.top else 'none' }}",
        {"icon": "mdi:diamond-stone"},
    ),
    "probability": (
        "Probability",
        "result",
        "{{ (value_json.top[0].p * 100) | round(1) if value_json.status == 'ok' and value_json.top else 0 }}",
        {"unit_of_measurement": "%", "state_class": "measurement"},
    ),
    "status": ("Result status", "result", "{{ value_json.status }}", {}),
    "spectra_per_minute": (
        "Spectra per minute",
        "stats",
        "{{ (value_json.spectra_per_s * 60) | round(1) }}",
        {"unit_of_measurement": "1/min", "state_class": "measurement"},
    ),
    "outbox_backlog": (
        "Outbox backlog",
        "stats",
        "{{ value_json.queue_depth }}",
        {"unit_of_measurement": "results", "state_class": "measurement"},
    ),
}


def node_id(device_id: str) -> str:
    # HA's node_id / object_id allow [a-zA-Z0-9_-] only; device ids may also contain '.'.
    return "raman_edge_" + re.sub(r"[^A-Za-z0-9_-]", "_", device_id)


def config_topic(ha_prefix: str, device_id: str, object_id: str) -> str:
    return f"{ha_prefix}/sensor/{node_id(device_id)}/{object_id}/config"


def discovery_messages(
    *, ha_prefix: str, device_id: str, result_topic: str, stats_topic: str, status_topic: str, model: str | None = None
) -> list[tuple[str, bytes]]:
    """(topic, retained payload) for every sensor of this device."""
    nid = node_id(device_id)
    device = {
        "identifiers": [nid],
        "name": f"Raman Edge {device_id}",
        "manufacturer": "Raman Edge",
        "model": model or "raman-edge",
    }
    out = []
    for object_id, (name, kind, template, extra) in SENSORS.items():
        payload = {
            "name": name,
            "unique_id": f"{nid}_{object_id}",
            "object_id": f"{nid}_{object_id}",
            "state_topic": result_topic if kind == "result" else stats_topic,
            "value_template": template,
            "availability_topic": status_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            **extra,
        }
        out.append((config_topic(ha_prefix, device_id, object_id), json.dumps(payload, separators=(",", ":")).encode()))
    return out


def removal_messages(*, ha_prefix: str, device_id: str) -> list[tuple[str, bytes]]:
    """Empty retained payloads: Home Assistant deletes the entities, the broker the configs."""
    return [(config_topic(ha_prefix, device_id, o), b"") for o in SENSORS]
