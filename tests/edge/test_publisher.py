"""Publisher against a real Mosquitto on a free port: delivery, outages, restarts, last will.

No mocks of paho. Every wait is on a condition with a timeout.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge.outbox import Outbox
from edge.publisher import Publisher

pytestmark = pytest.mark.mqtt


def _distinct(sub: Any) -> list[dict[str, Any]]:
    """What a correct consumer keeps: the first copy of every id, in arrival order."""
    seen: set[str] = set()
    out = []
    for m in list(sub.messages):
        if not m.topic.endswith("/result"):
            continue
        obj = json.loads(m.payload)
        if obj["id"] not in seen:
            seen.add(obj["id"])
            out.append(obj)
    return out


def _publisher(url: str, path: Path, mqtt_settings: Any, **kw: Any) -> Publisher:
    return Publisher(mqtt_settings(url, **kw), Outbox(path, device_id="dev1"), owns_outbox=True)


def test_n_results_arrive_in_order_and_match_schema(
    tmp_path: Path,
    mosquitto: Any,
    subscriber_factory: Any,
    make_result: Any,
    mqtt_settings: Any,
    schema_check: Any,
) -> None:
    n = 50
    sub = subscriber_factory(mosquitto.url, "test/dev1/result")
    with _publisher(mosquitto.url, tmp_path / "o.sqlite", mqtt_settings) as pub:
        for i in range(n):
            pub.enqueue(make_result(i, status="rejected" if i % 10 == 9 else "ok"))
        assert pub.wait_drained(15)
        assert pub.pending() == 0
        assert sub.wait_for(lambda msgs: len(msgs) >= n, 10)
    got = [json.loads(m.payload) for m in sub.messages]
    assert [r["seq"] for r in got] == list(range(1, n + 1))
    assert not any(m.retain for m in sub.messages)  # results are never retained
    for r in got:
        assert schema_check(r) == []
        assert r["latency_ms"]["commit"] is not None and r["latency_ms"]["publish"] >= 0
    assert sum(r["status"] == "rejected" for r in got) == 5


def test_broker_stopped_mid_stream_loses_nothing(
    tmp_path: Path,
    mosquitto: Any,
    subscriber_factory: Any,
    make_result: Any,
    mqtt_settings: Any,
    wait_until: Any,
) -> None:
    n = 120
    sub = subscriber_factory(mosquitto.url, "test/dev1/result")  # persistent session
    pub = _publisher(mosquitto.url, tmp_path / "o.sqlite", mqtt_settings).start()
    assert pub.wait_connected(10)
    done = threading.Event()

    def produce() -> None:
        for i in range(n):
            pub.enqueue(make_result(i))
            time.sleep(0.01)  # a steady stream, ~100 results/s
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        assert sub.wait_for(lambda msgs: len(msgs) >= 20, 10), "stream did not start"
        before_outage = max(r["seq"] for r in _distinct(sub))
        mosquitto.stop()
        # The subscriber's persistent session (and what is queued for it) survives the restart.
        assert (mosquitto.dir / "mosquitto.db").exists()
        wait_until(lambda: not pub.connected, 10, "publisher to notice the outage")
        wait_until(lambda: pub.pending() >= 40, 10, "results to queue while the broker is down")
        # Stay down across at least one failed reconnect attempt (~1 s with the backoff).
        wait_until(lambda: pub.stats().connect_failures >= 1, 10, "a failed reconnect")
        down_pending = pub.pending()
        mosquitto.start()
        assert done.wait(20)
        assert pub.wait_drained(20), f"still pending: {pub.pending()}"
        assert sub.wait_for(lambda msgs: len(_distinct(sub)) >= n, 15)
    finally:
        producer.join()
        pub.close()
    seqs = [r["seq"] for r in _distinct(sub)]
    assert sorted(seqs) == list(range(1, n + 1))  # none lost, none duplicated after de-duplication
    assert seqs == sorted(seqs), f"out of order around the outage (last seen before: {before_outage})"
    assert down_pending >= 40


def test_resent_results_stay_ahead_of_new_ones_when_the_link_drops(
    tmp_path: Path,
    mosquitto: Any,
    link: Any,
    subscriber_factory: Any,
    make_result: Any,
    mqtt_settings: Any,
    wait_until: Any,
) -> None:
    # paho calls on_connect before it re-sends what the broker never acknowledged; a publisher
    # that starts sending new rows from on_connect puts them on the wire first (CI once saw
    # seq 4 arrive after 15). Each cycle stalls the link with >= 8 rows in flight, drops it,
    # and lets rows pile up so new ones are waiting when it comes back. A slow log sink on
    # paho's network thread (CI's stderr had been closed under it) widens that window.
    class SlowOnNetworkThread(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if threading.current_thread().name.startswith("paho-mqtt-client-"):
                time.sleep(0.3)

    slow = SlowOnNetworkThread()
    edge_log = logging.getLogger("edge")
    level = edge_log.level
    edge_log.addHandler(slow)
    edge_log.setLevel(logging.INFO)
    n, cycles = 300, 3
    sub = subscriber_factory(mosquitto.url, "test/dev1/result")  # straight to the broker
    pub = _publisher(link.url, tmp_path / "o.sqlite", mqtt_settings, reconnect_min_s=1, reconnect_max_s=1).start()
    assert pub.wait_connected(10)
    produced = threading.Event()

    def produce() -> None:
        for i in range(n):
            pub.enqueue(make_result(i))
            time.sleep(0.004)
        produced.set()

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        for k in range(cycles):
            want = (k + 1) * 40
            wait_until(lambda want=want: len(sub.messages) >= want, 20, f"delivery before cut {k + 1}")
            link.hold()
            # Rows keep being committed and handed to paho; none is acknowledged while held.
            wait_until(lambda: pub.stats().results_total - pub.stats().acked_total >= 8, 10, "rows in flight")
            time.sleep(0.02)
            link.cut()
            wait_until(lambda: not pub.connected, 10, "publisher to notice the cut")
            assert pub.wait_connected(10)
        assert produced.wait(30)
        assert pub.wait_drained(30), f"still pending: {pub.pending()}"
        assert sub.wait_for(lambda msgs: len(_distinct(sub)) >= n, 15)
    finally:
        producer.join()
        pub.close()
        edge_log.removeHandler(slow)
        edge_log.setLevel(level)
    seqs = [r["seq"] for r in _distinct(sub)]
    assert sorted(seqs) == list(range(1, n + 1))
    assert len(sub.messages) > n, "no result was re-sent: the cuts did not catch any in flight"
    late = [(i, s) for i, s in enumerate(seqs) if i and s < seqs[i - 1]]
    assert not late, f"results delivered after later ones (position, seq): {late[:5]}"


def test_new_process_resumes_draining_the_same_outbox(
    tmp_path: Path,
    unstarted_broker: Any,
    subscriber_factory: Any,
    make_result: Any,
    mqtt_settings: Any,
) -> None:
    path = tmp_path / "o.sqlite"
    # Process 1: broker not up yet, queues 30 results and exits with them unsent.
    code = (
        "import sys\n"
        "from edge.config import parse_broker_url\n"
        "from edge.outbox import Outbox\n"
        "from edge.publisher import MqttSettings, Publisher\n"
        "from edge.result import Result\n"
        "s = MqttSettings(broker=parse_broker_url(sys.argv[1]), device_id='dev1', prefix='test')\n"
        "with Publisher(s, Outbox(sys.argv[2], device_id='dev1'), owns_outbox=True) as p:\n"
        "    for _ in range(30):\n"
        "        p.enqueue(Result.from_json(sys.argv[3]))\n"
        "    print(p.pending())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, unstarted_broker.url, str(path), make_result().to_json()],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert out.stdout.strip() == "30"
    # Process 2 (this one): same outbox file, broker now up.
    unstarted_broker.start()
    sub = subscriber_factory(unstarted_broker.url, "test/dev1/result")
    with _publisher(unstarted_broker.url, path, mqtt_settings) as pub:
        assert pub.pending() == 30
        assert pub.wait_drained(15)
        assert pub.enqueue(make_result()).seq == 31  # the sequence survived the restart
        assert pub.wait_drained(10)
    assert sub.wait_for(lambda msgs: len(msgs) >= 31, 10)
    assert [r["seq"] for r in _distinct(sub)] == list(range(1, 32))


def test_unreachable_broker_queues_logs_once_then_drains(
    tmp_path: Path,
    unstarted_broker: Any,
    make_result: Any,
    mqtt_settings: Any,
    wait_until: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edge.publisher")
    pub = _publisher(
        unstarted_broker.url,
        tmp_path / "o.sqlite",
        mqtt_settings,
        reconnect_min_s=1,
        reconnect_max_s=1,
    ).start()
    try:
        for i in range(20):
            pub.enqueue(make_result(i))
        assert pub.pending() == 20
        wait_until(lambda: pub.stats().connect_failures >= 3, 15, "three failed connects")
        for i in range(5):
            pub.enqueue(make_result(i))
        assert pub.pending() == 25 and not pub.connected
        unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(unreachable) == 1, [r.getMessage() for r in caplog.records]
        assert "queued" in unreachable[0].getMessage()
        unstarted_broker.start()
        assert pub.wait_drained(15)
        assert pub.pending() == 0
        assert any(r.getMessage() == "broker connected" for r in caplog.records)
    finally:
        pub.close()


def test_last_will_offline_when_process_is_killed(tmp_path: Path, mosquitto: Any, subscriber_factory: Any) -> None:
    code = (
        "import sys\n"
        "from edge.config import parse_broker_url\n"
        "from edge.outbox import Outbox\n"
        "from edge.publisher import MqttSettings, Publisher\n"
        "s = MqttSettings(broker=parse_broker_url(sys.argv[1]), device_id='devk', prefix='test')\n"
        "p = Publisher(s, Outbox(sys.argv[2], device_id='devk')).start()\n"
        "assert p.wait_connected(10)\n"
        "print('connected', flush=True)\n"
        "sys.stdin.read()\n"
    )
    sub = subscriber_factory(mosquitto.url, "test/devk/status")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, mosquitto.url, str(tmp_path / "k.sqlite")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "connected"
        assert sub.wait_for(lambda msgs: any(m.payload == b"online" for m in msgs), 10)
        proc.kill()  # SIGKILL: no clean disconnect, the broker must fire the will
        proc.wait(10)
        assert sub.wait_for(lambda msgs: msgs[-1].payload == b"offline", 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    late = subscriber_factory(mosquitto.url, "test/devk/status")  # retained for newcomers
    assert late.wait_for(lambda msgs: bool(msgs), 10)
    assert (late.messages[-1].payload, late.messages[-1].retain) == (b"offline", True)


def test_status_online_offline_and_stats(
    tmp_path: Path,
    mosquitto: Any,
    subscriber_factory: Any,
    make_result: Any,
    mqtt_settings: Any,
) -> None:
    sub = subscriber_factory(mosquitto.url, "test/dev1/+")
    pub = _publisher(mosquitto.url, tmp_path / "o.sqlite", mqtt_settings, stats_interval_s=0.3)
    with pub:
        pub.enqueue(make_result(0))
        pub.enqueue(make_result(1, status="rejected"))
        assert sub.wait_for(lambda msgs: any(m.topic.endswith("/stats") for m in msgs), 10)
    assert sub.wait_for(lambda msgs: msgs[-1].payload == b"offline", 10)
    status = [m.payload for m in sub.messages if m.topic.endswith("/status")]
    assert status[0] == b"online" and status[-1] == b"offline"
    stats = json.loads(next(m.payload for m in sub.messages if m.topic.endswith("/stats")))
    assert stats["schema"] == "raman-edge/stats/1" and stats["device_id"] == "dev1"
    assert stats["results_total"] == 2 and stats["rejected_total"] == 1
    assert {"spectra_per_s", "queue_depth", "dropped_total", "uptime_s", "model"} <= set(stats)
    assert set(stats["latency_ms"]) == {"p50", "p99"}
