"""Fixtures shared by every test package: a private Mosquitto broker and condition waits."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str = "condition") -> None:
    """Poll `cond` until true; fail the test naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


class Broker:
    """A mosquitto on its own port and directory; stop()/start() keep port and state."""

    def __init__(self, workdir: Path, port: int | None = None, persistence: bool = True) -> None:
        self.port = port or free_port()
        self.dir = workdir
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # Started as root, mosquitto would switch to user "mosquitto" and could not read
            # or write our 0700 tmp dirs (persistence, TLS keys); as non-root this is ignored.
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            f"persistence {'true' if persistence else 'false'}\n"
            f"persistence_location {workdir}/\n"
            "autosave_interval 0\n"
            f"log_dest file {workdir}/mosquitto.log\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._accepts, timeout_s, f"mosquitto on port {self.port}")

    def stop(self) -> None:
        # SIGTERM: mosquitto writes its persistence file, so sessions survive a restart.
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

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


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[[Callable[[], bool], float, str], None]:
    """`wait_until(cond, timeout_s, what)`: poll a condition, fail naming `what`."""
    return wait_until


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A running broker on a free port (persistence on); stop()/start()/restart() it freely."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto binary not installed")
    d = tmp_path / "mosquitto"
    d.mkdir()
    broker = Broker(d)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def unstarted_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker reserved on a free port but not running: start() it when the test wants."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto binary not installed")
    d = tmp_path / "mosquitto"
    d.mkdir()
    broker = Broker(d)
    yield broker
    broker.stop()


@pytest.fixture
def link(mosquitto: Broker) -> Iterator[Any]:
    """A TCP relay to `mosquitto` that the test can hold and cut (see tests/link.py)."""
    from link import Link

    relay = Link(mosquitto.port)
    yield relay
    relay.close()
