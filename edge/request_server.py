"""The MQTT side of requests: subscribe, queue, answer; replays come from the history.

Why a second MQTT connection (client id `raman-edge-<device_id>-requests`, MQTT 5) instead of
the publisher's: a request flood or a replay of thousands of results then shares nothing with
the result pump's in-flight window, so new results are never queued behind replayed ones; and
MQTT 5 (response topic, correlation data) is needed here only. paho's network thread only
puts messages on a bounded queue (a full queue drops, counted); one worker thread validates,
rate-limits and answers, so nothing here can stall acquisition or the publisher.
The subscription is made in on_connect, so it is restored after every reconnect, including
to a broker that restarted without its sessions (clean start: we never depend on the broker
remembering it).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.errors import EdgeError, UsageError
from edge.history import History
from edge.publisher import MqttSettings, make_client
from edge.requests import Request, RequestError, TokenBucket, command_of, error_response, ok_response, parse_request

log = logging.getLogger("edge.requests")

#: Rows re-published per replay request at most; the response says where to continue.
MAX_REPLAY_ROWS = 20_000
QUEUE_SIZE = 64


@dataclass
class RequestCounters:
    handled: int = 0
    errors: int = 0
    rate_limited: int = 0
    dropped: int = 0  # arrived while the queue was full: not answered
    replayed: int = 0


class RequestServer:
    def __init__(
        self,
        settings: MqttSettings,
        *,
        allowed: tuple[str, ...],
        history: History | None,
        status: Callable[[], dict[str, Any]],
        rate_per_s: float = 2.0,
        burst: int = 10,
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.allowed = allowed
        self.history = history
        self._status = status
        # Commands carried out by the daemon (e.g. `set`): args -> data; EdgeError -> error response.
        self._handlers = dict(handlers or {})
        self._bucket = TokenBucket(rate_per_s, burst)
        self.counters = RequestCounters()
        self._queue: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._subscribed = threading.Event()
        self._client = make_client(
            settings,
            client_id=f"{settings.client_id or 'raman-edge-' + settings.device_id}-requests",
            protocol=mqtt.MQTTv5,
        )
        self._client.max_inflight_messages_set(64)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._worker = threading.Thread(target=self._run, name="raman-edge-requests", daemon=True)

    def start(self) -> RequestServer:
        b = self.settings.broker
        self._client.connect_async(b.host, b.port, keepalive=self.settings.keepalive_s, clean_start=True)
        self._client.loop_start()
        self._worker.start()
        log.info("accepting requests", extra={"topic": self.topics.request_prefix + "+", "allowed": list(self.allowed)})
        return self

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """QoS 1 on the request connection (the daemon's retained health message)."""
        self._client.publish(topic, payload, qos=1, retain=retain)

    def wait_subscribed(self, timeout_s: float) -> bool:
        return self._subscribed.wait(timeout_s)

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=10)
        self._client.disconnect()
        self._client.loop_stop()

    # -- network thread ----------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            return
        self._subscribed.clear()
        # '#' not '+': commands like model/activate span two levels.
        client.subscribe(self.topics.request_prefix + "#", qos=1)

    def _on_message(self, _client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._queue.put_nowait(msg)
        except queue.Full:
            self.counters.dropped += 1

    # -- worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            msg = self._queue.get()
            if msg is None:
                return
            try:
                self._handle(msg)
            except Exception:  # noqa: BLE001 - one bad request must not end request handling
                log.exception("request handling failed")

    def _handle(self, msg: mqtt.MQTTMessage) -> None:
        command = command_of(msg.topic, self.topics.request_prefix)
        if command is None:
            return
        if not self._bucket.take():
            self.counters.rate_limited += 1
            self._respond(msg, command, error_response(None, "rate limited: too many requests, try again later"))
            return
        parsed = parse_request(command, bytes(msg.payload), self.allowed)
        if isinstance(parsed, RequestError):
            self.counters.errors += 1
            log.info("request refused", extra={"command": command, "error": parsed.error})
            self._respond(msg, command, error_response(parsed.transaction, parsed.error))
            return
        try:
            data = self._execute(parsed)
        except EdgeError as err:
            self.counters.errors += 1
            self._respond(msg, command, error_response(parsed.transaction, str(err)))
            return
        self.counters.handled += 1
        self._respond(msg, command, ok_response(parsed.transaction, data))

    def _execute(self, req: Request) -> dict[str, Any]:
        if req.command == "status":
            return self._status()
        if req.command == "replay":
            return self._replay(req.args["since_seq"], req.args.get("until_seq"))
        if req.command in self._handlers:
            return self._handlers[req.command](req.args)
        raise UsageError(f"command {req.command!r} is not available on this device")

    def _replay(self, since_seq: int, until_seq: int | None) -> dict[str, Any]:
        if self.history is None:
            return {"count": 0, "first_seq": None, "last_seq": None, "not_held": "no history on this device"}
        held = self.history.held()
        rows = self.history.rows(since_seq, until_seq, limit=MAX_REPLAY_ROWS + 1)
        truncated = len(rows) > MAX_REPLAY_ROWS
        rows = rows[:MAX_REPLAY_ROWS]
        for row in rows:
            # Same topic, QoS and bytes as the first copy; the broker's ack is not awaited
            # (paho queues them in seq order on this connection).
            self._client.publish(self.topics.result, row.payload, qos=1, retain=False)
        self.counters.replayed += len(rows)
        # What was asked for but is not here, below the newest held row: expired/dropped by the
        # history bounds, or never delivered (dropped by the outbox bounds). Seqs above the
        # newest held row are not acknowledged yet: they arrive through the normal path.
        top = held.last_seq if until_seq is None else min(until_seq, held.last_seq or 0)
        missing: list[list[int]] = []
        if not truncated and top is not None and top >= since_seq:
            expect = since_seq
            for row in rows:
                if row.seq > expect:
                    missing.append([expect, row.seq - 1])
                expect = row.seq + 1
            if expect <= top:
                missing.append([expect, top])
        data: dict[str, Any] = {
            "count": len(rows),
            "first_seq": rows[0].seq if rows else None,
            "last_seq": rows[-1].seq if rows else None,
            "held": {"rows": held.rows, "first_seq": held.first_seq, "last_seq": held.last_seq},
            "not_held": missing[:100],
            "not_held_count": sum(b - a + 1 for a, b in missing),
            "truncated": truncated,
        }
        if truncated:
            data["next_since_seq"] = rows[-1].seq + 1
        log.info("replay", extra={"since_seq": since_seq, "until_seq": until_seq, "count": len(rows)})
        return data

    def _respond(self, msg: mqtt.MQTTMessage, command: str, body: bytes) -> None:
        self._client.publish(self.topics.response(command), body, qos=1)
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        if response_topic:
            out = Properties(PacketTypes.PUBLISH)
            corr = getattr(props, "CorrelationData", None)
            if corr is not None:
                out.CorrelationData = corr
            self._client.publish(response_topic, body, qos=1, properties=out)
