from __future__ import annotations

from collections.abc import Iterator

import pytest
from rruff_data import require_rruff

from firmware_bridge.library import load_library
from raman_core.rruff_format import RamanSpectrum

#: A few minerals are enough for link tests; loading them from the shared zip takes ~0.1 s.
LINK_MINERALS = ("Quartz", "Calcite", "Rutile")


@pytest.fixture(scope="session")
def small_library() -> list[RamanSpectrum]:
    return load_library(require_rruff(), LINK_MINERALS)


@pytest.fixture
def make_emulator(small_library: list[RamanSpectrum]) -> Iterator[object]:
    from firmware_bridge.emulator import Emulator, EmulatorConfig

    started: list[Emulator] = []

    def factory(**kwargs: object) -> Emulator:
        emu = Emulator(EmulatorConfig(**kwargs), library=small_library)  # type: ignore[arg-type]
        emu.start()
        started.append(emu)
        return emu

    yield factory
    for emu in started:
        emu.stop()
