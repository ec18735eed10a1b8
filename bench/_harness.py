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

import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common

common.ensure_repo_on_path()

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edge.result import Result  # noqa: E402
from firmware_bridge.emulator import Emulator  # noqa: E402

REPO = common.REPO
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(cond: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> bool:
    """Poll `cond` until true or timeout; returns whether it became true (no exception)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def mosquitto_version() -> str | None:
    try:
        out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=5)
        m = re.search(r"mosquitto version (\S+)", out.stdout + out.stderr)
        return m.group(1) if m else None
    except (OSError, subprocess.SubprocessError):
        return None


class Broker:
    """A mosquitto on its own port and directory; stop()/start() keep port and state."""

    def __init__(self, workdir: Path, persistence: bool = True) -> None:
        self.port = free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.conf = workdir / "mosquitto.conf"
        self.write_conf(persistence)
        self._proc: subprocess.Popen[bytes] | None = None

    def write_conf(self, persistence: bool) -> None:
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # As root mosquitto would drop to user "mosquitto" and lose access to our dirs.
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            f"persistence {'true' if persistence else 'false'}\n"
            f"persistence_location {self.dir}/\n"
            "autosave_interval 0\n"
            "max_queued_messages 100000\n"
            f"log_dest file {self.dir}/mosquitto.log\n"
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> float:
        """Start and wait until it accepts connections; returns that moment (monotonic)."""
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not wait_until(self._accepts, timeout_s):
            raise RuntimeError(f"mosquitto did not start on port {self.port}")
        return time.monotonic()

    def stop(self) -> None:
        # SIGTERM: mosquitto writes its persistence file, so sessions survive a restart.
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None

    def wipe_state(self) -> None:
        """Forget every session and queued message (as a broker replaced or reinstalled)."""
        for p in self.dir.glob("*.db"):
            p.unlink()

    def _accepts(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {self._proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False


@dataclass
class Delivery:
    t: float  # monotonic arrival time
    id: str
    seq: int
    frame_seq: int | None
    acquired_at: float  # POSIX seconds (wall clock of the daemon)
    status: str


class Subscriber:
    """paho subscriber, persistent session (clean_session=False), QoS 1, every delivery kept."""

    def __init__(self, port: int, topic: str, reconnect_delay_s: int = 1) -> None:
        self.deliveries: list[Delivery] = []
        self.other: list[tuple[float, str, bytes]] = []
        self.bad_payloads = 0
        self.connects = 0
        self.connect_times: list[float] = []
        self.topic = topic
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"bench-sub-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        self.client.reconnect_delay_set(reconnect_delay_s, reconnect_delay_s)
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("subscription not acknowledged")

    def _on_connect(self, c: Any, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        self.connects += 1
        self.connect_times.append(time.monotonic())
        c.subscribe(self.topic, qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        t = time.monotonic()
        if not msg.topic.endswith("/result"):
            with self._lock:
                self.other.append((t, msg.topic, bytes(msg.payload)))
            return
        try:
            r = Result.from_json(msg.payload)
        except Exception:  # noqa: BLE001 - a benchmark counts bad payloads, it does not die
            with self._lock:
                self.bad_payloads += 1
            return
        d = Delivery(t, r.id, r.seq, r.instrument.frame_seq, r.acquired_at.timestamp(), r.status)
        with self._lock:
            self.deliveries.append(d)

    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def unique_ids(self) -> int:
        with self._lock:
            return len({d.id for d in self.deliveries})

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


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
        laser = self._laser_on
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
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAMAN_EDGE_")}
    env["RAMAN_EDGE_INTEGRATION_MS"] = str(integration_ms)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra_env or {})
    args = [
        "run",
        "--port",
        port,
        "--broker",
        broker_url,
        "--device-id",
        device_id,
        "--prefix",
        prefix,
        "--outbox",
        str(outbox),
        "--drain-timeout",
        f"{drain_timeout_s:g}",
        "--log-level",
        "warning",
    ]
    if count is not None:
        args += ["--count", str(count)]
    cmd = (argv_prefix or [PYTHON, "-m", "edge.cli"]) + args
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
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
