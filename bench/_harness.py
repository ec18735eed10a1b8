"""Shared pieces of the end-to-end benchmarks (faults, throughput, soak).

Everything here drives the *real* things: a Mosquitto on a free port with its own conf and
state directory, `python -m edge.cli run` as a subprocess, the pty emulator in this process,
and a paho subscriber with a persistent session. Nothing in `edge/` is patched.

Accounting rationale (what "lost" means in the reports):

* The emulator is wrapped (`TracingEmulator`) so that every SPECTRUM it generates is recorded
  with its device `seq`, time, whether it was a dark-frame reply or a streamed frame, whether
  a host had sent any command yet (stale-stream frames precede the first command), and what
  the fault injection did to it (corrupted / dropped / tx-overflow because nobody read).
* The daemon prints one line per *committed* result (`#<outbox seq> frame <device seq>`) and
  one `edge: outbox full` line per result it could not store. Those lines are the daemon's
  own statement of what it committed, read from its stdout.
* The subscriber records every delivery (before de-duplication) with its arrival time.

From those three records: `committed_lost` = outbox seqs the daemon committed that never
reached the subscriber (the store-and-forward guarantee; must be 0 except where a broker
forgot its sessions); `frames_unprocessed` = light, host-requested spectra the emulator put
on the wire, up to the last frame that became a result, with no result, split by cause.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common

common.ensure_repo_on_path()


from edge.result import Result  # noqa: E402
from firmware_bridge.emulator import Emulator  # noqa: E402
from tests import brokers  # noqa: E402  (the broker/subscriber/wait helpers the tests use too)

REPO = common.REPO
MOSQUITTO = brokers.MOSQUITTO
PYTHON = sys.executable

free_port = brokers.free_port
mosquitto_version = brokers.mosquitto_version
#: wait_until(cond, timeout_s, poll_s=0.02) -> bool: a benchmark records a timeout, it does not fail.
wait_until = brokers.poll_until


class Broker(brokers.Broker):
    """The tests' Mosquitto with a deep per-client queue: a benchmark's subscriber may be
    offline for thousands of results, and mosquitto's default (1000) would drop them."""

    def __init__(self, workdir: Path, persistence: bool = True) -> None:
        super().__init__(workdir, persistence=persistence, max_queued_messages=100_000)


@dataclass
class Delivery:
    t: float  # monotonic arrival time
    id: str
    seq: int
    frame_seq: int | None
    acquired_at: float  # POSIX seconds (wall clock of the daemon)
    status: str


class Subscriber(brokers.Subscriber):
    """Persistent session (clean_session=False), QoS 1, every result delivery kept (before
    de-duplication) with its arrival time; other topics and unparsable payloads counted."""

    def __init__(self, port: int, topic: str, reconnect_delay_s: int = 1) -> None:
        self.deliveries: list[Delivery] = []
        self.other: list[tuple[float, str, bytes]] = []
        self.bad_payloads = 0
        super().__init__(
            port, topic, client_id_prefix="bench-sub", reconnect_delay_s=reconnect_delay_s, max_inflight=100
        )
        self.topic = topic

    def receive(self, msg: brokers.Received) -> None:
        if not msg.topic.endswith("/result"):
            self.other.append((msg.t, msg.topic, msg.payload))
            return
        try:
            r = Result.from_json(msg.payload)
        except Exception:  # noqa: BLE001 - a benchmark counts bad payloads, it does not die
            self.bad_payloads += 1
            return
        self.deliveries.append(
            Delivery(msg.t, r.id, r.seq, r.instrument.frame_seq, r.acquired_at.timestamp(), r.status)
        )

    def snapshot(self) -> list[Delivery]:
        with self.cond:
            return list(self.deliveries)

    def unique_ids(self) -> int:
        with self.cond:
            return len({d.id for d in self.deliveries})


@dataclass
class FrameRecord:
    seq: int
    t: float
    dark: bool  # a DARK reply (not a result candidate)
    streamed: bool
    stale: bool  # sent before the host's first command (old-session stream)
    corrupted: bool = False
    dropped: bool = False
    overflow: bool = False  # device tx buffer full: nobody was reading
    laser_off: bool = False  # laser watchdog had turned the laser off


class TracingEmulator(Emulator):
    """The real emulator, recording what happened to every spectrum it generated.

    Overrides the private `_send_spectrum` only to observe (calls the original unchanged)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.frames: list[FrameRecord] = []
        self.disconnect_t: float | None = None
        self.reconnect_t: float | None = None

    def _send_spectrum(self, *, dark: bool, streamed: bool) -> None:
        s = self.stats
        before = (s.spectra_sent, s.corrupted, s.dropped, s.tx_overflow, s.commands)
        laser = self.session.laser_on
        super()._send_spectrum(dark=dark, streamed=streamed)
        self.frames.append(
            FrameRecord(
                seq=before[0],
                t=time.monotonic(),
                dark=dark,
                streamed=streamed,
                stale=before[4] == 0,
                corrupted=s.corrupted > before[1],
                dropped=s.dropped > before[2],
                overflow=s.tx_overflow > before[3],
                laser_off=not laser,
            )
        )

    def _close_pty(self) -> None:
        if not self._stop.is_set():
            self.disconnect_t = time.monotonic()
        super()._close_pty()

    def _open_pty(self) -> None:
        super()._open_pty()
        if self.disconnect_t is not None:
            self.reconnect_t = time.monotonic()


_RESULT_LINE = re.compile(r"^#(\d+)\s+frame (\S+)")


@dataclass
class DaemonRun:
    """One `edge run` subprocess with its stdout read line by line (with arrival times)."""

    proc: subprocess.Popen[str]
    started: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    committed: dict[int, int | None] = field(default_factory=dict)  # outbox seq -> frame seq
    outbox_full: int = 0
    first_commit_t: float | None = None
    _reader: threading.Thread | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t = time.monotonic()
            line = line.rstrip("\n")
            self.lines.append((t, line))
            m = _RESULT_LINE.match(line)
            if m:
                self.committed[int(m.group(1))] = None if m.group(2) == "None" else int(m.group(2))
                if self.first_commit_t is None:
                    self.first_commit_t = t
            elif line.startswith("edge: outbox full"):
                self.outbox_full += 1

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout_s: float) -> int | None:
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        if self._reader is not None:
            self._reader.join(5)
        return rc

    def terminate(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (graceful: drain, then exit); SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.wait(timeout_s)
        if rc is None:
            self.kill()
        return rc

    def kill(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.wait(10)

    def tail(self, n: int = 8) -> list[str]:
        return [line for _, line in self.lines[-n:]]


def spawn_daemon(
    *,
    port: str,
    broker_url: str,
    outbox: Path,
    device_id: str,
    prefix: str = "bench",
    count: int | None = None,
    drain_timeout_s: float = 30.0,
    integration_ms: int = 200,
    extra_env: dict[str, str] | None = None,
    argv_prefix: list[str] | None = None,
) -> DaemonRun:
    """Start `python -m edge.cli run` (a real subprocess); integration_ms sets the stream period."""
    proc = brokers.edge_run(
        port=port,
        broker_url=broker_url,
        outbox=outbox,
        device_id=device_id,
        prefix=prefix,
        count=count,
        drain_timeout_s=drain_timeout_s,
        env={"RAMAN_EDGE_INTEGRATION_MS": str(integration_ms), **(extra_env or {})},
        argv_prefix=argv_prefix,
    )
    run = DaemonRun(proc=proc, started=time.monotonic())
    run._reader = threading.Thread(target=run._read, daemon=True)
    run._reader.start()
    return run


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (kB) of a live process, from /proc/PID/status; {} once it has gone."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def mapped_libraries(pid: int) -> list[str]:
    """Shared objects mapped into a process (from /proc/PID/maps), unique, sorted."""
    libs: set[str] = set()
    try:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and ".so" in parts[5]:
                libs.add(parts[5].strip())
    except OSError:
        pass
    return sorted(libs)


def file_size(path: Path) -> int:
    """Bytes of a SQLite database including its -wal and -shm side files."""
    total = 0
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p.exists():
            total += p.stat().st_size
    return total


def base_machine() -> dict[str, Any]:
    info = common.machine_info()
    info["mosquitto"] = mosquitto_version()
    info["packages"]["paho-mqtt"] = common.package_versions(["paho-mqtt"])["paho-mqtt"]
    info["packages"]["hypothesis"] = common.package_versions(["hypothesis"])["hypothesis"]
    return info


def machine_md(info: dict[str, Any]) -> str:
    pk = info.get("packages", {})
    vers = ", ".join(f"{k} {v}" for k, v in pk.items() if v)
    return (
        f"Machine: {info.get('cpu_model')}, nproc {info.get('nproc')}, load at start {info.get('loadavg_start')}, "
        f"Python {info.get('python')}, mosquitto {info.get('mosquitto')}; {vers}; git {info.get('git')}; "
        f"{info.get('date_utc')}."
    )
