#!/usr/bin/env bash
# The install a Raspberry Pi user does: build the wheel, `pip install 'raman_edge-*.whl[edge]'`
# into a fresh venv, then from an empty folder with no RRUFF data anywhere:
#   - `edge classify spectrum.csv` without --model (the bundle must come from the package);
#   - `edge run --simulate --count 5` against the local broker, 5 results seen by `edge watch`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$WORK/venv/bin/python" -m pip wheel -q --no-deps -w "$WORK/dist" "$ROOT" >/dev/null
WHEEL=$(ls "$WORK"/dist/raman_edge-*.whl)
"$WORK/venv/bin/python" -m pip install -q "${WHEEL}[edge]" 2> >(grep -v "is ignored: it is neither" >&2)
mkdir "$WORK/empty"
cd "$WORK/empty"
export RAMAN_RRUFF="$WORK/no-rruff-here"
# A spectrum file from the installed sample tray (the wheel's own data), written as CSV.
"$WORK/venv/bin/python" - <<'PY'
from firmware_bridge.library import load_tray
s = load_tray(["Calcite"])[0]
with open("calcite.csv", "w") as fh:
    fh.write("# corrected=true\nshift_cm1,intensity\n")
    fh.writelines(f"{x:.2f},{y:.5f}\n" for x, y in zip(s.shift_cm1, s.intensity))
PY
"$WORK/venv/bin/edge" classify calcite.csv --json > classify.json
"$WORK/venv/bin/python" -c "
import json; r = json.load(open('classify.json'))
r = r[0] if isinstance(r, list) else r
print('wheel smoke: classify ->', r.get('top', [[None]])[0] if r.get('top') else r)
assert r.get('status') == 'ok', r
"
DEV="wheel-smoke-$$"
"$WORK/venv/bin/edge" watch --broker mqtt://127.0.0.1:1883 --device-id "$DEV" --count 5 --json > watch.jsonl &
WATCH=$!
sleep 1  # edge watch subscribes before the daemon starts publishing (QoS 1, no retained results)
timeout 120 "$WORK/venv/bin/edge" run --simulate --count 5 --broker mqtt://127.0.0.1:1883 --device-id "$DEV" \
  --outbox "$WORK/state/outbox.sqlite" 2> run.log || { tail -20 run.log >&2; exit 1; }
if ! timeout 60 tail --pid=$WATCH -f /dev/null; then kill $WATCH; echo "wheel smoke: edge watch did not see 5 results" >&2; exit 1; fi
wait $WATCH
N=$(grep -c '"id"' watch.jsonl || true)
if [ "$N" -lt 5 ]; then echo "wheel smoke: $N of 5 results delivered" >&2; cat watch.jsonl >&2; exit 1; fi
if "$WORK/venv/bin/python" -c 'import tensorflow' 2>/dev/null; then echo "wheel smoke: TensorFlow installed by [edge]" >&2; exit 1; fi
echo "wheel smoke: classify without --model ok; $N results delivered from edge run --simulate (no RRUFF data)"
