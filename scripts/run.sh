#!/usr/bin/env bash
# Sets everything up, then runs the main job: the edge daemon against the built-in
# spectrometer emulator (RRUFF-derived spectra on a pseudo-terminal), with the shipped model,
# publishing to the local MQTT broker (started here if none is running). Extra arguments go
# to `edge run`, e.g. `bash scripts/run.sh --count 20 --rate 2`. Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  echo "run.sh: no MQTT broker on 127.0.0.1:1883; starting mosquitto"
  mosquitto -d -p 1883 2>/dev/null || /usr/sbin/mosquitto -d -p 1883
  sleep 0.5
fi
exec .venv/bin/edge run --simulate "$@"
