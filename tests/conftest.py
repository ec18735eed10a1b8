"""Fixtures shared by every test package: a private Mosquitto broker and condition waits
(the helpers themselves are in tests/brokers.py, shared with bench/)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from brokers import MOSQUITTO, Broker, wait_until


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[[Callable[[], bool], float, str], None]:
    """`wait_until(cond, timeout_s, what)`: poll a condition, fail naming `what`."""
    return wait_until


@pytest.fixture
def unstarted_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker reserved on a free port but not running: start() it when the test wants."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto binary not installed")
    broker = Broker(tmp_path / "mosquitto")
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto(unstarted_broker: Broker) -> Broker:
    """A running broker on a free port (persistence on); stop()/start()/restart() it freely."""
    unstarted_broker.start()
    return unstarted_broker


@pytest.fixture
def link(mosquitto: Broker) -> Iterator[Any]:
    """A TCP relay to `mosquitto` that the test can hold and cut (see tests/link.py)."""
    from link import Link

    relay = Link(mosquitto.port)
    yield relay
    relay.close()
