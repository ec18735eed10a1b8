"""Fault matrix against the real daemon: what is lost, duplicated, and how fast it recovers.

    .venv/bin/python bench/faults.py [--quick] [--out bench/results] [--only case,case]

Each case builds its own world: a Mosquitto on a free port (own conf and state directory,
persistence on unless the case says otherwise), the pty emulator in this process (with a
stable --link so the daemon can reopen a replugged port), `python -m edge.cli run` as a real
subprocess with its own outbox file, and a paho subscriber (persistent session, QoS 1) that
records every delivery. The daemon streams at 10 spectra/s (integration 100 ms). After a
warm-up the fault is injected; once it is over and `post` fresh results have arrived, the
daemon is stopped with SIGTERM (graceful drain) and its exit code recorded.

Definitions (see `_harness.py` for the records they come from):

* sent: SPECTRUM frames the emulator generated for the host's stream (light, streamed,
  after the host's first command); stale frames and dark-frame replies are listed apart.
* delivered: unique result ids the subscriber received; deliveries: before de-duplication;
  duplicated = deliveries - delivered.
* committed lost: results the daemon printed as committed to its outbox (outbox seq) that the
  subscriber never received. Store-and-forward promises 0 here.
* not stored: results the daemon built but could not commit (outbox full); printed in full
  on its stdout, never delivered.
* frames unprocessed: sent frames, up to the last frame that became a result, with no result,
  by cause: corrupted / dropped by fault injection, tx overflow (nobody reading the port),
  in the fault window (from 0.5 s before the fault start, the emulator's flush before an unplug, to
  the first fresh result), unexplained.
* recover: fault end -> first delivered result acquired after the fault end ("fresh"); also
  fault end -> first delivery of any result (e.g. the backlog drained from the outbox).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _harness as h
import common

from firmware_bridge.emulator import EmulatorConfig, Faults

NAME = "faults"
INTEGRATION_MS = 100  # stream period: 10 spectra/s
FLUSH_S = 0.5  # the emulator's transmit flush before a simulated unplug


@dataclass
class Params:
    quick: bool
    warmup: int = 10  # results delivered before the fault
    post: int = 10  # fresh results delivered after the fault before stopping
    broker_down_s: float = 30.0
    clean_down_s: float = 5.0
    kill_gap_s: float = 2.0
    replug_s: float = 5.0
    corrupt_s: float = 60.0
    garbage_s: float = 30.0
    stale_lead_s: float = 3.0
    tmpfs_bytes: int = 8 * 1024 * 1024
    disk_free_bytes: int = 640 * 1024  # left free by the filler file: room for a backlog > the 32-row window
    disk_full_max_s: float = 30.0
    disk_full_observe_s: float = 15.0
    slow_consumer_retry_s: int = 8  # the slow consumer's reconnect interval

    @classmethod
    def make(cls, quick: bool) -> Params:
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            warmup=3,
            post=3,
            broker_down_s=3.0,
            clean_down_s=2.0,
            slow_consumer_retry_s=3,
            kill_gap_s=1.0,
            replug_s=2.0,
            corrupt_s=4.0,
            garbage_s=3.0,
            stale_lead_s=1.0,
            disk_full_max_s=8.0,
            disk_full_observe_s=2.0,
        )


@dataclass
class World:
    name: str
    dir: Path
    broker: h.Broker
    sub: h.Subscriber
    emu: h.TracingEmulator
    outbox: Path
    runs: list[h.DaemonRun] = field(default_factory=list)
    fault_start: float | None = None
    fault_end: float | None = None
    fault_end_wall: float | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def spawn(self, **kw: Any) -> h.DaemonRun:
        kw.setdefault("integration_ms", INTEGRATION_MS)
        run = h.spawn_daemon(
            port=self.emu.port,
            broker_url=self.broker.url,
            outbox=self.outbox,
            device_id=self.name.replace("_", "-"),
            **kw,
        )
        self.runs.append(run)
        return run

    @property
    def daemon(self) -> h.DaemonRun:
        return self.runs[-1]

    def mark_fault(self, start: float | None = None) -> None:
        self.fault_start = time.monotonic() if start is None else start

    def mark_end(self, end: float | None = None) -> None:
        self.fault_end = time.monotonic() if end is None else end
        self.fault_end_wall = time.time() - (time.monotonic() - self.fault_end)

    def wait_delivered(self, n: int, timeout_s: float) -> bool:
        return h.wait_until(lambda: self.sub.unique_ids() >= n, timeout_s, 0.05)

    def wait_fresh(self, n: int, timeout_s: float) -> bool:
        assert self.fault_end_wall is not None
        wall = self.fault_end_wall
        return h.wait_until(
            lambda: len({d.id for d in self.sub.snapshot() if d.acquired_at >= wall}) >= n, timeout_s, 0.05
        )


def topic(name: str) -> str:
    return f"bench/{name.replace('_', '-')}/result"


# -- the cases: each injects its fault into a running world ------------------------------------


def case_broker_outage(w: World, p: Params) -> None:
    w.mark_fault()
    w.broker.stop()
    time.sleep(p.broker_down_s)
    w.mark_end(w.broker.start())
    w.extra["broker_down_s"] = p.broker_down_s


def case_broker_clean_session(w: World, p: Params) -> None:
    # A broker replaced/reinstalled: it comes back with no sessions and no queued messages.
    w.mark_fault()
    w.broker.stop()
    w.broker.wipe_state()
    w.broker.write_conf(persistence=False)
    time.sleep(p.clean_down_s)
    w.mark_end(w.broker.start())
    w.extra["broker_down_s"] = p.clean_down_s


def replay_request(port: int, device: str, since_seq: int, timeout_s: float = 30.0) -> dict[str, Any] | None:
    """Send one `replay` request as a consumer would and return the response (None: no answer)."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[bytes] = []
    ready, answered = threading.Event(), threading.Event()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"bench-replay-{device}")
    c.on_connect = lambda cl, u, f, rc, pr: cl.subscribe(f"bench/{device}/response/replay", qos=1)
    c.on_subscribe = lambda *a: ready.set()
    c.on_message = lambda cl, u, m: (got.append(bytes(m.payload)), answered.set())
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        if not ready.wait(10):
            return None
        body = json.dumps({"since_seq": since_seq, "transaction": "bench"})
        c.publish(f"bench/{device}/request/replay", body, qos=1)
        return json.loads(got[0]) if answered.wait(timeout_s) else None
    finally:
        c.disconnect()
        c.loop_stop()


def case_broker_clean_session_replay(w: World, p: Params) -> None:
    # The clean-session fault, then the consumer's rule from docs/mqtt.md: once it is back and
    # receiving, it asks for a replay from the first seq it never saw.
    case_broker_clean_session(w, p)
    assert w.fault_end is not None
    fault_end = w.fault_end
    h.wait_until(lambda: any(t >= fault_end for t in w.sub.connect_times), 30 + p.slow_consumer_retry_s, 0.05)
    back = next((t for t in w.sub.connect_times if t >= fault_end), None)
    if back is None:
        w.notes.append("consumer did not come back; no replay requested")
        return
    # A delivery after the reconnect shows the subscription is live again.
    h.wait_until(lambda: any(d.t > back for d in w.sub.snapshot()), 30, 0.05)
    seen = {d.seq for d in w.sub.snapshot()}
    since = 1
    while since in seen:
        since += 1
    committed = {s for r in w.runs for s in r.committed}
    w.extra["lost_before_replay"] = len({s for s in committed if s <= max(seen)} - seen)
    w.extra["replay_since_seq"] = since
    t0 = time.monotonic()
    resp = replay_request(w.broker.port, w.name.replace("_", "-"), since)
    w.extra["replay_response_s"] = round(time.monotonic() - t0, 3)
    w.extra["replay_response"] = resp
    if resp is None or resp.get("status") != "ok":
        w.notes.append(f"replay failed: {resp}")


def case_daemon_sigkill(w: World, p: Params) -> None:
    w.mark_fault()
    w.extra["killed_rc"] = w.daemon.kill()
    time.sleep(p.kill_gap_s)
    w.mark_end()
    w.spawn()  # same outbox file, same port
    w.extra["kill_gap_s"] = p.kill_gap_s


def case_serial_replug(w: World, p: Params) -> None:
    h.wait_until(lambda: w.emu.disconnect_t is not None, 30)
    w.mark_fault(w.emu.disconnect_t)
    h.wait_until(lambda: w.emu.reconnect_t is not None, 30 + p.replug_s)
    w.mark_end(w.emu.reconnect_t)
    w.extra["device_gone_s"] = p.replug_s


def _frames_for(seconds: float) -> Callable[[World, Params], None]:
    def body(w: World, p: Params) -> None:
        # The fault is on from the start; "fault window" is the measured stretch.
        w.mark_fault()
        time.sleep(seconds)
        w.mark_end()
        w.extra["no_recovery"] = True  # the fault never stops: there is nothing to recover from

    return body


def case_stale_stream(w: World, p: Params) -> None:
    # The emulator was streaming an old session before the daemon started (see setup).
    w.mark_fault(w.emu.frames[0].t if w.emu.frames else time.monotonic())
    w.mark_end(w.daemon.started)


def _fill(path: Path, leave_free: int) -> int:
    """Write a filler file until only `leave_free` bytes are left on its filesystem."""
    st = shutil.disk_usage(path.parent)
    size = max(0, st.free - leave_free)
    with path.open("wb") as fh:
        chunk = b"\xff" * 65536
        left = size
        while left > 0:
            try:
                left -= fh.write(chunk[: min(left, len(chunk))])
            except OSError:
                break
    return size


def case_disk_full(w: World, p: Params) -> None:
    # Broker down so results pile up, and the disk nearly full (another writer filled it):
    # the outbox must report OutboxFullError and keep the daemon alive. Then the broker comes
    # back with the disk still full (can the drain free space?), and finally the other
    # writer's file is deleted: that is the fault end.
    w.mark_fault()
    w.broker.stop()
    filler = w.outbox.parent / "filler.bin"
    if w.extra["disk_full_method"] == "tmpfs":
        w.extra["filler_bytes"] = _fill(filler, p.disk_free_bytes)
        w.extra["free_after_fill"] = shutil.disk_usage(w.outbox.parent).free
    start = time.monotonic()
    h.wait_until(lambda: w.daemon.outbox_full >= 10 or w.daemon.proc.poll() is not None, p.disk_full_max_s, 0.1)
    w.extra["outbox_full_after_s"] = round(time.monotonic() - start, 2) if w.daemon.outbox_full else None
    t_broker = w.broker.start()
    wall = time.time()
    n_before = len(w.sub.snapshot())
    time.sleep(p.disk_full_observe_s)
    after = w.sub.snapshot()[n_before:]
    w.extra["broker_back_disk_still_full_s"] = round(time.monotonic() - t_broker, 1)
    w.extra["deliveries_while_still_full"] = len(after)
    w.extra["fresh_while_still_full"] = sum(d.acquired_at >= wall for d in after)
    w.extra["not_stored_while_still_full"] = w.daemon.outbox_full
    if filler.exists():
        filler.unlink()
    w.mark_end()


CASES: dict[str, tuple[str, Callable[[World, Params], None], dict[str, Any]]] = {
    "broker_outage": ("broker stopped, restarted (persistence on)", case_broker_outage, {}),
    "broker_clean_session": ("broker restarted with no state (sessions lost)", case_broker_clean_session, {}),
    "broker_clean_session_slow_consumer": (
        "as above, but the consumer retries its connection only every 8 s (3 s with --quick) and, once back, "
        "asks for a replay from the first seq it never received",
        case_broker_clean_session_replay,
        {"slow_consumer": True},
    ),
    "daemon_sigkill": ("daemon SIGKILLed mid-stream, restarted on the same outbox", case_daemon_sigkill, {}),
    "serial_replug": ("serial device disappears and comes back", case_serial_replug, {"replug": True}),
    "corrupt_1pct": ("1 % of frames corrupted (one bit flipped)", None, {"faults": {"corrupt_rate": 0.01}}),  # type: ignore[dict-item]
    "garbage_bursts": ("5 % of frames preceded by 1-199 random bytes", None, {"faults": {"garbage_rate": 0.05}}),  # type: ignore[dict-item]
    "stale_stream": (
        "device already streaming an old session at connect",
        case_stale_stream,
        {"faults": {"stale_stream": True}},
    ),
    "disk_full": ("outbox disk full while the broker is down", case_disk_full, {"disk_full": True}),
}


def mount_tmpfs(d: Path, size: int) -> bool:
    d.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], capture_output=True, text=True)
    return r.returncode == 0


PAGES_WRAPPER = (
    "import sys, edge.outbox as o; orig = o.Outbox.__init__\n"
    "def init(self, *a, **kw):\n"
    "    kw.setdefault('max_db_pages', int(sys.argv.pop(1))); orig(self, *a, **kw)\n"
    "o.Outbox.__init__ = init\n"
    "from edge.cli import main; sys.argv[0] = 'edge'; main()\n"
)


def run_case(name: str, p: Params, root: Path) -> dict[str, Any]:
    title, body, opts = CASES[name]
    if body is None:
        body = _frames_for(p.corrupt_s if name == "corrupt_1pct" else p.garbage_s)
    d = root / name
    d.mkdir(parents=True)
    faults = dict(opts.get("faults", {}))
    if opts.get("replug"):
        faults.update(disconnect_after=p.warmup + 20, reconnect_after_s=p.replug_s)
    broker = h.Broker(d / "mosquitto")
    broker.start()
    sub = h.Subscriber(
        broker.port, topic(name), reconnect_delay_s=p.slow_consumer_retry_s if opts.get("slow_consumer") else 1
    )
    emu = h.TracingEmulator(
        EmulatorConfig(
            seed=zlib.crc32(name.encode()) % 1000, link=str(d / "ttyRAMAN"), rate_hz=10.0, faults=Faults(**faults)
        )
    )
    outbox_dir = d / "state"
    extra: dict[str, Any] = {}
    argv_prefix = None
    mounted = False
    if opts.get("disk_full"):
        if mount_tmpfs(outbox_dir, p.tmpfs_bytes):
            mounted = True
            extra["disk_full_method"] = "tmpfs"
            extra["tmpfs_bytes"] = p.tmpfs_bytes
        else:
            # No mount permission: cap the database with SQLite's max_page_count (the hook the
            # outbox exposes for this) through a wrapper; no change to edge/ itself.
            outbox_dir.mkdir(parents=True, exist_ok=True)
            extra["disk_full_method"] = "sqlite max_page_count=24 (mount not permitted)"
            argv_prefix = [h.PYTHON, "-c", PAGES_WRAPPER, "24"]
    else:
        outbox_dir.mkdir(parents=True, exist_ok=True)
    w = World(name, d, broker, sub, emu, outbox_dir / "outbox.sqlite", extra=extra)
    t_case = time.monotonic()
    try:
        emu.start()
        if name == "stale_stream":
            time.sleep(p.stale_lead_s)
        w.spawn(argv_prefix=argv_prefix)
        if name == "stale_stream":
            body(w, p)
        if not w.wait_delivered(p.warmup, 90):
            w.notes.append(f"warm-up: only {w.sub.unique_ids()} results in 90 s; daemon: {w.daemon.tail(3)}")
        if name != "stale_stream":
            body(w, p)
        assert w.fault_end is not None
        if not w.wait_fresh(p.post, 60 + 3 * p.broker_down_s):
            w.notes.append(f"after the fault: fewer than {p.post} fresh results in time")
        rc = w.daemon.terminate(90)
        emu.stop()
        # Let the last acknowledged publishes reach the subscriber.
        committed = {s for r in w.runs for s in r.committed}
        h.wait_until(lambda: committed <= {d.seq for d in w.sub.snapshot()}, 10, 0.1)
        time.sleep(0.5)
        return analyse(w, title, rc, p, time.monotonic() - t_case)
    finally:
        for r in w.runs:
            r.kill()
        emu.stop()
        sub.close()
        broker.stop()
        if mounted:
            subprocess.run(["umount", "-l", str(outbox_dir)], check=False)


def analyse(w: World, title: str, rc: int | None, p: Params, elapsed: float) -> dict[str, Any]:
    deliveries = w.sub.snapshot()
    by_id = {d.id: d for d in deliveries}
    delivered_seqs = {d.seq for d in deliveries}
    committed: dict[int, int | None] = {}
    for r in w.runs:
        committed.update(r.committed)
    not_stored_frames: list[int] = []
    for r in w.runs:
        for _, line in r.lines:
            if line.startswith("edge: outbox full") and "{" in line:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    not_stored_frames.append(json.loads(line[line.index("{") :])["instrument"]["frame_seq"])
    committed_lost = sorted(set(committed) - delivered_seqs)
    # First copies that arrived after a higher seq (what a consumer ordering by arrival sees wrong).
    out_of_order: list[int] = []
    seen: set[str] = set()
    highest = 0
    for d in sorted(deliveries, key=lambda d: d.t):
        if d.id in seen:
            continue
        seen.add(d.id)
        if d.seq < highest:
            out_of_order.append(d.seq)
        highest = max(highest, d.seq)
    frames = w.emu.frames
    light = [f for f in frames if not f.dark and f.streamed and not f.stale]
    stale = [f for f in frames if f.stale]
    result_frames = {fs for fs in committed.values() if fs is not None} | {
        d.frame_seq for d in deliveries if d.frame_seq is not None
    }
    last = max(result_frames | set(not_stored_frames)) if result_frames or not_stored_frames else -1
    stale_seqs = {f.seq for f in stale}
    # Frames generated up to FLUSH_S before the fault can still be in the pipe when it hits
    # (the emulator flushes for 0.5 s before closing the pty; unread bytes die with it).
    fault_lo = (w.fault_start or 0.0) - FLUSH_S
    fresh_times = sorted(d.t for d in deliveries if w.fault_end_wall is not None and d.acquired_at >= w.fault_end_wall)
    any_after = sorted(d.t for d in deliveries if w.fault_end is not None and d.t >= w.fault_end)
    fault_hi = fresh_times[0] if fresh_times else float("inf")
    causes = {"corrupted": 0, "dropped": 0, "tx_overflow": 0, "not_stored": 0, "fault_window": 0, "unexplained": 0}
    unexplained: list[int] = []
    for f in light:
        if f.seq > last or f.seq in result_frames:
            continue
        if f.corrupted:
            causes["corrupted"] += 1
        elif f.dropped:
            causes["dropped"] += 1
        elif f.overflow:
            causes["tx_overflow"] += 1
        elif f.seq in not_stored_frames:
            causes["not_stored"] += 1
        elif fault_lo <= f.t <= fault_hi:
            causes["fault_window"] += 1
        else:
            causes["unexplained"] += 1
            unexplained.append(f.seq)
    rec = {
        "case": w.name,
        "title": title,
        "spectra_sent": sum(f.seq <= last for f in light),
        "spectra_sent_total": len(light),
        "stale_frames": len(stale),
        "stale_frames_turned_into_results": len(stale_seqs & result_frames),
        "dark_replies": sum(f.dark for f in frames),
        "committed": len(committed),
        "delivered_unique": len(by_id),
        "deliveries": len(deliveries),
        "duplicated": len(deliveries) - len(by_id),
        "out_of_order": len(out_of_order),
        "out_of_order_seqs": out_of_order[:50],
        "committed_lost": len(committed_lost),
        "committed_lost_seqs": committed_lost[:50],
        "not_stored_outbox_full": sum(r.outbox_full for r in w.runs),
        "delivered_not_printed": len(delivered_seqs - set(committed)),
        "frames_unprocessed": sum(causes.values()),
        "frames_unprocessed_by_cause": causes,
        "unexplained_seqs": unexplained[:50],
        "fault_s": round(w.fault_end - w.fault_start, 2) if w.fault_end and w.fault_start else None,
        "recover_fresh_s": round(fresh_times[0] - w.fault_end, 2) if fresh_times and w.fault_end else None,
        "recover_any_s": round(any_after[0] - w.fault_end, 2) if any_after and w.fault_end else None,
        "exit_code": rc,
        "daemon_runs": len(w.runs),
        "emulator_stats": dict(w.emu.stats.__dict__),
        "subscriber_connects": w.sub.connects,
        "subscriber_back_after_s": next(
            (round(t - w.fault_end, 2) for t in w.sub.connect_times if w.fault_end and t >= w.fault_end), None
        ),
        "case_s": round(elapsed, 1),
        "notes": w.notes,
        **w.extra,
    }
    if w.extra.get("no_recovery"):
        rec["recover_fresh_s"] = rec["recover_any_s"] = rec["fault_s"] = None
    rec["daemon_tail"] = w.daemon.tail(3)
    return rec


LOG_KEYS = (
    "spectra_sent",
    "delivered_unique",
    "duplicated",
    "committed_lost",
    "frames_unprocessed",
    "recover_fresh_s",
    "exit_code",
    "error",
)


def fmt(v: Any) -> str:
    return "-" if v is None else str(v)


def markdown(data: dict[str, Any]) -> str:
    rows = []
    for r in data["cases"]:
        if "error" in r:
            rows.append([r["case"], "error: " + r["error"]] + [""] * 10)
            continue
        mark = " (separate run, merged)" if r.get("merged_run") else ""
        c = r["frames_unprocessed_by_cause"]
        causes = ", ".join(f"{k} {v}" for k, v in c.items() if v) or "0"
        rows.append(
            [
                r["case"] + mark,
                r["spectra_sent"],
                r["delivered_unique"],
                r["duplicated"],
                fmt(r.get("out_of_order")),
                r["committed_lost"],
                r["not_stored_outbox_full"],
                f"{r['frames_unprocessed']} ({causes})" if r["frames_unprocessed"] else "0",
                fmt(r["fault_s"]),
                fmt(r["recover_fresh_s"]),
                fmt(r["recover_any_s"]),
                fmt(r["exit_code"]),
            ]
        )
    p = data["parameters"]
    lines = [
        f"# Fault matrix: `edge run` (subprocess) + Mosquitto + pty emulator{' (--quick)' if p['quick'] else ''}",
        "",
        common.md_table(
            [
                "case",
                "sent",
                "delivered",
                "dup",
                "late",
                "committed lost",
                "not stored",
                "frames unprocessed (cause)",
                "fault s",
                "recover fresh s",
                "recover any s",
                "exit",
            ],
            rows,
            "lrrrrrrlrrrr",
        ),
        "",
        "- **sent**: light spectra the emulator generated for the daemon's stream, up to the last one that became a "
        "result (later ones were in flight when the daemon was stopped; stale-session frames and dark replies "
        "excluded). **delivered**: unique result ids at the subscriber (persistent session, QoS 1); "
        "**dup** = deliveries - unique ids (before de-duplication); **late**: first copies that arrived "
        "after a result with a higher seq.",
        "- **committed lost**: results the daemon printed as committed to its outbox that never reached the "
        "subscriber. **not stored**: results built but refused by a full outbox (printed whole on stdout).",
        "- **frames unprocessed**: sent frames up to the last one that became a result, with no result; "
        "*fault_window* = from 0.5 s before the fault start (frames still in the pipe) to the first fresh result, "
        "*tx_overflow* = the emulator's 64 KiB "
        "transmit buffer was full because no host was reading.",
        "- **recover fresh**: fault end -> first delivered result acquired after the fault end; **recover any**: "
        "fault end -> first delivery of any result (the outbox backlog). **exit**: code of the last daemon run "
        "after SIGTERM (0 = every result acknowledged); a SIGKILLed run is not the last run.",
        f"- Stream: {1000 // INTEGRATION_MS} spectra/s; warm-up {p['warmup']} results, then the fault, then "
        f"{p['post']} fresh results. Broker outage {p['broker_down_s']} s; clean-session restart after "
        f"{p['clean_down_s']} s; SIGKILL gap {p['kill_gap_s']} s; device gone {p['replug_s']} s.",
    ]
    for r in data["cases"]:
        extra = []
        if r.get("disk_full_method"):
            extra.append(
                f"disk full via **{r['disk_full_method']}**"
                + (
                    f" ({r['tmpfs_bytes'] // 1024} KiB tmpfs, filler left "
                    f"{r.get('free_after_fill', 0) // 1024} KiB free; "
                    f"first 'outbox full' after {r.get('outbox_full_after_s')} s)"
                    if r.get("tmpfs_bytes")
                    else ""
                )
            )
        if r.get("disk_full_method"):
            extra.append(
                f"broker back with the disk still full: {r.get('deliveries_while_still_full')} deliveries, "
                f"{r.get('fresh_while_still_full')} of fresh results in {r.get('broker_back_disk_still_full_s')} s, "
                f"{r.get('not_stored_while_still_full')} results not stored so far; fault end = filler file deleted"
            )
        if r.get("replay_response") is not None and r.get("subscriber_back_after_s") is not None:
            extra.append(
                f"the consumer was subscribed again {r['subscriber_back_after_s']} s after the broker came back"
            )
        elif r["case"].startswith("broker_clean") and r.get("subscriber_back_after_s") is not None:
            extra.append(
                f"the consumer was subscribed again {r['subscriber_back_after_s']} s after the broker came back; "
                f"the daemon had {r['committed_lost']} results acknowledged by a broker that no longer had the "
                "consumer's session"
            )
        if r.get("replay_response") is not None:
            d = r["replay_response"].get("data", {})
            extra.append(
                f"{r['lost_before_replay']} results missing at the consumer before its replay request "
                f"(since_seq {r['replay_since_seq']}); the replay re-published {d.get('count')} results "
                f"(seq {d.get('first_seq')}-{d.get('last_seq')}, not held: {d.get('not_held_count')}), "
                f"response after {r['replay_response_s']} s; committed lost after the replay: {r['committed_lost']} "
                "(the replayed copies arrive after newer results: they are the 'late' count)"
            )
        if r.get("stale_frames"):
            extra.append(
                f"{r['stale_frames']} stale frames before the handshake, "
                f"{r['stale_frames_turned_into_results']} of them turned into results"
            )
        if r.get("notes"):
            extra.append("; ".join(r["notes"]))
        if extra:
            lines.append(f"- `{r['case']}`: " + "; ".join(extra) + ".")
    if p.get("jobs", 1) > 1:
        lines.append(
            f"- {p['jobs']} cases ran at once (--quick): a smoke test; its times are not comparable with a full run."
        )
    lines += ["", f"Total run time {data['elapsed_s']:.0f} s. " + h.machine_md(data["machine"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short faults (finishes in < 2 minutes)")
    ap.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    ap.add_argument("--only", default="", help="comma-separated case names")
    ap.add_argument("--merge", action="store_true", help="replace only these cases in an existing faults.json")
    ap.add_argument("--jobs", type=int, default=0, help="cases run at once (default: 1; 2 with --quick)")
    ap.add_argument("--md-only", action="store_true", help="re-render faults.md from the existing faults.json")
    args = ap.parse_args(argv)
    if args.md_only:
        data = json.loads((args.out / f"{NAME}.json").read_text())
        (args.out / f"{NAME}.md").write_text(markdown(data).rstrip() + "\n")
        return 0
    p = Params.make(args.quick)
    names = [n for n in args.only.split(",") if n] or list(CASES)
    machine = h.base_machine()
    t0 = time.monotonic()
    jobs = args.jobs or (2 if args.quick else 1)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:

        def one(name: str) -> dict[str, Any]:
            common.log(f"{name}: {CASES[name][0]}")
            try:
                rec = run_case(name, p, Path(tmp))
            except Exception as err:  # noqa: BLE001 - one broken case must not hide the others
                rec = {"case": name, "error": f"{type(err).__name__}: {err}"}
            common.log(f"  {name} " + json.dumps({k: rec[k] for k in LOG_KEYS if k in rec}))
            return rec

        # Every case has its own broker, emulator, daemon and directory, so cases can overlap;
        # the full run does them one at a time so that recovery times are not disturbed.
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(one, names))
    data = {
        "benchmark": NAME,
        "parameters": {**p.__dict__, "integration_ms": INTEGRATION_MS, "cases": names, "jobs": jobs},
        "machine": machine,
        "cases": results,
        "elapsed_s": time.monotonic() - t0,
    }
    previous = args.out / f"{NAME}.json"
    if args.merge and previous.exists():
        old = json.loads(previous.read_text())
        if old["parameters"]["quick"] != p.quick:
            raise SystemExit("--merge: the existing results were run with a different --quick setting")
        by_name = {c["case"]: c for c in old["cases"]}
        for rec in results:
            rec["merged_run"] = {"date_utc": machine["date_utc"], "loadavg_start": machine["loadavg_start"]}
            by_name[rec["case"]] = rec
        merged = [by_name[n] for n in CASES if n in by_name]
        data = {
            **old,
            "parameters": {**old["parameters"], "cases": [c["case"] for c in merged]},
            "cases": merged,
            "elapsed_s": old["elapsed_s"] + data["elapsed_s"],
            "merged": [*old.get("merged", []), {"cases": names, "machine": machine}],
        }
    jpath, mpath = common.write_results(args.out, NAME, data, markdown(data))
    common.log(f"wrote {jpath} and {mpath} in {data['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
