"""Shipped model bundles (package data), so an installed `edge` finds its default model.

`default_bundle_path()` resolves through importlib.resources: the same answer from a
checkout, an editable install or a wheel in site-packages, whatever the current directory.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT_BUNDLE_NAME = "fmcnn-rruff"


def default_bundle_path() -> Path:
    """Directory of the shipped default bundle (models/fmcnn-rruff)."""
    return Path(str(resources.files(__name__).joinpath(DEFAULT_BUNDLE_NAME)))
