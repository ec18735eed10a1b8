"""Prometheus /metrics of a running daemon, scraped with a real HTTP client."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path
from typing import Any

from brokers import free_port
from prometheus_client.parser import text_string_to_metric_families

from edge.config import load_config
from edge.daemon import run
from firmware_bridge.emulator import Emulator, EmulatorConfig


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_endpoint_counts_spectra_and_reports_state(tmp_path: Path, mosquitto: Any, wait_until: Any) -> None:
    emu = Emulator(EmulatorConfig(seed=5))
    port = emu.start()
    mport = free_port()
    cfg = load_config(
        None,
        env={},
        overrides={
            "port": port,
            "broker": mosquitto.url,
            "device_id": "mx",
            "prefix": "test",
            "outbox_path": tmp_path / "outbox.sqlite",
            "integration_ms": 100,
            "metrics_port": mport,
        },
    )
    stop = threading.Event()
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(run(cfg, stop=stop)))
    t.start()
    try:

        def total() -> float:
            try:
                m = scrape(mport)
            except OSError:
                return 0.0
            return sum(v for (n, _l), v in m.items() if n == "raman_edge_spectra_total")

        wait_until(lambda: total() >= 8, 60, "8 spectra counted in /metrics")
        m = scrape(mport)
        ok = m.get(("raman_edge_spectra_total", (("status", "ok"),)), 0.0)
        rej = m.get(("raman_edge_spectra_total", (("status", "rejected"),)), 0.0)
        assert ok + rej >= 8
        n_pre = m[("raman_edge_stage_seconds_count", (("stage", "preprocess"),))]
        assert n_pre >= ok  # every classified spectrum went through preprocessing
        assert m[("raman_edge_stage_seconds_sum", (("stage", "total"),))] > 0
        assert m[("raman_edge_serial_link_up", ())] == 1.0
        wait_until(lambda: scrape(mport)[("raman_edge_broker_connected", ())] == 1.0, 20, "broker connected")
        wait_until(lambda: scrape(mport)[("raman_edge_history_rows", ())] >= 5, 20, "history rows")
        assert ("raman_edge_outbox_pending", ()) in m
        mosquitto.stop()
        wait_until(lambda: scrape(mport)[("raman_edge_broker_connected", ())] == 0.0, 30, "broker down seen")
        mosquitto.start()
    finally:
        stop.set()
        t.join(60)
        emu.stop()
    assert rc == [0]
