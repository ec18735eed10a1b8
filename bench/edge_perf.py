"""Edge latency: per-spectrum time by stage, int8 vs float32 vs Keras, import and cold start.

    .venv/bin/python bench/edge_perf.py [--quick] [--out bench/results] [--core 0]

Writes edge_perf_latency.{json,md,png}. The whole process is pinned to one core (the
`--core`, default 0) before NumPy is imported, and BLAS/OpenMP pools are limited to one
thread, because the device runs one acquisition thread per spectrometer and we want the
time of one spectrum, not of a parallel speed-up on a shared machine.

1. Pipeline, per spectrum, over `--n` spectra for each detector size in `--pixels`
   (default 1,024 and 1,360; a pool of distinct emulated frames, reused in rotation):
   decode (Codec.feed of a binary SPECTRUM frame + next_event), preprocess / classify /
   deconv (as timed by `Analyzer.analyze_counts`, dark frame subtracted as in the daemon),
   and commit (`edge.daemon.build_result` + `Outbox.commit` in a temporary directory: the
   WAL write on the acquisition thread; the group fsync runs on the outbox's syncer thread,
   and its commit-to-durable time is reported separately). CPU time per spectrum
   (process CPU time over the loop / spectra) is the number that predicts a slower core.
   Publish (MQTT) is not measured: it needs a broker and runs on the publisher thread, off
   the acquisition path.
2. Classification alone, on the model inputs the pipeline produced, measured in interleaved
   rounds so machine noise hits every variant alike: the bundle's int8 model in LiteRT
   (`Classifier.probabilities`: quantise, invoke, dequantise), the float32 TFLite model
   (the same architecture converted without quantisation, BatchNorm folded like the int8
   export), Keras `model.predict` one spectrum at a time, and Keras `predict` in batches of
   256 (time per spectrum = batch time / 256). The Keras model is the one the bundle was
   exported from when `--keras-model` points at it and it matches the bundle's classes;
   otherwise a same-architecture model is trained for a few epochs (fine for timing, not for
   accuracy). TensorFlow is imported only for this part, after part 1.
3. Cold start, in fresh subprocesses (which inherit the pinning): `import edge.pipeline`,
   load bundle + Analyzer, first classification, first full analysis; peak RSS of the
   subprocess (getrusage ru_maxrss) and whether `tensorflow` got imported (it must not).
"""

from __future__ import annotations

import os
import sys

# Pin before NumPy/TF start thread pools sized to the visible cores.
_CORE = int(sys.argv[sys.argv.index("--core") + 1]) if "--core" in sys.argv else 0
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {_CORE})
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DEFAULT_OUT,
    REPO,
    ensure_repo_on_path,
    fs_type,
    log,
    machine_info,
    md_table,
    percentiles,
    write_results,
)

ensure_repo_on_path()

from edge.bundle import load_bundle  # noqa: E402
from edge.daemon import build_result  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from edge.pipeline import Analyzer  # noqa: E402
from edge.preprocess import preprocess  # noqa: E402
from firmware_bridge.codec import Codec  # noqa: E402
from firmware_bridge.messages import SpectrumFrame  # noqa: E402
from firmware_bridge.physics import InstrumentModel, simulate_counts  # noqa: E402
from trainer.rruff import DEFAULT_RRUFF_PATH, load_rruff, select  # noqa: E402

NAME = "edge_perf_latency"
STAGES = ("decode", "preprocess", "classify", "deconv", "commit", "total")
PIXELS = (1024, 1360)

#: The emulated instrument for the latency run (a typical, accepted spectrum: what matters
#: is that the spectra pass the gate, so every stage runs).
INSTRUMENT = {
    "laser_nm": 785.0,
    "pixels": 1024,
    "signal_e_per_ms": 60.0,
    "integration_ms": 40,
    "fluorescence_ratio": 2.0,
    "cosmic_rate": 0.2,
}

# Cold start probe, run as `python -c`: only edge.* imports are timed; `tensorflow` must be absent.
_COLD_PROBE = r"""
import time, sys
t0 = time.perf_counter()
import edge.pipeline
t1 = time.perf_counter()
from edge.bundle import load_bundle
bundle = load_bundle(sys.argv[1] or None)
an = edge.pipeline.Analyzer(bundle)
t2 = time.perf_counter()
import numpy as np
d = np.load(sys.argv[2])
an.classifier.classify(d["values"])
t3 = time.perf_counter()
a = an.analyze_counts(d["counts"], d["shifts"], dark=d["dark"])
t4 = time.perf_counter()
import json, os, resource
def vm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
print(json.dumps({
    "import_edge_pipeline_ms": (t1 - t0) * 1e3,
    "load_bundle_analyzer_ms": (t2 - t1) * 1e3,
    "first_classify_ms": (t3 - t2) * 1e3,
    "first_analysis_ms": (t4 - t3) * 1e3,
    "cold_start_ms": (t3 - t0) * 1e3,
    "first_status": a.status,
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork+exec, so a child started by a
    # big benchmark process would report the parent's peak.
    "peak_rss_mb": vm("VmHWM"),
    "rss_mb": vm("VmRSS"),
    "tensorflow_imported": "tensorflow" in sys.modules,
    "keras_imported": "keras" in sys.modules,
    "runtime": an.classifier.runtime,
    "affinity": sorted(os.sched_getaffinity(0)),
}))
"""


def ms(dt_s: float) -> float:
    return dt_s * 1e3


# -- part 1: the pipeline ------------------------------------------------------------------


def make_frames(
    analyzer: Analyzer, rruff: Path, n_pool: int, seed: int, pixels: int
) -> tuple[list[bytes], np.ndarray, np.ndarray, InstrumentModel, list[np.ndarray]]:
    """Encoded SPECTRUM frames of emulated spectra (device side of the codec), shifts, dark."""
    spectra, _ = load_rruff(rruff, minerals=set(analyzer.bundle.labels))
    chosen, _ = select(spectra, "paper")
    rng = np.random.default_rng(seed)
    picks = [chosen[i] for i in rng.choice(len(chosen), size=n_pool, replace=n_pool > len(chosen))]
    model = InstrumentModel.default(**{**INSTRUMENT, "pixels": pixels})  # type: ignore[arg-type]
    device = Codec("binary")
    frames, raw = [], []
    for k, s in enumerate(picks):
        counts = simulate_counts(s.shift_cm1, s.intensity, model, rng)
        raw.append(counts)
        frame = SpectrumFrame(k, 1000 * k, model.integration_ms, 1, 0, counts)
        frames.append(device.encode(frame))
    # Cosmic-ray-free dark frame: a ray in it would put a deep negative spike into every
    # spectrum (the despiker removes only positive ones); the float models then see inputs
    # far outside the training range while int8 input quantisation clips them at 0, which
    # wrecks the int8-vs-float agreement check (bench/robustness.py measures that case).
    clean = replace(model, cosmic_rate=0.0)
    dark = simulate_counts([0.0, 1.0], [0.0, 0.0], clean, rng, dark=True).astype(np.float64)
    shifts = analyzer.shifts_for(model.reported_calibration_nm(), model.laser_nm, model.pixels)
    return frames, shifts, dark, model, raw


def run_pipeline(
    analyzer: Analyzer,
    frames: list[bytes],
    shifts: np.ndarray,
    dark: np.ndarray,
    model: InstrumentModel,
    n: int,
    outbox_dir: Path,
) -> tuple[dict[str, list[float]], list[np.ndarray], dict[str, Any]]:
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    times["analyze_wall"] = []
    values: list[np.ndarray] = []
    statuses: dict[str, int] = {}
    host = Codec("binary")
    bundle = analyzer.bundle
    with Outbox(outbox_dir / "outbox.db", device_id="bench") as outbox:
        for i in range(n):
            wire = frames[i % len(frames)]
            t0 = time.perf_counter()
            host.feed(wire)
            event = host.next_event()
            counts = np.asarray(event.counts)  # type: ignore[union-attr]
            t1 = time.perf_counter()
            a = analyzer.analyze_counts(counts, shifts, dark=dark)
            t2 = time.perf_counter()
            result = build_result(
                a,
                bundle=bundle,
                device_id="bench",
                acquired_at=datetime.now(timezone.utc),
                serial="EMU",
                laser_nm=model.laser_nm,
                integration_ms=model.integration_ms,
                frame_seq=event.seq,  # type: ignore[union-attr]
                decode_ms=round(ms(t1 - t0), 3),
            )
            outbox.commit(result)  # WAL write; the group fsync follows on the syncer thread
            t3 = time.perf_counter()
            statuses[a.status] = statuses.get(a.status, 0) + 1
            times["decode"].append(ms(t1 - t0))
            for s in ("preprocess", "classify", "deconv"):
                if s in a.latency_ms:
                    times[s].append(a.latency_ms[s])
            times["analyze_wall"].append(ms(t2 - t1))
            # build_result + to_json + SQLite transaction (WAL write): what the daemon pays.
            times["commit"].append(ms(t3 - t2))
            times["total"].append(ms(t3 - t0))
            if a.values is not None and len(values) < len(frames):
                values.append(a.values)
        outbox.wait_durable(timeout_s=10)
        # Commit start -> fsync done, per result (what a result waits before it may be published).
        times["commit_to_durable"] = [r.commit_ms for r in outbox.peek(limit=n + 1) if r.commit_ms is not None]
        info = {
            "statuses": statuses,
            "codec_errors": host.stats.error_count,
            "outbox_stats": outbox.stats().__dict__,
            "group_commit_ms": outbox.group_commit_s * 1e3,
        }
    return times, values, info


# -- part 2: classification alone -----------------------------------------------------------


def keras_model_for(bundle: Any, path: Path | None, rruff: Path, quick: bool) -> tuple[Any, dict[str, Any]]:
    import keras

    from trainer.fmcnn import ArchConfig, TrainConfig, make_fmcnn, train_fmcnn

    arch_dict = bundle.manifest.get("training", {}).get("config", {}).get("arch")
    arch = ArchConfig(**arch_dict) if arch_dict else ArchConfig()
    if path is not None and path.is_file():
        m = logits_only(keras.models.load_model(path, compile=False))
        if tuple(m.input_shape[1:]) == (bundle.spec.grid_n, 1) and m.output_shape[-1] == len(bundle.labels):
            return m, {"source": str(path), "note": "the Keras model the bundle was exported from (if it matches)"}
        log(f"{path} does not match the bundle ({m.input_shape} -> {m.output_shape}); training a stand-in")
    spectra, _ = load_rruff(rruff, minerals=set(bundle.labels))
    chosen, _ = select(spectra, "paper")
    index = {m: i for i, m in enumerate(bundle.labels)}
    if quick:
        chosen = chosen[::4]
    X = np.stack([preprocess(s.shift_cm1, s.intensity, bundle.spec, corrected=True).values for s in chosen])
    y = np.array([index[s.mineral] for s in chosen])
    epochs = 1 if quick else 3
    t0 = time.perf_counter()
    m, _ = train_fmcnn(X, y, len(bundle.labels), TrainConfig(arch=arch, epochs=epochs, seed=0, val_split="spectrum"))
    _ = make_fmcnn  # same builder as the bundle's model
    return m, {
        "source": "trained here",
        "epochs": epochs,
        "train_s": time.perf_counter() - t0,
        "note": "same architecture as the bundle (manifest arch), few epochs: valid for timing only",
    }


def float_tflite(model: Any) -> bytes:
    import tensorflow as tf

    from trainer.fmcnn import fold_batchnorm

    converter = tf.lite.TFLiteConverter.from_keras_model(logits_only(fold_batchnorm(model)))
    return bytes(converter.convert())


def logits_only(model: Any) -> Any:
    """The logits output of an FMCNN: inference models also output the embedding (issue 11),
    and output order in a converted TFLite model is not guaranteed, so pick it by layer name."""
    import keras

    if len(model.outputs) == 1:
        return model
    return keras.Model(model.input, model.get_layer("logits").output, name=f"{model.name}_logits")


class Int8Invoke:
    """The bundle's int8 model on pre-quantised input: the interpreter's own share of int8 time
    (the same edge.classifier.TFLiteNet the pipeline runs, minus quantise/dequantise)."""

    def __init__(self, net: Any) -> None:
        self.net = net

    def quantise(self, values: np.ndarray) -> np.ndarray:
        return self.net.quantise(values)

    def invoke(self, q: np.ndarray) -> None:
        self.net.invoke(q)


class FloatTflite:
    def __init__(self, content: bytes) -> None:
        from edge.classifier import load_interpreter_class

        cls, self.runtime = load_interpreter_class()
        self.interp = cls(model_content=content, num_threads=1)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]["index"]
        self.out = self.interp.get_output_details()[0]["index"]

    def probabilities(self, values: np.ndarray) -> np.ndarray:
        self.interp.set_tensor(self.inp, np.asarray(values, np.float32).reshape(1, -1, 1))
        self.interp.invoke()
        return self.interp.get_tensor(self.out)[0]


def compare_classifiers(
    analyzer: Analyzer,
    keras_model: Any,
    values: list[np.ndarray],
    n: int,
    n_keras_single: int,
    n_batches: int,
    rounds: int,
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    tfl_bytes = float_tflite(keras_model)
    fl = FloatTflite(tfl_bytes)
    i8 = analyzer.classifier
    i8raw = Int8Invoke(analyzer.classifier.net)
    V = np.stack(values).astype(np.float32)
    Q = [i8raw.quantise(v) for v in V]
    batch = np.stack([V[i % len(V)] for i in range(256)])[..., None]
    t: dict[str, list[float]] = {
        "int8_litert": [],
        "int8_invoke_only": [],
        "float32_tflite": [],
        "keras_predict_1": [],
        "keras_call_1": [],
        "keras_predict_b256": [],
    }
    # Warm-up: first invocations allocate and (Keras) trace; not what steady state costs.
    for _ in range(5):
        i8.probabilities(V[0])
        i8raw.invoke(Q[0])
        fl.probabilities(V[0])
        keras_model.predict(V[:1, :, None], verbose=0)
        keras_model(V[:1, :, None], training=False)
    keras_model.predict(batch, batch_size=256, verbose=0)
    k = 0
    for _round in range(rounds):
        for name in t:
            if name == "int8_invoke_only":
                for _ in range(n // rounds):
                    q = Q[k % len(Q)]
                    k += 1
                    t0 = time.perf_counter()
                    i8raw.invoke(q)
                    t[name].append(ms(time.perf_counter() - t0))
            elif name == "int8_litert" or name == "float32_tflite":
                f = i8.probabilities if name == "int8_litert" else fl.probabilities
                for _ in range(n // rounds):
                    v = V[k % len(V)]
                    k += 1
                    t0 = time.perf_counter()
                    f(v)
                    t[name].append(ms(time.perf_counter() - t0))
            elif name in ("keras_predict_1", "keras_call_1"):
                for _ in range(max(1, n_keras_single // rounds)):
                    x = V[k % len(V)][None, :, None]
                    k += 1
                    t0 = time.perf_counter()
                    if name == "keras_predict_1":
                        keras_model.predict(x, verbose=0)
                    else:
                        np.asarray(keras_model(x, training=False))
                    t[name].append(ms(time.perf_counter() - t0))
            else:
                for _ in range(max(1, n_batches // rounds)):
                    t0 = time.perf_counter()
                    keras_model.predict(batch, batch_size=256, verbose=0)
                    t[name].append(ms(time.perf_counter() - t0) / 256)
    # Do the three agree? (the stand-in model, if trained here, is a different model than the bundle)
    p8 = np.array([np.argmax(i8.probabilities(v)) for v in V])
    pf = np.array([np.argmax(fl.probabilities(v)) for v in V])
    pk = np.argmax(keras_model.predict(V[..., None], batch_size=256, verbose=0), axis=1)
    agree = {
        "n": len(V),
        "int8_vs_float32_tflite": float((p8 == pf).mean()),
        "float32_tflite_vs_keras": float((pf == pk).mean()),
    }
    return t, {
        "float32_tflite_bytes": len(tfl_bytes),
        "int8_tflite_bytes": analyzer.bundle.model_path.stat().st_size,
        "top1_agreement": agree,
        "float_runtime": fl.runtime,
    }


# -- part 3: cold start ---------------------------------------------------------------------


def cold_start(bundle_arg: str, probe_npz: Path, reps: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    runs, walls, bare = [], [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, env=env, cwd=REPO)
        bare.append(ms(time.perf_counter() - t0))
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _COLD_PROBE, bundle_arg, str(probe_npz)],
            check=True,
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        walls.append(ms(time.perf_counter() - t0))
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    # Which imports dominate `import edge.pipeline` (one extra run with -X importtime).
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import edge.pipeline"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    # Children and grandchildren of edge.pipeline (indent 1-2 levels under it), >= 5 ms.
    top: list[tuple[str, float]] = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip()) - 1) // 2
            if 1 <= depth <= 2 and int(parts[1]) >= 5000:
                top.append(("  " * (depth - 1) + name.strip(), int(parts[1]) / 1e3))
    keys = [k for k, v in runs[0].items() if isinstance(v, float)]
    return {
        "reps": reps,
        "median": {k: statistics.median(r[k] for r in runs) for k in keys},
        "process_wall_ms_median": statistics.median(walls),
        "python_bare_start_ms_median": statistics.median(bare),
        "tensorflow_imported_any": any(r["tensorflow_imported"] for r in runs),
        "keras_imported_any": any(r["keras_imported"] for r in runs),
        "runs": runs,
        "process_wall_ms": walls,
        "import_top_ms": top,
    }


# -- report ---------------------------------------------------------------------------------


def f2(x: float) -> str:
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def markdown(data: dict[str, Any]) -> str:
    p, m = data["parameters"], data["machine"]
    runs = data["pipeline_by_pixels"]
    lines = [
        "# Edge latency per spectrum",
        "",
        f"{m['cpu_model']}, {m['nproc']} cores on the machine, pinned to core {p['core']}; "
        f"Python {m['python']}, ai-edge-litert {m['packages'].get('ai-edge-litert')}, "
        f"TF {m['packages'].get('tensorflow') or m['packages'].get('tensorflow-cpu')}; {m['date_utc']}; "
        f"load average at start {m.get('loadavg_start')}, end {data.get('loadavg_end')} "
        "(the machine is shared: read ratios, not absolute values). "
        f"Bundle `{p['bundle']}` ({p['n_classes']} classes). Run {data['run_seconds']:.0f} s.",
        "",
        f"## Pipeline stages ({p['n_pipeline']} spectra per detector size, {p['n_pool']} distinct emulated "
        f"frames, outbox on {p['outbox_fs']}, group commit {data['pipeline_info']['group_commit_ms']:g} ms)",
        "",
    ]
    rows = []
    for px, run in runs.items():
        for s in [*STAGES, "commit_to_durable"]:
            q = run["stages"][s]
            rows.append([px, s, q.get("n", 0), f2(q["p50"]), f2(q["p90"]), f2(q["p99"]), f2(q["mean"]), f2(q["max"])])
    lines.append(md_table(["pixels", "stage", "n", "p50 ms", "p90 ms", "p99 ms", "mean ms", "max ms"], rows))
    cpu_rows = [
        [
            px,
            f"{run['info']['cpu_ms_per_spectrum']:.3f}",
            f"{run['info']['cpu_share']:.2f}",
            f"{1000.0 / run['info']['cpu_ms_per_spectrum']:.0f}",
            run["info"]["statuses"],
        ]
        for px, run in runs.items()
    ]
    lines += [
        "",
        md_table(
            ["pixels", "CPU ms / spectrum", "CPU share", "spectra/s per core (1000 / CPU ms)", "statuses"], cpu_rows
        ),
        "",
        "decode = Codec.feed + next_event of one binary SPECTRUM frame; commit = build_result + Outbox.commit "
        "(the WAL write on the acquisition thread; SQLite synchronous=NORMAL); commit_to_durable = commit start "
        "until the outbox's group fsync completed (syncer thread; a result is published only after it); "
        "total = decode..commit wall time. Publish (MQTT) not measured (publisher thread, needs a broker). "
        "classify = the CNN on LiteRT, its logits head and softmax on the host, the reference-library search, "
        "the fusion and the mixture fit (the classification rows below time the CNN alone). "
        "CPU share = process CPU time / wall time (includes the syncer thread; below 1 means the pinned core "
        "was also busy with other work).",
        "",
        "## Classification alone (same inputs, interleaved rounds)",
        "",
    ]
    c = data["classify"]
    base = c["int8_litert"]
    rows = []
    for name, label in (
        ("int8_litert", "int8 LiteRT (bundle, as Classifier: quantise + invoke + dequantise)"),
        ("int8_invoke_only", "int8 LiteRT, invoke only (input pre-quantised)"),
        ("float32_tflite", "float32 TFLite (LiteRT)"),
        ("keras_predict_1", "Keras predict, 1 at a time"),
        ("keras_call_1", "Keras model(x), 1 at a time"),
        ("keras_predict_b256", "Keras predict, batch 256 (per spectrum)"),
    ):
        q = c[name]
        rows.append(
            [
                label,
                q["n"],
                f2(q["p50"]),
                f2(q["p99"]),
                f"{q['p50'] / base['p50']:.2f}",
                f"{q['p99'] / base['p99']:.2f}",
            ]
        )
    lines.append(md_table(["classifier", "n", "p50 ms", "p99 ms", "p50 / int8", "p99 / int8"], rows))
    ci = data["classify_info"]
    lines += [
        "",
        f"Keras model: {data['keras_model']['source']} ({data['keras_model']['note']}). "
        f"Model files: int8 {ci['int8_tflite_bytes']} B, float32 {ci['float32_tflite_bytes']} B. "
        f"Top-1 agreement on {ci['top1_agreement']['n']} inputs: int8 vs float32 "
        f"{100 * ci['top1_agreement']['int8_vs_float32_tflite']:.1f}%, float32 TFLite vs Keras "
        f"{100 * ci['top1_agreement']['float32_tflite_vs_keras']:.1f}%. "
        "int8 time includes quantising the input and dequantising the output. "
        + (
            "The stand-in Keras model is not the bundle's model, so int8-vs-float agreement is meaningless here. "
            if data["keras_model"]["source"] == "trained here"
            else ""
        )
        + f"CPU share during this part: {ci['cpu_share']:.2f}.",
        "",
        f"## Cold start (fresh process, median of {data['cold']['reps']})",
        "",
    ]
    cm = data["cold"]["median"]
    rows = [
        ["python -c pass (interpreter alone)", f2(data["cold"]["python_bare_start_ms_median"])],
        ["import edge.pipeline", f2(cm["import_edge_pipeline_ms"])],
        ["load_bundle + Analyzer (SHA-256 check, interpreter, deconv weights)", f2(cm["load_bundle_analyzer_ms"])],
        ["first classification", f2(cm["first_classify_ms"])],
        ["cold start = import + load + first classification", f2(cm["cold_start_ms"])],
        ["first full analysis (after the first classification)", f2(cm["first_analysis_ms"])],
        ["whole subprocess wall time", f2(data["cold"]["process_wall_ms_median"])],
        ["peak RSS (VmHWM, MB)", f"{cm['peak_rss_mb']:.0f}"],
    ]
    lines.append(md_table(["what", "ms"], rows))
    top = ", ".join(f"{n.strip()} {v:.0f} ms" for n, v in data["cold"]["import_top_ms"])
    lines += [
        "",
        f"`tensorflow` imported in the subprocess: {data['cold']['tensorflow_imported_any']}; "
        f"`keras`: {data['cold']['keras_imported_any']}. Imports under edge.pipeline >= 5 ms, cumulative "
        f"(one `-X importtime` run, nested ones included in their parent): {top}.",
        "",
        "![latency](edge_perf_latency.png)",
    ]
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    st = [s for s in STAGES if s != "total"]
    xs = np.arange(len(st))
    a1.bar(xs - 0.2, [data["pipeline"][s]["p50"] for s in st], 0.4, label="p50")
    a1.bar(xs + 0.2, [data["pipeline"][s]["p99"] for s in st], 0.4, label="p99")
    a1.set_xticks(xs, st)
    a1.set_ylabel("ms per spectrum")
    total_p50 = data["pipeline"]["total"]["p50"]
    a1.set_title(f"pipeline stages, {data['parameters']['pixels']} px (total p50 {total_p50:.1f} ms)")
    a1.legend()
    names = [
        "int8_litert",
        "int8_invoke_only",
        "float32_tflite",
        "keras_call_1",
        "keras_predict_1",
        "keras_predict_b256",
    ]
    xs = np.arange(len(names))
    a2.bar(xs - 0.2, [data["classify"][n]["p50"] for n in names], 0.4, label="p50")
    a2.bar(xs + 0.2, [data["classify"][n]["p99"] for n in names], 0.4, label="p99")
    a2.set_yscale("log")
    a2.set_xticks(
        xs,
        ["int8\nLiteRT", "int8\ninvoke", "float32\nTFLite", "Keras\nmodel(x)", "Keras\npredict 1", "Keras\nbatch 256"],
    )
    a2.set_ylabel("ms per spectrum (log)")
    a2.set_title("classification alone")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (~300 spectra, 1 cold start)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--core", type=int, default=0, help="CPU core to pin to (parsed before imports)")
    ap.add_argument("--n", type=int, default=None, help="spectra through the pipeline (default 5000; quick 300)")
    ap.add_argument("--model", type=Path, default=None, help="bundle directory (default: models/fmcnn-rruff)")
    ap.add_argument("--rruff", type=Path, default=DEFAULT_RRUFF_PATH)
    ap.add_argument(
        "--keras-model",
        type=Path,
        default=Path("runs/fmcnn-rruff/model.keras"),
        help="Keras model the bundle came from (used if it matches; else a stand-in is trained)",
    )
    ap.add_argument("--outbox-dir", type=Path, default=None, help="where the temporary outbox lives (default: TMPDIR)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pixels", default=",".join(map(str, PIXELS)), help="detector sizes, comma-separated")
    args = ap.parse_args(argv)
    pixel_sizes = [int(x) for x in args.pixels.split(",")]
    t_start = time.perf_counter()
    machine = machine_info()
    n = args.n or (300 if args.quick else 5000)
    n_pool = 64 if args.quick else 256
    n_keras_single = 20 if args.quick else 500
    n_batches = 4 if args.quick else 20
    rounds = 2 if args.quick else 10
    reps = 1 if args.quick else 5

    bundle = load_bundle(args.model)
    analyzer = Analyzer(bundle)
    log(
        f"pinned to core {sorted(os.sched_getaffinity(0))}; bundle {bundle.name}, runtime {analyzer.classifier.runtime}"
    )
    by_pixels: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-outbox-", dir=args.outbox_dir) as tmp:
        outbox_fs = fs_type(Path(tmp))
        for px in pixel_sizes:
            frames, shifts, dark, model, raw = make_frames(analyzer, args.rruff, n_pool, args.seed, px)
            log(f"{len(frames)} frames of {px} pixels ({len(frames[0])} bytes on the wire); running {n} spectra")
            c0, w0 = time.process_time(), time.perf_counter()
            times, values, pinfo = run_pipeline(analyzer, frames, shifts, dark, model, n, Path(tmp) / f"px{px}")
            cpu = time.process_time() - c0
            pinfo["cpu_share"] = cpu / (time.perf_counter() - w0)
            pinfo["cpu_ms_per_spectrum"] = cpu * 1e3 / n
            by_pixels[px] = {
                "stages": {s: percentiles(times[s]) for s in [*STAGES, "analyze_wall", "commit_to_durable"]},
                "info": pinfo,
                "frame_bytes": len(frames[0]),
            }
            log(
                f"{px} px: "
                + ", ".join(f"{s} p50 {np.median(times[s]):.3f} ms" for s in STAGES)
                + f"; CPU {pinfo['cpu_ms_per_spectrum']:.3f} ms/spectrum"
            )
        probe = Path(tmp) / "probe.npz"
        np.savez(probe, values=values[0], counts=raw[0], shifts=shifts, dark=dark)
        cold = cold_start(str(args.model or ""), probe, reps)
        log(
            f"cold start median {cold['median']['cold_start_ms']:.0f} ms, peak RSS "
            f"{cold['median']['peak_rss_mb']:.0f} MB, tensorflow imported: {cold['tensorflow_imported_any']}"
        )

    # TensorFlow from here on (after the pipeline and the cold-start probes).
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras_model, keras_info = keras_model_for(bundle, args.keras_model, args.rruff, args.quick)
    c0, w0 = time.process_time(), time.perf_counter()
    ctimes, cinfo = compare_classifiers(analyzer, keras_model, values, n, n_keras_single, n_batches, rounds)
    cinfo["cpu_share"] = (time.process_time() - c0) / (time.perf_counter() - w0)
    log("classify: " + ", ".join(f"{k} p50 {np.median(v):.3f} ms" for k, v in ctimes.items()))

    data: dict[str, Any] = {
        "benchmark": NAME,
        "quick": args.quick,
        "machine": machine,
        "parameters": {
            "core": _CORE,
            "bundle": bundle.name,
            "bundle_path": str(bundle.path),
            "bundle_sha256": bundle.sha256,
            "n_classes": len(bundle.labels),
            "n_pipeline": n,
            "n_pool": n_pool,
            "pixels": model.pixels,
            "pixel_sizes": pixel_sizes,
            "frame_bytes": len(frames[0]),
            "instrument": INSTRUMENT,
            "dark_subtracted": "one cosmic-ray-free dark frame",
            "outbox_fs": outbox_fs,
            "n_classify_per_variant": n - n % rounds,
            "n_keras_single": n_keras_single,
            "n_keras_batches": n_batches,
            "keras_batch": 256,
            "rounds": rounds,
            "cold_reps": reps,
            "threads": {
                "litert": 1,
                "tf_intra_op": 1,
                "tf_inter_op": 1,
                "OMP/OPENBLAS/MKL_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            },
            "seed": args.seed,
        },
        # "pipeline" is the last detector size (1,360 by default), kept for bench/readme_results.py.
        "pipeline": by_pixels[pixel_sizes[-1]]["stages"],
        "pipeline_by_pixels": by_pixels,
        "pipeline_info": pinfo,
        "classify": {k: percentiles(v) for k, v in ctimes.items()},
        "classify_ratio_vs_int8": {
            k: {
                "p50": float(np.median(v) / np.median(ctimes["int8_litert"])),
                "p99": float(np.percentile(v, 99) / np.percentile(ctimes["int8_litert"], 99)),
            }
            for k, v in ctimes.items()
        },
        "classify_info": cinfo,
        "keras_model": keras_info,
        "cold": cold,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    data["run_seconds"] = time.perf_counter() - t_start
    args.out.mkdir(parents=True, exist_ok=True)
    plot(data, args.out / f"{NAME}.png")
    jpath, mpath = write_results(args.out, NAME, data, markdown(data))
    log(f"wrote {jpath}, {mpath} in {data['run_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
