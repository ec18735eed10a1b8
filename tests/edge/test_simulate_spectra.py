"""`edge run --simulate --spectra PATH`: the emulator serves a RRUFF folder instead of the tray.

A real run (`edge run` through the CLI, emulator on a pty, Mosquitto on a free port, a paho
subscriber) on a folder the test writes: RRUFF Processed files of one mineral, copied from the
sample tray. With the tray, four spectra would come from ~20 minerals; from the folder every
one is that mineral.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.result import Result
from firmware_bridge.library import load_tray

MINERAL = "Quartz"


def write_rruff_folder(folder: Path, mineral: str) -> int:
    """The tray's spectra of `mineral` as RRUFF text files in `folder`; returns how many."""
    folder.mkdir()
    spectra = load_tray([mineral])
    for s in spectra:
        ok = np.isfinite(s.intensity)
        rows = "".join(f"{x:.2f}, {y:.6g}\n" for x, y in zip(s.shift_cm1[ok], s.intensity[ok], strict=True))
        (folder / Path(s.file).name).write_text(
            f"##NAMES={s.mineral}\n##RRUFFID={s.rruff_id}\n"
            "##STATUS=The identification of this mineral has been confirmed by X-ray diffraction.\n"
            f"{rows}##END=\n"
        )
    return len(spectra)


def test_run_simulate_serves_the_given_folder(tmp_path: Path, mosquitto: Any, subscriber_factory: Any) -> None:
    folder = tmp_path / "rruff"
    assert write_rruff_folder(folder, MINERAL) >= 1
    sub = subscriber_factory(mosquitto.url, "test/sim/#")
    n = 4
    res = CliRunner().invoke(
        app,
        [
            "run",
            "--simulate",
            "--spectra",
            str(folder),
            "--rate",
            "5",
            "--count",
            str(n),
            "--broker",
            mosquitto.url,
            "--prefix",
            "test",
            "--device-id",
            "sim",
            "--outbox",
            str(tmp_path / "outbox.sqlite"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert sub.wait_for(lambda ms: sum(m.topic.endswith("/result") for m in ms) >= n, 10)
    results = [Result.from_json(m.payload) for m in sub.messages if m.topic.endswith("/result")]
    assert len({r.id for r in results}) == n
    ok = [r for r in results if r.status == "ok"]
    assert len(ok) >= n - 1, [r.reason for r in results]
    assert [r.top[0].mineral for r in ok] == [MINERAL] * len(ok)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda d: d / "nowhere", "does not exist"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "no Processed X-ray-confirmed RRUFF spectra"),
    ],
    ids=["missing", "no-spectra"],
)
def test_bad_spectra_path_is_one_line_and_nonzero(tmp_path: Path, make: Any, says: str) -> None:
    path = make(tmp_path)
    res = CliRunner().invoke(
        app,
        ["run", "--simulate", "--spectra", str(path), "--count", "1", "--outbox", str(tmp_path / "o.sqlite")],
    )
    assert res.exit_code == 2, res.output
    assert says in res.output and str(path) in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_spectra_without_simulate_is_refused(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["run", "--port", "/dev/null", "--spectra", str(tmp_path), "--outbox", str(tmp_path / "o.sqlite")]
    )
    assert res.exit_code == 2 and "--simulate" in res.output, res.output
