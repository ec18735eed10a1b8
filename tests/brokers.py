"""Real-broker helpers shared by the tests and the benchmarks: a Mosquitto on a free port, a
paho subscriber that keeps what it receives, and condition waits.

The tests import it as `brokers` (tests/ is on sys.path under pytest, as for `link`); bench/
imports it through bench/_harness.py, which puts tests/ on sys.path. No pytest and no project
package in here, so a benchmark can use it without either.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll_until(cond: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> bool:
    """Poll `cond` until true or `timeout_s`; returns whether it became true (benchmarks)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str = "condition") -> None:
    """Poll `cond` until true; fail (AssertionError naming `what`) after `timeout_s` (tests)."""
    if not poll_until(cond, timeout_s):
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def mosquitto_version() -> str | None:
    try:
        out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=5)
        m = re.search(r"mosquitto version (\S+)", out.stdout + out.stderr)
        return m.group(1) if m else None
    except (OSError, subprocess.SubprocessError):
        return None


class Broker:
    """A mosquitto on its own port and directory; stop()/start() keep port and state.

    `max_queued_messages`: per-client queue limit (mosquitto's default, 1000, drops messages
    for a long-offline persistent subscriber: the benchmarks raise it, the tests keep it).
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        persistence: bool = True,
        max_queued_messages: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.conf = workdir / "mosquitto.conf"
        self.max_queued_messages = max_queued_messages
        self.write_conf(persistence)
        self._proc: subprocess.Popen[bytes] | None = None

    def write_conf(self, persistence: bool) -> None:
        queue = f"max_queued_messages {self.max_queued_messages}\n" if self.max_queued_messages else ""
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # Started as root, mosquitto would switch to user "mosquitto" and could not read
            # or write our 0700 tmp dirs (persistence, TLS keys); as non-root this is ignored.
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            f"persistence {'true' if persistence else 'false'}\n"
            f"persistence_location {self.dir}/\n"
            "autosave_interval 0\n"
            f"{queue}"
            f"log_dest file {self.dir}/mosquitto.log\n"
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> float:
        """Start and wait until it accepts connections; returns that moment (monotonic)."""
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not poll_until(self._accepts, timeout_s):
            raise RuntimeError(f"mosquitto did not start on port {self.port} within {timeout_s} s")
        return time.monotonic()

    def stop(self) -> None:
        # SIGTERM: mosquitto writes its persistence file, so sessions survive a restart.
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def wipe_state(self) -> None:
        """Forget every session and queued message (as a broker replaced or reinstalled)."""
        for p in self.dir.glob("*.db"):
            p.unlink()

    def _accepts(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            logfile = self.dir / "mosquitto.log"
            log = logfile.read_text(errors="replace")[-500:] if logfile.exists() else "(no log)"
            raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: {log}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    properties: Any = field(default=None, compare=False)  # MQTT 5 properties (response topic...)
    t: float = field(default=0.0, compare=False)  # arrival, monotonic


class Subscriber:
    """A real paho client subscribed at QoS 1 to `topics`, keeping every message it receives.

    `broker`: an mqtt:// URL or a port on 127.0.0.1. MQTT 3.1.1 with a persistent session
    (clean_session=False) by default, so that with a persistent broker messages published while
    it is disconnected are queued for it; `mqtt5=True` for MQTT 5 (response topics, properties).
    Subclasses override `receive` to keep something else; `client` publishes as well.
    """

    def __init__(
        self,
        broker: str | int,
        *topics: str,
        mqtt5: bool = False,
        client_id_prefix: str = "test-sub",
        reconnect_delay_s: int = 1,
        max_inflight: int | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if isinstance(broker, int):
            host, port = "127.0.0.1", broker
        else:
            u = urlsplit(broker)
            host, port = u.hostname or "127.0.0.1", u.port or 1883
        self.topics = topics
        self.messages: list[Received] = []
        self.connects = 0
        self.connect_times: list[float] = []
        self.cond = threading.Condition()
        self._subscribed = threading.Event()
        client_id = f"{client_id_prefix}-{uuid.uuid4().hex[:8]}"
        if mqtt5:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        else:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(reconnect_delay_s, reconnect_delay_s)
        if max_inflight is not None:
            self.client.max_inflight_messages_set(max_inflight)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError(f"subscription to {', '.join(topics)} not acknowledged")

    def _on_connect(self, c: Any, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        self.connects += 1
        self.connect_times.append(time.monotonic())
        c.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        got = Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.properties, time.monotonic())
        with self.cond:
            self.receive(got)
            self.cond.notify_all()

    def receive(self, msg: Received) -> None:
        """Keep one message (called under the lock)."""
        self.messages.append(msg)

    def wait_for(self, pred: Callable[[list[Received]], bool], timeout_s: float) -> bool:
        """Wait until `pred(messages)` holds; returns whether it did within `timeout_s`."""
        with self.cond:
            return self.cond.wait_for(lambda: pred(self.messages), timeout_s)

    def on(self, topic: str) -> list[bytes]:
        """The payloads received on `topic`, in arrival order."""
        with self.cond:
            return [m.payload for m in self.messages if m.topic == topic]

    def publish(self, topic: str, payload: str | bytes, qos: int = 1, **kw: Any) -> mqtt.MQTTMessageInfo:
        """Publish on this client's connection (`kw`: paho's, e.g. MQTT 5 `properties`)."""
        return self.client.publish(topic, payload, qos=qos, **kw)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def edge_run(
    *,
    port: str,
    broker_url: str,
    outbox: Path,
    device_id: str,
    prefix: str,
    count: int | None = None,
    drain_timeout_s: float = 20.0,
    env: dict[str, str] | None = None,
    argv_prefix: list[str] | None = None,
) -> subprocess.Popen[str]:
    """`python -m edge.cli run` as a real subprocess (one a test or benchmark can SIGKILL), from
    the checkout, stdout and stderr in one line-buffered text pipe. RAMAN_EDGE_* variables of
    this process are dropped; `env` adds what the caller means."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("RAMAN_EDGE_")}
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env.update(env or {})
    args = ["run", "--port", port, "--broker", broker_url, "--device-id", device_id, "--prefix", prefix]
    args += ["--outbox", str(outbox), "--drain-timeout", f"{drain_timeout_s:g}", "--log-level", "warning"]
    if count is not None:
        args += ["--count", str(count)]
    return subprocess.Popen(
        (argv_prefix or [sys.executable, "-m", "edge.cli"]) + args,
        cwd=REPO,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
