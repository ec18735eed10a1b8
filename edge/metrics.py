"""Prometheus `/metrics` for the daemon (config `metrics_port`, 0 = off; `metrics_host`).

A registry of our own (not prometheus_client's global one), so two daemons in one test
process, or a library user, never see each other's series. Sizes and link states are read
when scraped (set_function), so they cannot go stale between results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge.errors import ConfigError

#: Per-stage buckets, s: the pipeline stages take ~0.1-20 ms, commit (fsync) up to ~100 ms on SD.
STAGE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
STAGES = ("decode", "preprocess", "classify", "deconv", "commit", "total")


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.spectra = Counter(
            "raman_edge_spectra",
            "Spectra processed, by outcome (ok, rejected, outbox_full)",
            ["status"],
            registry=self.registry,
        )
        self.unknown = Counter(
            "raman_edge_unknown", "Classified spectra below the model's confidence threshold", registry=self.registry
        )
        self.stage = Histogram(
            "raman_edge_stage_seconds",
            "Latency per pipeline stage",
            ["stage"],
            buckets=STAGE_BUCKETS_S,
            registry=self.registry,
        )
        self._gauges: dict[str, Any] = {}
        for name, doc in (
            ("raman_edge_outbox_pending", "Results in the outbox not yet acknowledged by the broker"),
            ("raman_edge_history_rows", "Acknowledged results held for replay"),
            ("raman_edge_broker_connected", "1 while the publisher's broker session is ready"),
            ("raman_edge_serial_link_up", "1 while the spectrometer link is up"),
        ):
            self._gauges[name] = Gauge(name, doc, registry=self.registry)
        self._gauges["raman_edge_serial_link_up"].set(0)
        self._server: Any = None

    def bind(self, name: str, fn: Callable[[], float]) -> None:
        self._gauges[name].set_function(fn)

    def set_link(self, up: bool) -> None:
        self._gauges["raman_edge_serial_link_up"].set(1 if up else 0)

    def observe_result(self, status: str, unknown: bool, latency_ms: Any) -> None:
        self.spectra.labels(status=status).inc()
        if unknown:
            self.unknown.inc()
        for stage in STAGES:
            v = getattr(latency_ms, stage, None)
            if v is not None:
                self.stage.labels(stage=stage).observe(v / 1000.0)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint; returns the bound port (port 0 is not used: 0 = off)."""
        from prometheus_client import start_http_server

        try:
            self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as err:
            raise ConfigError(f"metrics_port {port} on {host}: cannot listen ({err.strerror})") from None
        return int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
