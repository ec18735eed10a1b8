"""The device side never imports TensorFlow or Keras.

Runs in a fresh interpreter so that modules other tests imported (the trainer tests load
TensorFlow in the full environment) cannot hide an import. CI also runs the edge and
firmware_bridge suites in an environment made by `pip install .[edge]`, where
RAMAN_REQUIRE_NO_TF=1 additionally asserts that TensorFlow is not even installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import json, sys, numpy as np
import edge, edge.cli, edge.daemon, edge.pipeline, edge.offline, edge.check, edge.watch
import firmware_bridge, firmware_bridge.cli, firmware_bridge.emulator, firmware_bridge.client
from edge.bundle import load_bundle
from edge.pipeline import Analyzer
b = load_bundle()
a = Analyzer(b)
from firmware_bridge.library import load_tray
q = next(s for s in load_tray(["Quartz"]))  # a real RRUFF quartz spectrum from the sample tray
r = a.analyze_corrected(q.shift_cm1, q.intensity)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "sklearn", "torch"))
print(json.dumps({"status": r.status, "top": r.top[0][0] if r.top else None, "heavy": heavy}))
"""


def test_edge_and_bridge_run_without_importing_tensorflow() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["status"] == "ok" and result["top"] == "Quartz"


@pytest.mark.skipif(os.environ.get("RAMAN_REQUIRE_NO_TF") != "1", reason="only in the pip install .[edge] environment")
def test_tensorflow_is_not_installed_in_the_device_environment() -> None:
    assert importlib.util.find_spec("tensorflow") is None
    assert importlib.util.find_spec("keras") is None
