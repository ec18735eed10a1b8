"""`edge watch` and the CLI's error contract, against a real Mosquitto."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.outbox import Outbox
from edge.publisher import Publisher
from edge.watch import IdDeduplicator, WatchSummary, format_result, watch

EDGE = [sys.executable, "-c", "from edge.cli import app; app()"]
REPO = str(Path(__file__).resolve().parents[2])


def _raw_publish(url_port: int, topic: str, payloads: list[bytes]) -> None:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="test-raw")
    c.connect("127.0.0.1", url_port)
    c.loop_start()
    for p in payloads:
        c.publish(topic, p, qos=1).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_format_result_line(make_result: Any) -> None:
    r = make_result().stamped(seq=12, id="dev1-x-12")
    line = format_result(r)
    assert line == "2025-01-02T03:04:05.678Z dev1 #12 ok quartz p=0.91 peaks_cm1=464"
    rej = format_result(make_result(status="rejected").stamped(seq=13, id="dev1-x-13"))
    assert rej.endswith("#13 rejected reason=saturated")


def test_deduplicator_is_bounded() -> None:
    d = IdDeduplicator(capacity=2)
    assert [d.first_time(x) for x in ("a", "a", "b", "c", "a")] == [True, False, True, True, True]


@pytest.mark.mqtt
def test_watch_prints_each_result_once_and_status(
    tmp_path: Path, mosquitto: Any, make_result: Any, mqtt_settings: Any, wait_until: Any
) -> None:
    out = io.StringIO()
    stop = threading.Event()
    summary: list[WatchSummary] = []
    settings = mqtt_settings(mosquitto.url)
    t = threading.Thread(target=lambda: summary.append(watch(settings, "+", out=out, count=3, stop=stop)))
    t.start()
    try:
        pub = Publisher(settings, Outbox(tmp_path / "o.sqlite", device_id="dev1"), owns_outbox=True)
        with pub:
            # Published before watch may have subscribed: wait for its "online" line first.
            wait_until(lambda: "dev1 status online" in out.getvalue(), 10, "status line")
            first = pub.enqueue(make_result(0))
            assert pub.wait_drained(10)
            # A redelivery (same id) must not be printed twice.
            _raw_publish(mosquitto.port, "test/dev1/result", [first.to_json().encode()] * 2)
            pub.enqueue(make_result(1, status="rejected"))
            pub.enqueue(make_result(2))
            t.join(15)
    finally:
        stop.set()
        t.join(5)
    lines = [ln for ln in out.getvalue().splitlines() if " status " not in ln]
    assert [ln.split()[2] for ln in lines] == ["#1", "#2", "#3"]
    assert "rejected reason=saturated" in lines[1]
    assert summary[0].results == 3 and summary[0].duplicates == 2


@pytest.mark.mqtt
def test_cli_watch_json_counts_and_exits(tmp_path: Path, mosquitto: Any, make_result: Any, mqtt_settings: Any) -> None:
    proc = subprocess.Popen(
        [*EDGE, "watch", "--broker", mosquitto.url, "--prefix", "test", "--json", "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": REPO},
    )
    try:
        # Retained status is delivered on subscribe: its line proves the subscription is live.
        settings = mqtt_settings(mosquitto.url)
        with Publisher(settings, Outbox(tmp_path / "o.sqlite", device_id="dev1"), owns_outbox=True) as pub:
            assert proc.stdout is not None
            assert json.loads(proc.stdout.readline()) == {"device_id": "dev1", "status": "online"}
            pub.enqueue(make_result(0))
            pub.enqueue(make_result(1))
            out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert [json.loads(ln)["seq"] for ln in out.splitlines()] == [1, 2]


@pytest.mark.parametrize(
    ("args", "env", "code", "text"),
    [
        (["run", "--broker", "http://x"], {}, 1, "mqtt:// or mqtts://"),
        (["run"], {"RAMAN_EDGE_BROKR": "x"}, 1, "RAMAN_EDGE_BROKR"),
        (["watch", "--device-id", "a/b"], {}, 2, "--device-id"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(args: list[str], env: dict[str, str], code: int, text: str) -> None:
    r = subprocess.run(
        [*EDGE, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": REPO, **env},
    )
    assert r.returncode == code
    assert text in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
