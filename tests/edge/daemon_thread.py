"""`edge.daemon.run` on a thread against its own pty emulator: a device on the test's broker.

In-process (not a subprocess) so that tests can stop it with an event and read its exit code;
tests/edge/test_daemon.py has the subprocess variant where a SIGKILL is the point.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from edge.config import load_config
from edge.daemon import run
from firmware_bridge.emulator import Emulator, EmulatorConfig


class DaemonThread:
    """Start the emulator and the daemon (config overrides on top of the test defaults);
    `stop()` ends acquisition, waits for the drain and returns the exit code (None: still running)."""

    def __init__(
        self,
        state_dir: Path,
        broker_url: str,
        emulator: EmulatorConfig | None = None,
        *,
        device_id: str,
        prefix: str = "test",
        **overrides: Any,
    ) -> None:
        self.emulator = Emulator(emulator or EmulatorConfig())
        self.cfg = load_config(
            None,
            env={},
            overrides={
                "port": self.emulator.start(),
                "broker": broker_url,
                "device_id": device_id,
                "prefix": prefix,
                "outbox_path": state_dir / "outbox.sqlite",
                "integration_ms": 100,
                **overrides,
            },
        )
        self._stop = threading.Event()
        self._rc: list[int] = []
        self._thread = threading.Thread(target=lambda: self._rc.append(run(self.cfg, stop=self._stop)))
        self._thread.start()

    def stop(self, timeout_s: float = 120.0) -> int | None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout_s)
            self.emulator.stop()
        return self._rc[0] if self._rc else None

    def __enter__(self) -> DaemonThread:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
