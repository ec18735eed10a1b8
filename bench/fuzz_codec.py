"""Fuzz campaign of the sans-I/O frame decoder (firmware_bridge.codec.Codec).

    .venv/bin/python bench/fuzz_codec.py [--quick] [--out bench/results] [--atheris-path DIR]

The codec promises (module docstring) never to raise on received bytes, to turn anything it
cannot accept into a FrameError event, and to keep its memory bounded (at most one maximum-
size frame of unparsed bytes plus MAX_PENDING_EVENTS events). This campaign checks exactly
that, with hypothesis generating inputs (database off, no deadline, no shrinking phase: every
input is checked and failures are recorded rather than raised, so the campaign always reports
how many inputs it tried):

* random: arbitrary byte strings fed to a fresh codec in binary, line and auto mode, whole
  and in random chunks;
* mutated: valid frames of every message type (SPECTRUM with random pixel counts, INFO, ACK,
  NACK, commands) with bit flips, byte insertions/deletions, truncations, duplicated spans;
* garbage-between: valid binary frames separated by random garbage; besides the invariants,
  every intact frame must come out decoded, in order (resynchronisation at the delimiter);
  messages decoded out of garbage alone ("phantoms": a CRC-16 collision) are counted;
* text: printable garbage lines and corrupted text-protocol lines in line/auto mode.

Checked after every feed: no exception (a firmware_bridge error would break the contract
too, but is reported apart from a "crash", any other exception), `buffered` <= the mode's
limit, pending events <= MAX_PENDING_EVENTS, every event a Message dataclass or FrameError.

With --atheris-path (a directory where `pip install --target DIR atheris` put it; it is not a
project dependency), a coverage-guided libFuzzer run of the same checks follows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import common

common.ensure_repo_on_path()

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from firmware_bridge import messages as m  # noqa: E402
from firmware_bridge import wire  # noqa: E402
from firmware_bridge.codec import _BUFFER_LIMIT, MAX_PENDING_EVENTS, Codec, FrameError  # noqa: E402
from firmware_bridge.errors import BridgeError  # noqa: E402

NAME = "fuzz_codec"
MODES = ("binary", "line", "auto")
MESSAGE_TYPES = tuple(
    getattr(m, n)
    for n in (
        "Ping",
        "GetInfo",
        "SetIntegration",
        "SetAverages",
        "Acquire",
        "StreamStart",
        "StreamStop",
        "Dark",
        "Laser",
        "Abort",
        "Flush",
        "Ack",
        "Nack",
        "DeviceInfo",
        "SpectrumFrame",
    )
)


class Tally:
    def __init__(self) -> None:
        self.inputs = 0
        self.bytes = 0
        self.feeds = 0
        self.events = 0
        self.frame_errors = 0
        self.messages = 0
        self.crashes: list[dict[str, Any]] = []
        self.signatures: dict[str, dict[str, Any]] = {}  # unique crash sites -> count, first input
        self.own_errors: list[dict[str, Any]] = []
        self.invariant_failures: list[dict[str, Any]] = []
        self.max_buffered: dict[str, int] = {k: 0 for k in MODES}
        self.max_pending = 0
        self.resync_checked = 0
        self.resync_missing = 0
        self.phantoms = 0

    def record(self, kind: str, data: bytes, mode: str, err: BaseException | str) -> None:
        bucket = {"crash": self.crashes, "own": self.own_errors, "invariant": self.invariant_failures}[kind]
        if not isinstance(err, str):
            tb = traceback.extract_tb(err.__traceback__)[-1]
            sig = f"{type(err).__name__} at {Path(tb.filename).name}:{tb.lineno} ({tb.name})"
            entry = self.signatures.setdefault(
                sig, {"count": 0, "mode": mode, "first_input_hex": data[:200].hex(), "message": str(err)[:200]}
            )
            entry["count"] += 1
        if len(bucket) < 20:
            bucket.append(
                {
                    "mode": mode,
                    "input_hex": data[:256].hex(),
                    "input_len": len(data),
                    "error": err if isinstance(err, str) else f"{type(err).__name__}: {err}",
                    "traceback": "" if isinstance(err, str) else "".join(traceback.format_exception(err))[-1500:],
                }
            )
        else:
            bucket.append({"mode": mode})  # counted, details of the first 20 only


T = Tally()


def drive(data: bytes, mode: str, cuts: list[int] | None = None) -> list[Any]:
    """Feed `data` (whole, or split at `cuts`) to a fresh codec; check invariants; return events."""
    T.inputs += 1
    T.bytes += len(data)
    codec = Codec(mode)
    chunks = (
        [data] if not cuts else [data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True)]
    )
    out: list[Any] = []
    try:
        for chunk in chunks:
            codec.feed(chunk)
            T.feeds += 1
            limit = _BUFFER_LIMIT[codec.mode if codec.mode in _BUFFER_LIMIT else mode]
            limit = max(limit, _BUFFER_LIMIT[mode])
            T.max_buffered[mode] = max(T.max_buffered[mode], codec.buffered)
            pending = len(codec._events)  # noqa: SLF001 - the bound under test
            T.max_pending = max(T.max_pending, pending)
            if codec.buffered > limit:
                T.record("invariant", data, mode, f"buffered {codec.buffered} > limit {limit}")
            if pending > MAX_PENDING_EVENTS:
                T.record("invariant", data, mode, f"{pending} pending events > {MAX_PENDING_EVENTS}")
            while (ev := codec.next_event()) is not None:
                T.events += 1
                if isinstance(ev, FrameError):
                    T.frame_errors += 1
                elif isinstance(ev, MESSAGE_TYPES):
                    T.messages += 1
                else:
                    T.record("invariant", data, mode, f"unexpected event type {type(ev).__name__}")
                out.append(ev)
    except BridgeError as err:
        T.record("own", data, mode, err)
    except Exception as err:  # noqa: BLE001 - this is what the campaign is looking for
        T.record("crash", data, mode, err)
    return out


# -- strategies --------------------------------------------------------------------------------

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def spectrum(draw: Any) -> m.SpectrumFrame:
    n = draw(st.sampled_from([0, 1, 2, 17, 256, 1024, 1360, 2048, 4096]))
    seed = draw(st.integers(0, 2**32 - 1))
    counts = np.random.default_rng(seed).integers(0, 65536, n, dtype=np.uint16)
    if draw(st.booleans()):
        counts[:] = draw(u16)  # flat: all-zero bytes or no zero bytes at all (COBS edge cases)
    return m.SpectrumFrame(
        seq=draw(u32),
        timestamp_ms=draw(u32),
        integration_ms=draw(st.integers(1, 60000)),
        averages=draw(st.integers(1, 1000)),
        flags=draw(u16),
        counts=counts,
    )


text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
messages = st.one_of(
    st.just(m.Ping()),
    st.just(m.GetInfo()),
    st.just(m.StreamStop()),
    st.just(m.Dark()),
    st.just(m.Abort()),
    st.just(m.Flush()),
    st.builds(m.SetIntegration, st.integers(1, 60000)),
    st.builds(m.SetAverages, st.integers(1, 1000)),
    st.builds(m.Acquire, st.integers(1, 1000)),
    st.builds(m.StreamStart, st.integers(1, 60000)),
    st.builds(m.Laser, st.booleans(), st.integers(0, 100), st.integers(0, 255)),
    st.builds(m.Ack, st.sampled_from([int(o) for o in m.Op]), u16),
    st.builds(m.Nack, st.sampled_from([int(o) for o in m.Op]), u16, st.integers(1, 7)),
    st.builds(
        m.DeviceInfo,
        text,
        text,
        text,
        st.integers(1, 4096),
        st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=4).map(tuple),
        st.floats(200, 1100, allow_nan=False),
        st.integers(1, 100),
        st.integers(100, 60000),
        st.integers(1, 1000),
    ),
    spectrum(),
)


# Text-protocol shaped lines: spectra as comma-separated counts (including absurd numbers and
# very long digit runs), and "#INFO"/"#ERR"/command words followed by arbitrary numbers.
number_lines = st.one_of(
    st.lists(st.integers(-(2**70), 2**70), min_size=1, max_size=64).map(lambda v: ",".join(map(str, v))),
    st.lists(st.integers(0, 70000), min_size=1, max_size=2048).map(lambda v: ", ".join(map(str, v)) + ","),
    st.integers(1, 6000).map(lambda n: "9" * n),
)
keyword_lines = st.tuples(
    st.sampled_from(["#INFO", "#OK", "#ERR", "#", "INFO", "PING", "STOP", "INT", "AVG", "START", "#INFO model"]),
    st.lists(st.one_of(st.integers(-(2**70), 2**70).map(str), text, st.floats().map(str)), max_size=10),
).map(lambda t: " ".join([t[0], *t[1]]))


def encode(msg: Any, seq: int) -> bytes | None:
    try:
        return wire.pack_frame(*m.encode_payload(msg)[:1], seq, m.encode_payload(msg)[1])
    except (BridgeError, ValueError, OverflowError, Exception):  # noqa: BLE001 - unencodable draws are skipped
        return None


@st.composite
def mutated(draw: Any) -> bytes:
    frames = [encode(draw(messages), draw(u16)) for _ in range(draw(st.integers(1, 3)))]
    buf = bytearray(b"".join(f for f in frames if f))
    for _ in range(draw(st.integers(1, 6))):
        if not buf:
            break
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup", "zero"]))
        i = draw(st.integers(0, len(buf) - 1))
        if op == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            buf[i] = draw(st.integers(0, 255))
        elif op == "insert":
            buf[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del buf[i : i + draw(st.integers(1, 16))]
        elif op == "truncate":
            del buf[i:]
        elif op == "dup":
            j = draw(st.integers(i, min(len(buf), i + 512)))
            buf[j:j] = buf[i:j]
        else:
            buf[i] = 0
    return bytes(buf)


def cuts_for(data: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(data)), max_size=8) if data else st.just([])


def run_hypothesis(examples: dict[str, int]) -> dict[str, dict[str, Any]]:
    common_settings = dict(
        database=None,
        deadline=None,
        phases=[Phase.generate],
        derandomize=False,
        suppress_health_check=list(HealthCheck),
    )
    report: dict[str, dict[str, Any]] = {}

    @settings(max_examples=examples["random"], **common_settings)  # type: ignore[arg-type]
    @given(st.binary(max_size=4096), st.sampled_from(MODES), st.data())
    def random_bytes(data: bytes, mode: str, d: Any) -> None:
        drive(data, mode, d.draw(cuts_for(data)) if d.draw(st.booleans()) else None)

    @settings(max_examples=examples["mutated"], **common_settings)  # type: ignore[arg-type]
    @given(mutated(), st.sampled_from(MODES), st.data())
    def mutated_frames(data: bytes, mode: str, d: Any) -> None:
        drive(data, mode, d.draw(cuts_for(data)) if d.draw(st.booleans()) else None)

    @settings(max_examples=examples["garbage_between"], **common_settings)  # type: ignore[arg-type]
    @given(st.lists(st.tuples(st.binary(max_size=300), messages, u16), min_size=1, max_size=4), st.binary(max_size=300))
    def garbage_between(parts: list[tuple[bytes, Any, int]], tail: bytes) -> None:
        wanted: list[Any] = []
        data = bytearray()
        for garbage, msg, seq in parts:
            frame = encode(msg, seq)
            data += garbage
            if frame:
                data += frame
                wanted.append(msg)
        data += tail
        # Feed in chunks of <= 200 bytes and read after each: fewer than MAX_PENDING_EVENTS
        # events per feed, so the pending-event bound cannot drop a real frame here.
        cuts = list(range(200, len(data), 200))
        got = [e for e in drive(bytes(data), "binary", cuts) if not isinstance(e, FrameError)]
        T.resync_checked += len(wanted)
        it = iter(got)
        matched = 0
        for w in wanted:
            for g in it:
                if same(g, w):
                    matched += 1
                    break
        T.resync_missing += len(wanted) - matched
        T.phantoms += max(0, len(got) - matched)
        if matched < len(wanted):
            T.record("invariant", bytes(data), "binary", f"{len(wanted) - matched} intact frame(s) not decoded")

    @settings(max_examples=examples["text"], **common_settings)  # type: ignore[arg-type]
    @given(
        st.lists(
            st.one_of(text, st.binary(max_size=64).map(lambda b: b.decode("latin-1")), number_lines, keyword_lines),
            max_size=20,
        ),
        st.sampled_from(["line", "auto"]),
    )
    def text_lines(lines: list[str], mode: str) -> None:
        drive("\n".join(lines).encode("latin-1", "replace") + b"\n", mode)

    for name, fn in (
        ("random", random_bytes),
        ("mutated", mutated_frames),
        ("garbage_between", garbage_between),
        ("text", text_lines),
    ):
        before = T.inputs
        t0 = time.perf_counter()
        fn()
        report[name] = {"inputs": T.inputs - before, "seconds": time.perf_counter() - t0}
        common.log(
            f"  hypothesis {name}: {report[name]['inputs']} inputs in {report[name]['seconds']:.1f} s, "
            f"crashes so far {len(T.crashes)}"
        )
    return report


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, m.SpectrumFrame):
        return (a.seq, a.timestamp_ms, a.integration_ms, a.averages, a.flags) == (
            b.seq,
            b.timestamp_ms,
            b.integration_ms,
            b.averages,
            b.flags,
        ) and np.array_equal(a.counts, b.counts)
    if isinstance(a, m.DeviceInfo):
        return (a.model, a.serial_number, a.pixel_count) == (b.model, b.serial_number, b.pixel_count)
    return bool(a == b)


ATHERIS_TARGET = r"""
import json, sys, traceback, atheris
from pathlib import Path
with atheris.instrument_imports():
    from firmware_bridge.codec import Codec, MAX_PENDING_EVENTS, _BUFFER_LIMIT
MODES = ("binary", "line", "auto")
SIGS = {}
OUT = sys.argv.pop(1)
def one(data):
    if not data:
        return
    mode = MODES[data[0] % 3]
    body = data[1:]
    step = (1 + data[0] // 3) * 37
    try:
        c = Codec(mode)
        for i in range(0, len(body), step):
            c.feed(body[i:i + step])
            assert c.buffered <= max(_BUFFER_LIMIT.values()), c.buffered
            assert len(c._events) <= MAX_PENDING_EVENTS
            while c.next_event() is not None:
                pass
    except Exception as err:
        # Record and go on, so one known bug does not end the campaign at its first hit.
        tb = traceback.extract_tb(err.__traceback__)[-1]
        sig = f"{type(err).__name__} at {Path(tb.filename).name}:{tb.lineno} ({tb.name})"
        first = {"count": 0, "mode": mode, "first_input_hex": body[:200].hex(), "message": str(err)[:200]}
        e = SIGS.setdefault(sig, first)
        e["count"] += 1
        if e["count"] == 1 or e["count"] % 1000 == 0:
            Path(OUT).write_text(json.dumps(SIGS))
atheris.Setup(sys.argv, one)
atheris.Fuzz()
"""


def run_atheris(path: Path, runs: int, max_len: int = 8192) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), str(common.REPO)]))
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="atheris-"))
    sig_file = tmp / "signatures.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            ATHERIS_TARGET,
            str(sig_file),
            f"-runs={runs}",
            f"-max_len={max_len}",
            "-print_final_stats=1",
            f"-artifact_prefix={tmp}/",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=3600,
    )
    signatures = json.loads(sig_file.read_text()) if sig_file.exists() else {}
    out = proc.stdout + proc.stderr
    stats = {}
    for line in out.splitlines():
        if line.startswith("stat::"):
            k, _, v = line[6:].partition(":")
            stats[k.strip()] = v.strip()
    return {
        "runs_requested": runs,
        "returncode": proc.returncode,
        "seconds": time.perf_counter() - t0,
        "stats": stats,
        "crashed": proc.returncode != 0,
        "signatures": signatures,
        "tail": out[-1500:] if proc.returncode else out[-400:],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small budget (finishes in < 2 minutes)")
    ap.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    ap.add_argument("--atheris-path", type=Path, default=None, help="directory with atheris installed (--target)")
    args = ap.parse_args(argv)
    budget = (
        {"random": 3000, "mutated": 2000, "garbage_between": 1000, "text": 1000}
        if args.quick
        else {"random": 100_000, "mutated": 20_000, "garbage_between": 10_000, "text": 10_000}
    )
    atheris_runs = 20_000 if args.quick else 200_000
    machine = common.machine_info()
    machine["packages"]["hypothesis"] = common.package_versions(["hypothesis"])["hypothesis"]
    t0 = time.perf_counter()
    common.log(f"hypothesis budget {budget}")
    hyp = run_hypothesis(budget)
    atheris = None
    if args.atheris_path is not None:
        common.log(f"atheris: {atheris_runs} runs")
        atheris = run_atheris(args.atheris_path, atheris_runs)
        common.log(f"  atheris rc {atheris['returncode']} in {atheris['seconds']:.0f} s")
    elapsed = time.perf_counter() - t0
    data: dict[str, Any] = {
        "benchmark": NAME,
        "parameters": {
            "quick": args.quick,
            "hypothesis_max_examples": budget,
            "atheris_runs": atheris_runs if atheris else None,
            "buffer_limits": _BUFFER_LIMIT,
            "max_pending_events": MAX_PENDING_EVENTS,
        },
        "machine": machine,
        "hypothesis": hyp,
        "totals": {
            "inputs": T.inputs,
            "bytes": T.bytes,
            "feeds": T.feeds,
            "events": T.events,
            "frame_errors": T.frame_errors,
            "messages": T.messages,
            "crashes": len(T.crashes),
            "crash_signatures": len(T.signatures),
            "own_errors_raised": len(T.own_errors),
            "invariant_failures": len(T.invariant_failures),
            "max_buffered": T.max_buffered,
            "max_pending_events": T.max_pending,
            "resync_frames_checked": T.resync_checked,
            "resync_frames_missing": T.resync_missing,
            "phantom_messages": T.phantoms,
        },
        "crash_signatures": T.signatures,
        "crashes": T.crashes,
        "own_errors": T.own_errors,
        "invariant_failures": T.invariant_failures,
        "atheris": atheris,
        "elapsed_s": elapsed,
    }
    rows = [
        [k, f"{v['inputs']:,}", f"{v['seconds']:.1f}", f"{v['inputs'] / max(v['seconds'], 1e-9):,.0f}"]
        for k, v in hyp.items()
    ]
    tot = data["totals"]
    lines = [
        f"# Codec fuzz campaign{' (--quick)' if args.quick else ''}",
        "",
        common.md_table(["strategy (hypothesis)", "inputs", "seconds", "inputs/s"], rows),
        "",
        common.md_table(
            ["check", "result"],
            [
                [
                    "inputs tried (hypothesis)",
                    f"{tot['inputs']:,} ({tot['bytes'] / 1e6:.1f} MB, {tot['feeds']:,} feed calls)",
                ],
                [
                    "crashes (any exception but firmware_bridge's own)",
                    f"{tot['crashes']} ({tot['crash_signatures']} distinct sites)",
                ],
                ["firmware_bridge errors raised (the codec promises none)", tot["own_errors_raised"]],
                ["invariant violations (buffer / pending bound, event type, resync)", tot["invariant_failures"]],
                [
                    "max bytes buffered (binary / line / auto; limits "
                    f"{_BUFFER_LIMIT['binary']} / {_BUFFER_LIMIT['line']} / {_BUFFER_LIMIT['auto']})",
                    " / ".join(str(tot["max_buffered"][k]) for k in MODES),
                ],
                [f"max pending events (limit {MAX_PENDING_EVENTS})", tot["max_pending_events"]],
                ["events: messages / FrameErrors", f"{tot['messages']:,} / {tot['frame_errors']:,}"],
                [
                    "intact frames between garbage decoded",
                    f"{tot['resync_frames_checked'] - tot['resync_frames_missing']:,} "
                    f"of {tot['resync_frames_checked']:,}",
                ],
                ["phantom messages decoded from garbage", tot["phantom_messages"]],
            ],
            "lr",
        ),
        "",
    ]
    if atheris:
        st_ = atheris["stats"]
        lines += [
            f"atheris (libFuzzer, coverage-guided; installed with `pip install --target`, not a project dependency): "
            f"{st_.get('number_of_executed_units', '?')} executions in {atheris['seconds']:.0f} s, "
            f"libFuzzer exit {'abnormal (see json)' if atheris['crashed'] else 'normal'}; "
            "exceptions caught and recorded "
            f"by site: {sum(v['count'] for v in atheris['signatures'].values())} in "
            f"{len(atheris['signatures'])} distinct site(s); peak RSS {st_.get('peak_rss_mb', '?')} MB.",
            "",
        ]
    else:
        lines += ["atheris: not run (pass --atheris-path DIR after `pip install --target DIR atheris`).", ""]
    if T.signatures or (atheris and atheris.get("signatures")):
        sigs = dict(T.signatures)
        for k, v in (atheris or {}).get("signatures", {}).items():
            sigs.setdefault(k + " [atheris]", v)
        lines += [
            "Crash sites (first input, hex, truncated):",
            "",
            common.md_table(
                ["exception at", "count", "mode", "message", "first input"],
                [
                    [k, v["count"], v["mode"], v["message"][:80], "`" + v["first_input_hex"][:60] + "`"]
                    for k, v in sigs.items()
                ],
                "lrlll",
            ),
            "",
        ]
    lines += [
        "Invariant violations include intact frames that did not come out of garbage-between inputs (resync); "
        "details of the first 20 of each kind are in the JSON.",
        "",
        f"Total run time {elapsed:.0f} s. " + h_machine(machine),
    ]
    jpath, mpath = common.write_results(args.out, NAME, data, "\n".join(lines))
    common.log(f"wrote {jpath} and {mpath} in {elapsed:.0f} s; crashes {len(T.crashes)}")
    return 0


def h_machine(info: dict[str, Any]) -> str:
    pk = info.get("packages", {})
    vers = ", ".join(f"{k} {v}" for k, v in pk.items() if v)
    return (
        f"Machine: {info.get('cpu_model')}, nproc {info.get('nproc')}, load at start {info.get('loadavg_start')}, "
        f"Python {info.get('python')}; {vers}; git {info.get('git')}; {info.get('date_utc')}."
    )


if __name__ == "__main__":
    sys.exit(main())
