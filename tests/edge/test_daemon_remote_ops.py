"""Remote operations on a running daemon over the real Mosquitto and the pty emulator:
auto-exposure via `set`, `acquire`, `calibrate` and the retained health message, `library/add`
and a library directory that changes (or is damaged) under the running daemon."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from brokers import Subscriber
from daemon_thread import DaemonThread

from edge.result import Result
from firmware_bridge.emulator import EmulatorConfig
from firmware_bridge.library import load_library
from firmware_bridge.physics import InstrumentModel

DEV = "ops"
PFX = "test"


@contextmanager
def daemon(tmp_path: Path, mosquitto: Any, emu_cfg: EmulatorConfig, **overrides: Any) -> Iterator[Subscriber]:
    c = Subscriber(mosquitto.url, f"{PFX}/{DEV}/result", f"{PFX}/{DEV}/response/#", f"{PFX}/{DEV}/health", mqtt5=True)
    device = DaemonThread(tmp_path, mosquitto.url, emu_cfg, device_id=DEV, prefix=PFX, **overrides)
    try:
        yield c
    finally:
        rc = device.stop()
        c.close()
    assert rc == 0


def results(c: Subscriber) -> list[Result]:
    return [Result.from_json(p) for p in c.on(f"{PFX}/{DEV}/result")]


def ask(c: Subscriber, command: str, body: dict[str, Any], timeout_s: float = 60) -> dict[str, Any]:
    topic = f"{PFX}/{DEV}/response/{command}"
    n = len(c.on(topic))
    c.publish(f"{PFX}/{DEV}/request/{command}", json.dumps(body), qos=1)
    assert c.wait_for(lambda ms: len([1 for m in ms if m.topic == topic]) > n, timeout_s), f"no response to {command}"
    return json.loads(c.on(topic)[n])


def test_auto_exposure_switched_on_by_set_keeps_bright_samples_off_full_scale(tmp_path: Path, mosquitto: Any) -> None:
    emu = EmulatorConfig(seed=5, hold=4, model=InstrumentModel(sample_brightness_spread=30.0, fluorescence_ratio=8.0))
    with daemon(tmp_path, mosquitto, emu, allow_requests=("status", "set"), max_acquisition_ms=2000) as c:
        assert c.wait_for(lambda ms: len(results(c)) >= 2, 60)
        r = ask(c, "set", {"auto_exposure": True, "transaction": "ae"})
        assert r["status"] == "ok" and r["data"]["auto_exposure"] is True and r["transaction"] == "ae", r
        assert c.wait_for(lambda ms: sum(x.instrument.auto_exposure for x in results(c)) >= 12, 120)
        auto = [x for x in results(c) if x.instrument.auto_exposure]
        assert all(x.instrument.integration_ms * (x.instrument.averages or 1) <= 2000 for x in auto)
        assert len({x.instrument.integration_ms for x in auto}) > 1, "one exposure for every brightness"
        saturated = [x for x in auto if x.reason and x.reason.startswith("saturated")]
        assert len(saturated) <= 1, [x.reason for x in auto]
        st = ask(c, "status", {})["data"]["acquisition"]
        assert st["auto_exposure"] is True and st["last_auto_exposure"]["integration_ms"] >= 1
        off = ask(c, "set", {"auto_exposure": False})
        assert off["status"] == "ok"
        n = len(results(c))
        assert c.wait_for(lambda ms: len(results(c)) >= n + 3 and not results(c)[-1].instrument.auto_exposure, 60)
        assert results(c)[-1].instrument.integration_ms == 100.0


def test_acquire_takes_count_spectra_at_the_given_settings_then_streams_on(tmp_path: Path, mosquitto: Any) -> None:
    with daemon(tmp_path, mosquitto, EmulatorConfig(seed=2), allow_requests=("status", "acquire")) as c:
        assert c.wait_for(lambda ms: len(results(c)) >= 2, 60)
        r = ask(c, "acquire", {"count": 3, "integration_ms": 40, "averages": 2, "transaction": 9})
        assert r["status"] == "ok" and r["transaction"] == 9 and r["data"]["count"] == 3, r
        seqs = set(r["data"]["seqs"])
        assert c.wait_for(lambda ms: seqs <= {x.seq for x in results(c)}, 30)
        got = [x for x in results(c) if x.seq in seqs]
        assert {(x.instrument.integration_ms, x.instrument.averages) for x in got} == {(40.0, 2)}
        n = len(results(c))
        assert c.wait_for(lambda ms: len(results(c)) >= n + 2, 30)
        assert results(c)[-1].instrument.integration_ms == 100.0
        assert "minimum" in ask(c, "acquire", {"count": 0})["error"]
        too_long = ask(c, "acquire", {"count": 1000, "integration_ms": 60000})
        assert too_long["status"] == "error" and "limit" in too_long["error"], too_long


def test_calibrate_publishes_retained_health_and_never_applies_the_offset_silently(
    tmp_path: Path, mosquitto: Any
) -> None:
    emu = EmulatorConfig(sample="polystyrene", seed=4, model=InstrumentModel(shift_error_cm1=6.0))
    with daemon(tmp_path, mosquitto, emu, allow_requests=("status", "calibrate"), calibration_frames=4) as c:
        assert c.wait_for(lambda ms: len(results(c)) >= 1, 60)
        bad = ask(c, "calibrate", {"reference": "unobtainium"})
        assert bad["status"] == "error" and "unknown reference" in bad["error"] and "polystyrene" in bad["error"]
        missing = ask(c, "calibrate", {})
        assert missing["status"] == "error" and "'reference' is a required property" in missing["error"]
        r = ask(c, "calibrate", {"reference": "polystyrene", "transaction": "c1"})
        assert r["status"] == "ok" and r["transaction"] == "c1", r
        h = r["data"]
        assert h["schema"] == "raman-edge/health/1" and h["status"] == "drift" and not h["applied"]
        assert abs(h["shift_offset_cm1"] - 6.0) < 1.5 and h["offset_in_use_cm1"] == 0.0
        assert c.wait_for(lambda ms: len(c.on(f"{PFX}/{DEV}/health")) >= 1, 30)
        assert json.loads(c.on(f"{PFX}/{DEV}/health")[-1]) == h
        n = len(results(c))
        assert c.wait_for(lambda ms: len(results(c)) >= n + 2, 30)
        assert results(c)[-1].instrument.shift_offset_cm1 == 0.0  # not applied without calibration_apply
        assert ask(c, "status", {})["data"]["health"]["status"] == "drift"
    # Retained: a consumer arriving later gets the last verdict at once.
    late = Subscriber(mosquitto.url, f"{PFX}/{DEV}/health", mqtt5=True)
    try:
        assert late.wait_for(lambda ms: len(ms) >= 1, 10)
        assert json.loads(late.messages[0].payload)["status"] == "drift"
    finally:
        late.close()


def test_periodic_check_with_calibration_apply_corrects_the_results(tmp_path: Path, mosquitto: Any) -> None:
    emu = EmulatorConfig(sample="polystyrene", seed=8, model=InstrumentModel(shift_error_cm1=6.0))
    with daemon(
        tmp_path,
        mosquitto,
        emu,
        allow_requests=("status",),
        calibration_reference="polystyrene",
        calibration_check_interval_s=3600.0,
        calibration_apply=True,
        calibration_frames=4,
    ) as c:
        assert c.wait_for(lambda ms: len(c.on(f"{PFX}/{DEV}/health")) >= 1, 60)
        h = json.loads(c.on(f"{PFX}/{DEV}/health")[-1])
        assert h["status"] == "drift" and h["applied"] is True, h
        assert c.wait_for(lambda ms: any(abs(x.instrument.shift_offset_cm1 - 6.0) < 1.5 for x in results(c)), 60)


def test_library_add_and_a_damaged_library_dir_under_a_running_daemon(tmp_path: Path, mosquitto: Any) -> None:
    libdir = tmp_path / "refs"
    spec = load_library(None, ("Quartz",))[0]
    with daemon(
        tmp_path,
        mosquitto,
        EmulatorConfig(seed=3),
        allow_requests=("status", "library/add"),
        library_dir=libdir,
        request_rate_per_s=20.0,
        request_burst=50,
    ) as c:
        assert c.wait_for(lambda ms: len(results(c)) >= 1, 60)
        assert ask(c, "status", {})["data"]["library"]["state"] == "none"
        bad = ask(c, "library/add", {"mineral": "Testite", "shift_cm1": [1.0] * 20, "intensity": [1.0] * 19})
        assert bad["status"] == "error" and "19" in bad["error"], bad
        wrong = ask(c, "library/add", {"mineral": "Testite", "shift_cm1": "x", "intensity": []})
        assert wrong["status"] == "error"
        body = {
            "mineral": "Testite",
            "shift_cm1": [round(float(v), 2) for v in spec.shift_cm1],
            "intensity": [round(float(v), 4) for v in spec.intensity],
            "corrected": True,
            "transaction": "L",
        }
        r = ask(c, "library/add", body)
        assert r["status"] == "ok" and r["data"]["references"] == 1 and r["transaction"] == "L", r

        def library_becomes(state: str, timeout_s: float = 30) -> dict[str, Any]:
            # Polls `status` (the daemon re-reads the directory every 2 s) until the state shows.
            deadline = time.monotonic() + timeout_s
            while True:
                lib = ask(c, "status", {})["data"]["library"]
                if lib["state"] == state or time.monotonic() > deadline:
                    return lib
                threading.Event().wait(0.3)

        st = library_becomes("loaded")
        assert st["state"] == "loaded" and st["added_minerals"] == ["Testite"], st
        (libdir / "library.npz").write_bytes(np.arange(100, dtype=np.uint8).tobytes())  # damaged
        st = library_becomes("refused")
        assert "SHA-256" in st["error"] and "bundle's own library" in st["using"], st
        n = len(results(c))
        assert c.wait_for(lambda ms: len(results(c)) >= n + 2, 30), "the daemon stopped measuring"
        refused = ask(c, "library/add", body)
        assert refused["status"] == "error" and "damaged" in refused["error"], refused


def test_a_foreign_library_dir_at_startup_is_refused_and_the_daemon_runs_on_the_bundle(
    tmp_path: Path, mosquitto: Any
) -> None:
    from edge.bundle import load_bundle
    from edge.library import build_library, save_library

    grid_n = load_bundle(None).spec.grid_n
    libdir = tmp_path / "refs"
    lib = build_library(("Otherite",), np.zeros(1), ["x"], np.zeros(1), np.ones((1, grid_n)))
    save_library(lib, libdir, model_sha256="0" * 64)  # made with another model
    with daemon(tmp_path, mosquitto, EmulatorConfig(seed=9), allow_requests=("status",), library_dir=libdir) as c:
        assert c.wait_for(lambda ms: len(results(c)) >= 2, 60)
        st = ask(c, "status", {})["data"]["library"]
        assert st["state"] == "refused" and "foreign library" in st["error"], st
        assert st["using"] == "the bundle's own library only"


def _install(models: Path, name: str, *, manifest_name: str | None = None, edit: Any = None) -> None:
    import shutil

    from edge.bundle import DEFAULT_BUNDLE

    d = models / name
    shutil.copytree(DEFAULT_BUNDLE, d)
    manifest = json.loads((d / "manifest.json").read_text())
    if manifest_name:
        manifest["name"] = manifest_name
    if edit is not None:
        edit(d, manifest)
    (d / "manifest.json").write_text(json.dumps(manifest))


def test_model_activate_verifies_self_tests_switches_and_rolls_back(tmp_path: Path, mosquitto: Any) -> None:
    import hashlib

    models = tmp_path / "models"

    def corrupt(d: Path, _m: dict[str, Any]) -> None:
        data = bytearray((d / "model.tflite").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (d / "model.tflite").write_bytes(bytes(data))

    def shuffle_labels(d: Path, m: dict[str, Any]) -> None:
        # Consistent hashes, wrong answers: only the self-test can catch this bundle.
        labels = json.loads((d / "labels.json").read_text())
        (d / "labels.json").write_text(json.dumps(labels[::-1]))
        m["files"]["labels.json"] = hashlib.sha256((d / "labels.json").read_bytes()).hexdigest()
        # Without its library, whose mineral list would give the shuffle away at load time.
        for f in ("library.npz", "library.json"):
            (d / f).unlink(missing_ok=True)
            m["files"].pop(f, None)
        m.pop("library", None)
        m.pop("fusion", None)

    _install(models, "copy", manifest_name="fmcnn-copy")
    _install(models, "broken", edit=corrupt)
    _install(models, "shuffled", manifest_name="fmcnn-shuffled", edit=shuffle_labels)
    with daemon(
        tmp_path, mosquitto, EmulatorConfig(seed=12), allow_requests=("status", "model/activate"), models_dir=models
    ) as c:
        assert c.wait_for(lambda ms: len(results(c)) >= 2, 60)
        nope = ask(c, "model/activate", {"name": "nope"})
        assert nope["status"] == "error" and "installed: broken, copy, shuffled, fmcnn-rruff" in nope["error"], nope
        broken = ask(c, "model/activate", {"name": "broken"})
        assert "verification failed" in broken["error"] and "still on fmcnn-rruff" in broken["error"], broken
        shuffled = ask(c, "model/activate", {"name": "shuffled"})
        assert "self-test failed" in shuffled["error"] and "rolled back" in shuffled["error"], shuffled
        assert {r.model.name for r in results(c)} == {"fmcnn-rruff"}
        ok = ask(c, "model/activate", {"name": "copy", "transaction": "m"})
        assert ok["status"] == "ok" and ok["data"]["active"] == "fmcnn-copy" and ok["data"]["changed"], ok
        assert ok["data"]["self_test"]["correct"] >= ok["data"]["self_test"]["known"] // 2
        assert c.wait_for(lambda ms: results(c)[-1].model.name == "fmcnn-copy", 30)
        assert ask(c, "status", {})["data"]["model"]["name"] == "fmcnn-copy"
        back = ask(c, "model/activate", {"name": "fmcnn-rruff"})
        assert back["status"] == "ok" and back["data"]["active"] == "fmcnn-rruff", back
        assert c.wait_for(lambda ms: results(c)[-1].model.name == "fmcnn-rruff", 30)
