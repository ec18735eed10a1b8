"""`edge watch`: subscribe to results and status and print them, one line each.

Results are de-duplicated by message `id` (QoS 1 is at-least-once, and the publisher re-sends
after every reconnect), so what is printed is exactly what a correct consumer would process.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, TextIO

import paho.mqtt.client as mqtt

from edge.errors import PayloadError
from edge.publisher import MqttSettings, make_client
from edge.result import Result

log = logging.getLogger("edge.watch")

_DEDUP_MEMORY = 100_000  # ids remembered; far more than any outbox drains at once


class IdDeduplicator:
    """Remembers the last `capacity` message ids; `first_time(id)` is True once per id."""

    def __init__(self, capacity: int = _DEDUP_MEMORY) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def first_time(self, message_id: str) -> bool:
        if message_id in self._seen:
            self._seen.move_to_end(message_id)
            return False
        self._seen[message_id] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True


def format_result(r: Result, *, max_peaks: int = 3) -> str:
    when = r.acquired_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    head = f"{when} {r.device_id} #{r.seq} {r.status}"
    if r.status == "rejected":
        return f"{head} reason={r.reason}"
    best = f"{r.top[0].mineral} p={r.top[0].p:.2f}" if r.top else "-"
    flag = " UNKNOWN" if r.unknown else ""
    peaks = sorted(r.peaks, key=lambda p: p.relevance, reverse=True)[:max_peaks]
    shifts = ",".join(f"{p.shift_cm1:.0f}" for p in peaks) or "-"
    return f"{head} {best}{flag} peaks_cm1={shifts}"


@dataclass(frozen=True)
class WatchSummary:
    results: int  # distinct results printed
    duplicates: int  # redeliveries suppressed
    invalid: int  # payloads that did not parse


def watch(
    settings: MqttSettings,
    device: str = "+",
    *,
    out: TextIO,
    as_json: bool = False,
    count: int | None = None,
    stop: threading.Event | None = None,
) -> WatchSummary:
    """Print results/status of `device` ("+" = all) until `count` results or `stop` is set."""
    stop = stop or threading.Event()
    result_topic = f"{settings.prefix}/{device}/result"
    status_topic = f"{settings.prefix}/{device}/status"
    dedup = IdDeduplicator()
    lock = threading.Lock()
    counts = {"results": 0, "duplicates": 0, "invalid": 0}
    state = {"unreachable_logged": False}

    def emit(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection", extra={"reason": str(reason)})
            return
        state["unreachable_logged"] = False
        # Subscribing here, not once at start, re-subscribes after every broker restart.
        client.subscribe([(result_topic, 1), (status_topic, 1)])
        log.info("watching", extra={"broker": str(settings.broker), "topic": result_topic})

    def on_connect_fail(_client: mqtt.Client, _u: Any) -> None:
        if not state["unreachable_logged"]:
            state["unreachable_logged"] = True
            log.warning("broker unreachable; retrying", extra={"broker": str(settings.broker)})

    def on_message(_client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with lock:
            if msg.topic.endswith("/status"):
                dev = msg.topic.split("/")[-2]
                text = msg.payload.decode(errors="replace")
                if as_json:
                    emit(json.dumps({"device_id": dev, "status": text}))
                else:
                    emit(f"{dev} status {text}{' (retained)' if msg.retain else ''}")
                return
            try:
                r = Result.from_json(msg.payload)
            except PayloadError as err:
                counts["invalid"] += 1
                log.warning("invalid result payload", extra={"topic": msg.topic, "error": str(err)})
                return
            if not dedup.first_time(r.id):
                counts["duplicates"] += 1
                return
            counts["results"] += 1
            emit(msg.payload.decode() if as_json else format_result(r))
            if count is not None and counts["results"] >= count:
                stop.set()

    client = make_client(settings, client_id=f"raman-edge-watch-{uuid.uuid4().hex[:8]}")
    client.on_connect = on_connect
    client.on_connect_fail = on_connect_fail
    client.on_message = on_message
    client.connect_async(settings.broker.host, settings.broker.port, settings.keepalive_s)
    client.loop_start()
    try:
        stop.wait()
    finally:
        client.disconnect()
        client.loop_stop()
    return WatchSummary(counts["results"], counts["duplicates"], counts["invalid"])
