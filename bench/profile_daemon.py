"""Where the daemon's acquisition thread spends its time at a 2 ms stream (a cProfile profile).

    .venv/bin/python bench/profile_daemon.py [--seconds 30] [--pixels 1360] [--out DIR]

The same world as bench/throughput.py (Mosquitto, the emulator as its own process, a paho
subscriber) with the daemon run under `python -m cProfile -o DIR/daemon.prof`; the profile
covers the daemon's main thread (acquisition, analysis, outbox commit) - the serial reader,
publisher and outbox syncer threads are not in it. Prints the top functions by own and
cumulative time and writes them to DIR/daemon_profile.txt. A diagnostic, not a result.
"""

from __future__ import annotations

import argparse
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

import _harness as h
from throughput import EmulatorProcess


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--pixels", type=int, default=1360)
    ap.add_argument("--period-ms", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/raman-profile"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    prof = args.out / "daemon.prof"
    with tempfile.TemporaryDirectory(prefix="bench-prof-") as tmp:
        d = Path(tmp)
        broker = h.Broker(d / "mosquitto")
        broker.start()
        sub = h.Subscriber(broker.port, "bench/prof/result")
        emu = EmulatorProcess(args.pixels, d / "tty", d / "gt.jsonl", seed=3)
        run = h.spawn_daemon(
            port=str(emu.link),
            broker_url=broker.url,
            outbox=d / "outbox.sqlite",
            device_id="prof",
            integration_ms=args.period_ms,
            argv_prefix=[sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "edge.cli"],
        )
        try:
            h.wait_until(lambda: sub.unique_ids() >= 1, 90, 0.05)
            n0, t0 = sub.unique_ids(), time.monotonic()
            time.sleep(args.seconds)
            n1, t1 = sub.unique_ids(), time.monotonic()
            run.terminate(120)
        finally:
            run.kill()
            emu.stop()
            sub.close()
            broker.stop()
    buf = io.StringIO()
    buf.write(f"delivered {(n1 - n0) / (t1 - t0):.1f}/s under the profiler over {t1 - t0:.0f} s\n")
    st = pstats.Stats(str(prof), stream=buf)
    st.sort_stats("tottime").print_stats(30)
    st.sort_stats("cumulative").print_stats(40)
    (args.out / "daemon_profile.txt").write_text(buf.getvalue())
    print(buf.getvalue()[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
