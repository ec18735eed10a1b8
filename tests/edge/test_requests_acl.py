"""The shipped Mosquitto ACL on a real broker: only clients allowed to write requests get answers."""

from __future__ import annotations

import getpass
import subprocess
from pathlib import Path
from typing import Any

from brokers import Subscriber

from edge.config import parse_broker_url
from edge.publisher import MqttSettings
from edge.request_server import RequestServer

REPO = Path(__file__).resolve().parents[2]
ACL = REPO / "deploy" / "mosquitto-acl.conf"
USERS = {"dev-acl": "pw-dev", "reader": "pw-reader", "operator": "pw-op"}


def _client(port: int, user: str, *subs: str) -> Subscriber:
    return Subscriber(port, *subs, username=user, password=USERS[user], client_id_prefix=f"acl-{user}")


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
        reader = _client(b.port, "reader", "raman/dev-acl/response/#")
        op = _client(b.port, "operator", "raman/dev-acl/response/#")
        clients += [reader, op]
        # The reader's requests are accepted by the broker (QoS 1 is acknowledged) but dropped.
        for _ in range(5):
            reader.publish("raman/dev-acl/request/status", b'{"transaction": "r"}', qos=1).wait_for_publish(5)
        op.publish("raman/dev-acl/request/status", b'{"transaction": "o"}', qos=1).wait_for_publish(5)
        assert op.wait_for(lambda ms: len(ms) >= 1, 10), "operator got no response"
        assert b'"transaction":"o"' in op.messages[0].payload
        assert calls == [1], "the reader's requests reached the device"
        # The reader can still read the operator's response (consumers read responses).
        assert reader.wait_for(lambda ms: len(ms) >= 1, 10)
        assert all(b'"transaction":"r"' not in m.payload for m in reader.messages + op.messages)
    finally:
        for c in clients:
            c.close()
        server.close()
