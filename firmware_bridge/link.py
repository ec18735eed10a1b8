"""Link events: what a transport reports besides decoded messages (no I/O here).

They live apart from `transport.py` so the sans-I/O host session can take them as events
without importing pyserial; `firmware_bridge.transport` re-exports both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinkDown:
    """The port failed or vanished; the transport is trying to reopen it."""

    port: str
    reason: str


@dataclass(frozen=True)
class LinkUp:
    """The port was reopened after a LinkDown (the device may have rebooted)."""

    port: str
