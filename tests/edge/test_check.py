"""`edge check` against real things: the shipped bundle, an emulator on a pty, a Mosquitto."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokers import free_port
from typer.testing import CliRunner

from edge.bundle import DEFAULT_BUNDLE
from edge.cli import app
from firmware_bridge.emulator import Emulator, EmulatorConfig

runner = CliRunner()


def lines_by_check(output: str) -> dict[str, str]:
    out = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("OK", "FAIL", "SKIP"):
            out[parts[1]] = line
    return out


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    # Quartz from the built-in sample tray: no RRUFF download needed.
    emu = Emulator(EmulatorConfig(minerals=("Quartz",), seed=1, serial_number="EMU-CHECK"))
    emu.start()
    yield emu
    emu.stop()


def invoke(tmp_path: Path, *args: str) -> tuple[int, dict[str, str], str]:
    env = {"RAMAN_EDGE_OUTBOX_PATH": str(tmp_path / "state" / "outbox.sqlite")}
    res = runner.invoke(app, ["check", *args], env=env)
    assert "Traceback" not in res.output
    return res.exit_code, lines_by_check(res.stdout), res.stdout


def test_all_pass_with_emulator_and_broker(tmp_path: Path, emulator: Emulator, mosquitto: Any) -> None:
    rc, lines, out = invoke(tmp_path, "--port", emulator.port, "--broker", mosquitto.url)
    assert rc == 0, out
    assert set(lines) == {"bundle", "runtime", "inference", "serial", "broker", "outbox"}
    assert all(line.startswith("OK") for line in lines.values()), out
    assert "SHA-256 of" in lines["bundle"] and "classes" in lines["bundle"]
    assert "EMU-CHECK" in lines["serial"] and "1024 pixels" in lines["serial"] and "785 nm" in lines["serial"]
    assert "MQTT CONNECT accepted" in lines["broker"]
    assert "all 6 checks passed" in out


def test_no_port_is_skipped(tmp_path: Path, mosquitto: Any) -> None:
    rc, lines, out = invoke(tmp_path, "--broker", mosquitto.url)
    assert rc == 0, out
    assert lines["serial"].startswith("SKIP") and "no port configured" in lines["serial"]
    assert "1 skipped" in out


def test_unreachable_broker_and_missing_port(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    tty = tmp_path / "ttyNOPE"
    rc, lines, out = invoke(tmp_path, "--port", str(tty), "--broker", f"mqtt://127.0.0.1:{port}")
    assert rc == 1
    assert lines["broker"].startswith("FAIL")
    assert f"mqtt://127.0.0.1:{port}: TCP connect failed (Connection refused)" in lines["broker"]
    assert lines["serial"].startswith("FAIL")
    assert f"cannot open {tty}" in lines["serial"] and "does not exist" in lines["serial"]
    assert lines["bundle"].startswith("OK") and lines["outbox"].startswith("OK")
    assert "FAILED: 2 of 6 checks (serial, broker)" in out


def test_tampered_bundle_fails_and_skips_inference(tmp_path: Path, mosquitto: Any) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    model = bundle / "model.tflite"
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))
    rc, lines, out = invoke(tmp_path, "--model", str(bundle), "--broker", mosquitto.url)
    assert rc == 1
    assert lines["bundle"].startswith("FAIL")
    assert f"{model}: SHA-256 mismatch" in lines["bundle"]
    assert lines["inference"].startswith("SKIP")


def test_unwritable_outbox(tmp_path: Path, mosquitto: Any) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {"RAMAN_EDGE_OUTBOX_PATH": str(blocker / "sub" / "outbox.sqlite")}
    res = runner.invoke(app, ["check", "--broker", mosquitto.url], env=env)
    lines = lines_by_check(res.stdout)
    assert res.exit_code == 1
    assert lines["outbox"].startswith("FAIL") and "is not a directory" in lines["outbox"]
