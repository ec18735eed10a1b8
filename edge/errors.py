"""One exception family for the edge package.

`InputError` subclasses mean the data (a spectrum, a file, a bundle, a config) is bad;
`UsageError` means our caller misused the API. The CLI prints `str(err)` and exits non-zero.
"""

from __future__ import annotations

from raman_core import errors as core


class EdgeError(core.RamanError):
    """Root of every error the edge package raises on purpose."""


class InputError(EdgeError, core.DataError):
    """The data handed to us is unusable; the message says what and why."""


class FileFormatError(InputError, core.FileFormatError):
    """A data file could not be read: carries the file, a 1-based line (or None) and a reason key."""


class SpectrumError(InputError):
    """A spectrum cannot be turned into model input (NaN, empty, too short, flat...)."""


class BundleError(InputError):
    """A model bundle is missing, incomplete, tampered with, or incompatible."""


class ConfigError(InputError):
    """The configuration (TOML, environment, flags) is invalid."""


class RuntimeNotFoundError(EdgeError):
    """No TFLite runtime (ai_edge_litert or tflite_runtime) is installed."""


class UsageError(EdgeError):
    """The API was called wrongly (a bug in the caller, not bad data)."""


class PayloadError(InputError):
    """A result payload does not match the `raman-edge/result/1` schema."""


class OutboxError(EdgeError):
    """The on-disk outbox cannot be opened or written."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class OutboxFullError(OutboxError):
    """The outbox could not commit a result because the disk (or its page cap) is full.

    The result was NOT stored: the caller must log/print it, it will not be published.
    """


class BrokerError(EdgeError):
    """The MQTT broker could not be used (bad URL scheme, TLS files, credentials)."""
