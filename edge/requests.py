"""Requests over MQTT, sans I/O: parse and validate a request, build its response, rate-limit.

Nothing here touches the network, the spectrometer or the disk (except reading the schema
once), so every rule about bad requests is tested without a broker. The MQTT side is
edge/request_server.py. Pattern (zigbee2mqtt): a request on
`<prefix>/<device_id>/request/<command>`, its response on `.../response/<command>`; the
JSON Schema in edge/requests.schema.json (package data, so installed devices have it) is the
single statement of what is valid.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

#: Every command the interface defines (issue 13); `allow_requests` picks among them.
COMMANDS = ("status", "replay", "acquire", "set", "calibrate", "library/add", "model/activate")
#: Commands this version implements; an allowed command not listed answers "not implemented".
IMPLEMENTED = COMMANDS
MAX_REQUEST_BYTES = 64 * 1024
SCHEMA_PATH = Path(__file__).resolve().parent / "requests.schema.json"


@dataclass(frozen=True)
class Request:
    command: str
    args: dict[str, Any]  # validated fields, without `transaction`
    transaction: Any = None


@dataclass(frozen=True)
class RequestError:
    command: str
    error: str
    transaction: Any = None


def ok_response(transaction: Any, data: dict[str, Any]) -> bytes:
    body: dict[str, Any] = {"status": "ok", "data": data}
    if transaction is not None:
        body["transaction"] = transaction
    return json.dumps(body, separators=(",", ":")).encode()


def error_response(transaction: Any, error: str) -> bytes:
    body: dict[str, Any] = {"status": "error", "error": error}
    if transaction is not None:
        body["transaction"] = transaction
    return json.dumps(body, separators=(",", ":")).encode()


@lru_cache(maxsize=1)
def _validators() -> dict[str, Any]:
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA_PATH.read_text())
    return {
        # JSON Pointer: "/" in a key is written "~1" (library/add -> #/$defs/library~1add).
        cmd: Draft202012Validator(
            {"$defs": schema["$defs"], "$ref": "#/$defs/" + cmd.replace("~", "~0").replace("/", "~1")}
        )
        for cmd in COMMANDS
        if cmd in schema["$defs"]
    }


def command_of(topic: str, request_prefix: str) -> str | None:
    """`<prefix>/<id>/request/model/activate` -> "model/activate"; None if not a request topic."""
    if not topic.startswith(request_prefix):
        return None
    return topic[len(request_prefix) :] or None


def parse_request(command: str, payload: bytes, allowed: tuple[str, ...]) -> Request | RequestError:
    """Validate one request. Errors name the problem in words a person can act on."""
    if len(payload) > MAX_REQUEST_BYTES:
        return RequestError(command, f"request too large ({len(payload)} bytes, limit {MAX_REQUEST_BYTES})")
    text = payload.decode("utf-8", errors="replace").strip() or "{}"  # empty payload = no arguments
    try:
        obj = json.loads(text)
    except ValueError as err:
        return RequestError(command, f"malformed JSON: {err}")
    if not isinstance(obj, dict):
        return RequestError(command, "the payload must be a JSON object")
    transaction = obj.get("transaction")
    if not isinstance(transaction, str | int) or isinstance(transaction, bool):
        transaction = None  # never echo something that is not a valid transaction
    if command not in COMMANDS:
        return RequestError(command, f"unknown command {command!r} (known: {', '.join(COMMANDS)})", transaction)
    if command not in allowed:
        return RequestError(
            command,
            f"command {command!r} is not enabled on this device (allow_requests: {', '.join(allowed)})",
            transaction,
        )
    errors = sorted(_validators()[command].iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path)
        return RequestError(command, f"{where}: {e.message}" if where else e.message, transaction)
    if command == "replay" and obj.get("until_seq") is not None and obj["until_seq"] < obj["since_seq"]:
        return RequestError(command, "until_seq must be >= since_seq", transaction)
    if command not in IMPLEMENTED:
        return RequestError(command, f"command {command!r} is not implemented in this version", transaction)
    args = {k: v for k, v in obj.items() if k != "transaction"}
    return Request(command, args, transaction)


class TokenBucket:
    """`rate_per_s` requests per second on average, bursts of up to `burst` (not thread-safe)."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._t = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate_per_s)
        self._t = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
