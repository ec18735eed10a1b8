"""mqtts:// with a private CA and username/password from a file, against a real Mosquitto."""

from __future__ import annotations

import getpass
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edge.config import parse_broker_url
from edge.outbox import Outbox
from edge.publisher import MqttSettings, Publisher

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.skipif(not shutil.which("openssl") or not shutil.which("mosquitto_passwd"), reason="needs openssl"),
]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture
def tls_broker(tmp_path: Path, unstarted_broker: Any) -> Any:
    """The shared broker fixture, reconfigured: TLS with a private CA, no anonymous access."""
    d = tmp_path / "tls"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "1", "-extfile", "ext.cnf", "-out", "server.crt", cwd=d)  # fmt: skip
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), "dev1", "s3cret"], check=True, timeout=30)
    port = unstarted_broker.port
    unstarted_broker.conf.write_text(
        f"listener {port} 127.0.0.1\nuser {getpass.getuser()}\nallow_anonymous false\n"
        f"password_file {d}/passwd\npersistence false\n"
        f"cafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n"
        f"log_dest file {unstarted_broker.dir}/mosquitto.log\n"
    )
    unstarted_broker.start()
    return d, port


def test_mqtts_with_ca_and_password_file(tmp_path: Path, tls_broker: Any, make_result: Any) -> None:
    d, port = tls_broker
    (tmp_path / "pw").write_text("s3cret\n")
    settings = MqttSettings(
        broker=parse_broker_url(f"mqtts://localhost:{port}"),
        device_id="dev1",
        prefix="test",
        tls_ca=d / "ca.crt",
        username="dev1",
        password_file=tmp_path / "pw",
    )
    with Publisher(settings, Outbox(tmp_path / "o.sqlite", device_id="dev1"), owns_outbox=True) as pub:
        pub.enqueue(make_result())
        assert pub.wait_drained(15)


def test_wrong_password_is_never_marked_connected(
    tmp_path: Path, tls_broker: Any, make_result: Any, wait_until: Any, caplog: pytest.LogCaptureFixture
) -> None:
    d, port = tls_broker
    settings = MqttSettings(
        broker=parse_broker_url(f"mqtts://localhost:{port}"),
        device_id="dev1",
        prefix="test",
        tls_ca=d / "ca.crt",
        username="dev1",
        password_env="TEST_RAMAN_PW",
        reconnect_min_s=1,
        reconnect_max_s=1,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TEST_RAMAN_PW", "wrong-password")
        pub = Publisher(settings, Outbox(tmp_path / "o.sqlite", device_id="dev1"), owns_outbox=True)
    with pub:
        pub.enqueue(make_result())
        wait_until(lambda: pub.stats().connect_failures >= 2, 15, "refused connects")
        assert not pub.connected and pub.pending() == 1
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1  # logged once, not per retry
    assert all("wrong-password" not in r.getMessage() for r in caplog.records)
