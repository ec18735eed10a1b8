"""One exception family for the trainer; data problems reuse edge's InputError."""

from __future__ import annotations

from edge.errors import EdgeError, InputError


class TrainerError(EdgeError):
    """Root of errors the trainer raises on purpose."""


class ExportError(TrainerError):
    """A bundle could not be exported (e.g. int8 parity below the bar)."""


__all__ = ["TrainerError", "ExportError", "InputError"]
