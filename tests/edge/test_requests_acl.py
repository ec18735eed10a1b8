"""The shipped Mosquitto ACL on a real broker: only clients allowed to write requests get answers."""

from __future__ import annotations

import getpass
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import parse_broker_url
from edge.publisher import MqttSettings
from edge.request_server import RequestServer

REPO = Path(__file__).resolve().parents[2]
ACL = REPO / "deploy" / "mosquitto-acl.conf"
USERS = {"dev-acl": "pw-dev", "reader": "pw-reader", "operator": "pw-op"}


def _client(port: int, user: str, *subs: str) -> tuple[mqtt.Client, list[tuple[str, bytes]], threading.Condition]:
    got: list[tuple[str, bytes]] = []
    cond = threading.Condition()
    ready = threading.Event()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"acl-{user}-{uuid.uuid4().hex[:6]}")
    c.username_pw_set(user, USERS[user])

    def on_message(_c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        with cond:
            got.append((m.topic, bytes(m.payload)))
            cond.notify_all()

    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe([(s, 1) for s in subs]) if subs else ready.set()
    c.on_subscribe = lambda *a: ready.set()
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert ready.wait(10)
    return c, got, cond


def test_client_without_write_access_to_requests_cannot_make_the_device_do_anything(
    tmp_path: Path, unstarted_broker: Any
) -> None:
    b = unstarted_broker
    passwd = b.dir / "passwd"
    for i, (user, pw) in enumerate(USERS.items()):
        subprocess.run(
            ["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(passwd), user, pw],
            check=True,
            capture_output=True,
        )
    conf = b.conf.read_text().replace(
        "allow_anonymous true\n", f"allow_anonymous false\npassword_file {passwd}\nacl_file {ACL}\n"
    )
    assert f"user {getpass.getuser()}" in conf
    b.conf.write_text(conf)
    b.start()
    pwfile = tmp_path / "devpw"
    pwfile.write_text("pw-dev\n")
    calls: list[int] = []
    settings = MqttSettings(
        broker=parse_broker_url(b.url), device_id="dev-acl", prefix="raman", username="dev-acl", password_file=pwfile
    )
    server = RequestServer(
        settings, allowed=("status", "replay"), history=None, status=lambda: calls.append(1) or {"calls": len(calls)}
    ).start()
    clients = []
    try:
        assert server.wait_subscribed(10)
        reader, rgot, rcond = _client(b.port, "reader", "raman/dev-acl/response/#")
        op, ogot, ocond = _client(b.port, "operator", "raman/dev-acl/response/#")
        clients += [reader, op]
        # The reader's requests are accepted by the broker (QoS 1 is acknowledged) but dropped.
        for _ in range(5):
            reader.publish("raman/dev-acl/request/status", b'{"transaction": "r"}', qos=1).wait_for_publish(5)
        op.publish("raman/dev-acl/request/status", b'{"transaction": "o"}', qos=1).wait_for_publish(5)
        with ocond:
            assert ocond.wait_for(lambda: len(ogot) >= 1, 10), "operator got no response"
        assert b'"transaction":"o"' in ogot[0][1]
        assert calls == [1], "the reader's requests reached the device"
        # The reader can still read the operator's response (consumers read responses).
        with rcond:
            assert rcond.wait_for(lambda: len(rgot) >= 1, 10)
        assert all(b'"transaction":"r"' not in p for _, p in rgot + ogot)
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()
        server.close()
