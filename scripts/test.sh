#!/usr/bin/env bash
# Sets everything up and runs the full test suite; CI (.ci/run) runs exactly this.
#  1. the full environment (.venv: trainer + edge + dev): ruff check and format, then every test;
#  2. the device environment (.venv-edge: `pip install .[edge]`, no TensorFlow): edge and
#     firmware_bridge tests, proving neither imports TensorFlow;
#     then the wheel smoke test: `pip install <wheel>[edge]`, run from an empty folder with no RRUFF;
#  3. the oldest runtimes a Raspberry Pi gets: tflite-runtime 2.14 (numpy < 2) and
#     ai-edge-litert 1.4: the shipped bundle loads and agrees with the reference outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

run_pytest() {
  # pytest exit code 5 means "no tests collected": that is a failure here, not a pass.
  set +e
  "$@"
  local rc=$?
  set -e
  if [ $rc -eq 5 ]; then echo "test.sh: no tests were collected by: $*" >&2; exit 1; fi
  if [ $rc -ne 0 ]; then exit $rc; fi
}

echo "== 1/3 full environment"
# Lint and format first: a second is cheaper than a test run spent on a file that drifted.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
run_pytest .venv/bin/python -m pytest -q -p no:cacheprovider

echo "== 2/3 device environment without TensorFlow (pip install .[edge])"
if [ ! -x .venv-edge/bin/python ]; then python3 -m venv .venv-edge; fi
.venv-edge/bin/python -m pip install -q --upgrade pip >/dev/null
.venv-edge/bin/python -m pip install -q '.[edge]' pytest pytest-timeout hypothesis jsonschema
if .venv-edge/bin/python -c 'import tensorflow' >/dev/null 2>&1; then
  echo "test.sh: TensorFlow is importable in the edge environment" >&2; exit 1
fi
# Imports come from the checkout (python -m pytest puts it on sys.path); what matters is that
# this environment has no TensorFlow, so any import of it by edge/ or firmware_bridge/ fails.
run_pytest env RAMAN_REQUIRE_NO_TF=1 .venv-edge/bin/python -m pytest -q -p no:cacheprovider \
  --rootdir . tests/edge tests/firmware_bridge

echo "== 2b/3 wheel install from an empty folder, no RRUFF data (what a Pi user does)"
bash scripts/wheel_smoke.sh

echo "== 3/3 oldest device runtimes"
if [ ! -x .venv-tflite/bin/python ]; then python3 -m venv .venv-tflite; fi
.venv-tflite/bin/python -m pip install -q --upgrade pip >/dev/null
.venv-tflite/bin/python -m pip install -q 'numpy<2' 'scipy<1.14' 'tflite-runtime==2.14.0' pybaselines typer \
  pyserial 'paho-mqtt>=2,<3' pytest pytest-timeout hypothesis
.venv-tflite/bin/python -m pip install -q --no-deps .
run_pytest env RAMAN_TFLITE_RUNTIME=tflite_runtime .venv-tflite/bin/python -m pytest -q -p no:cacheprovider \
  tests/edge/test_runtime_compat.py

if [ ! -x .venv-litert14/bin/python ]; then python3 -m venv .venv-litert14; fi
.venv-litert14/bin/python -m pip install -q --upgrade pip >/dev/null
.venv-litert14/bin/python -m pip install -q 'ai-edge-litert==1.4.0' scipy pybaselines typer pyserial \
  'paho-mqtt>=2,<3' pytest pytest-timeout hypothesis
.venv-litert14/bin/python -m pip install -q --no-deps .
run_pytest env RAMAN_TFLITE_RUNTIME=ai_edge_litert .venv-litert14/bin/python -m pytest -q -p no:cacheprovider \
  tests/edge/test_runtime_compat.py
echo "test.sh: all environments passed"
