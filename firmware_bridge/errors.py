"""One exception family for firmware_bridge.

`ProtocolError`: the device sent bytes we cannot accept (the codec counts and resyncs);
`DeviceError`: the device answered NACK or timed out; `UsageError`: caller misuse.
"""

from __future__ import annotations

from raman_core.errors import RamanError


class BridgeError(RamanError):
    """Root of every error firmware_bridge raises on purpose."""


class ProtocolError(BridgeError):
    """Bytes on the wire violate the protocol (bad CRC, oversize frame, unknown type...)."""


class DeviceError(BridgeError):
    """The device refused a command (NACK), timed out, or went away."""


class UsageError(BridgeError):
    """The API was called wrongly (a bug in the caller, not bad device data)."""
