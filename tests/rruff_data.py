"""Where tests find the full RRUFF copy, and what happens when it is not there.

Tests that need the full copy call `require_rruff()`: without it they skip, naming
`RAMAN_RRUFF`; under `CI=true` a missing copy fails instead, so CI never passes by skipping.
Everything the device needs at run time (model, sample tray) ships in the packages, so most
edge and bridge tests do not need it at all.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raman_core.rruff_format import default_rruff_path

RRUFF_PATH: Path = default_rruff_path()


def require_rruff() -> Path:
    if RRUFF_PATH.exists():
        return RRUFF_PATH
    msg = (
        f"the full RRUFF copy is not at {RRUFF_PATH}; set RAMAN_RRUFF to a RRUFF folder or zip "
        "(e.g. excellent_unoriented.zip from rruff.info) to run this test"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {msg}", pytrace=False)
    pytest.skip(msg)
