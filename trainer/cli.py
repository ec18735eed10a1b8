"""`trainer` command line: cv, train, export, evaluate, report.

Thin: parse flags, call one library function, print a summary. Errors of the EdgeError
family become one line on stderr and exit code 1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer

from edge.errors import EdgeError
from raman_core.errors import RamanError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train, evaluate and export FMCNN mineral classifiers from RRUFF data.",
)

T = TypeVar("T")


def _default_data() -> Path:
    from trainer.rruff import DEFAULT_RRUFF_PATH

    return DEFAULT_RRUFF_PATH


def _fail(msg: str, code: int = 1) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except RamanError as err:  # every package's family, not only edge's
        _fail(str(err))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    raise AssertionError("unreachable")


@contextmanager
def _status(msg: str) -> Any:
    from rich.console import Console

    console = Console(stderr=True)
    with console.status(msg):
        yield console


def _load(data: Path | None, selection: str, minerals: str | None) -> Any:
    from trainer.dataset import from_spectra
    from trainer.rruff import load_rruff, select

    path = data or _default_data()
    with _status(f"reading RRUFF spectra from {path}") as console:
        spectra, report = load_rruff(path)
        chosen, counts = select(spectra, selection)
        if minerals:
            wanted = {m.strip() for m in minerals.split(",") if m.strip()}
            chosen = [s for s in chosen if s.mineral in wanted]
            if not chosen:
                raise EdgeError(f"none of {sorted(wanted)} is in selection {selection!r}")
        ds = from_spectra(chosen, counts=counts)
    console.print(f"[dim]{report.summary()}[/dim]")
    for err in report.errors[:5]:
        console.print(f"[yellow]skipped[/yellow] {err}")
    console.print(
        f"selection [bold]{selection}[/bold]: {len(ds.y)} spectra, {ds.n_classes} classes, "
        f"{len(set(ds.groups.tolist()))} specimens"
    )
    return ds


@app.command()
def cv(
    data: Path = typer.Option(None, help="RRUFF folder or zip (default: the shared copy)."),
    selection: str = typer.Option("paper", help="paper | min8 | all (docs/data.md)."),
    models: str = typer.Option("knn,rf,svm,lda,corr", help="Comma-separated: fmcnn,svm,knn,rf,lda,corr."),
    folds: int = typer.Option(10),
    repeats: int = typer.Option(10),
    seed: int = typer.Option(0),
    group_by: str = typer.Option(None, "--group-by", help="'specimen': never split one RRUFF ID across folds."),
    minerals: str = typer.Option(None, help="Restrict to these minerals (comma-separated; for quick runs)."),
    shifts: str = typer.Option(
        None,
        help="Also score each test fold with its shift axis moved by these cm-1 (comma-separated, "
        "e.g. 0,2,5,10,15,20,30).",
    ),
    out: Path = typer.Option(Path("results/cv.json"), help="JSON output; a .md table is written beside it."),
    cache: Path = typer.Option(None, help="Per-fold JSON-lines cache; rerun resumes (default: OUT.folds.jsonl)."),
    cached_only: bool = typer.Option(
        False, "--cached-only", help="Train nothing: summarise the folds already in the cache (a partial run)."
    ),
    model_dir: Path = typer.Option(
        None,
        "--model-dir",
        help="Keep each fold's trained FMCNN here: the hybrid is built on it instead of training it again, "
        "and a resumed run reuses it (a few MB per fold; default: keep nothing).",
    ),
) -> None:
    """Repeated stratified K-fold CV, same folds for every model."""

    def run() -> None:
        from rich.progress import Progress

        from trainer.cv import CVConfig, markdown_table, restrict_for_grouping, run_cv, summarize

        if group_by not in (None, "specimen"):
            raise EdgeError(f"--group-by must be 'specimen', got {group_by!r}")
        ds = _load(data, selection, minerals)
        if group_by == "specimen":
            ds = restrict_for_grouping(ds)
            typer.echo(
                f"grouped by specimen: {len(ds.y)} spectra in {len(set(ds.y.tolist()))} classes with >= 2 specimens"
            )
        try:
            shift_list = tuple(float(v) for v in shifts.split(",") if v.strip()) if shifts else ()
        except ValueError as err:
            raise EdgeError(f"--shifts must be comma-separated numbers in cm-1, got {shifts!r}") from err
        cfg = CVConfig(
            tuple(m.strip() for m in models.split(",") if m.strip()), folds, repeats, seed, group_by, shift_list
        )
        t0 = time.perf_counter()
        total = folds * repeats * len(cfg.models)
        with Progress(transient=False) as progress:
            task = progress.add_task("cross-validating", total=total)

            def on_fold(r: Any) -> None:
                progress.update(task, advance=1, description=f"{r.model} r{r.repeat} f{r.fold}: {r.accuracy:.3f}")

            results = run_cv(
                ds,
                cfg,
                cache=cache or out.with_suffix(".folds.jsonl"),
                on_fold=on_fold,
                cached_only=cached_only,
                model_dir=model_dir,
            )
        summary = summarize(results, cfg.models)
        protocol = "grouped by specimen" if group_by else "stratified"
        n_cls = ds.n_classes if not group_by else len(set(ds.y.tolist()))
        title = f"{selection} selection, {repeats}x{folds}-fold, {protocol}: {len(ds.y)} spectra, {n_cls} classes"
        done_folds = min((int(v["n_folds"]) for v in summary.values()), default=0)
        if done_folds < folds * repeats:
            title += f" (partial run: {done_folds} of {folds * repeats} folds done; resumable)"
        payload = {
            "config": {
                "selection": selection,
                "models": list(cfg.models),
                "folds": folds,
                "repeats": repeats,
                "seed": seed,
                "group_by": group_by,
                "shifts_cm1": list(cfg.shifts_cm1),
                "data": str(data or _default_data()),
            },
            "dataset": {
                "n_spectra": int(len(ds.y)),
                "n_classes": int(len(set(ds.y.tolist()))),
                "n_specimens": int(len(set(ds.groups.tolist()))),
            },
            "summary": summary,
            "folds": [r.__dict__ for r in results],
            "wall_s": time.perf_counter() - t0,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=1) + "\n")
        table = markdown_table(summary, title)
        out.with_suffix(".md").write_text(table)
        typer.echo(table)
        typer.echo(f"wrote {out} and {out.with_suffix('.md')}")

    _guard(run)


def _train(
    data: Path | None,
    selection: str,
    minerals: str | None,
    epochs: int,
    seed: int,
    augment: bool,
    val_split: str = "spectrum",
    calib_fraction: float = 0.0,
) -> tuple[Any, Any, dict[str, Any], Any, Any]:
    """(model, dataset, info, held-out mask, calibration mask) over the whole dataset."""
    import numpy as np
    from rich.progress import Progress

    from trainer.fmcnn import TrainConfig, holdout_rows, train_fmcnn

    ds = _load(data, selection, minerals)
    cfg = TrainConfig(epochs=epochs, seed=seed, augment=augment, val_split=val_split)
    # Calibration specimens are taken out before training, so neither the gradient nor early
    # stopping sees them: the temperature, fusion and unknown thresholds are fitted on them.
    is_val, is_cal = holdout_rows(ds.y, ds.groups, cfg, calib_fraction)
    rest = np.flatnonzero(~is_cal)
    with Progress() as progress:
        task = progress.add_task("training FMCNN", total=epochs)

        def on_epoch(e: int, logs: dict[str, float]) -> None:
            progress.update(
                task,
                completed=e + 1,
                description=(
                    f"epoch {e + 1} loss {logs['loss']:.3f} val_acc {logs.get('val_accuracy', float('nan')):.3f}"
                ),
            )

        model, history = train_fmcnn(
            ds.X[rest], ds.y[rest], ds.n_classes, cfg, on_epoch=on_epoch, groups=ds.groups[rest]
        )
    info = {
        "selection": selection,
        "data": str(data or _default_data()),
        "minerals": minerals,
        "n_spectra": int(len(ds.y)),
        "n_classes": ds.n_classes,
        "n_specimens": int(len(set(ds.groups.tolist()))),
        "n_train": history["n_train"],
        "n_heldout": history["n_val"],
        "n_calibration": int(is_cal.sum()),
        "calib_fraction": calib_fraction,
        "config": cfg.to_dict(),
        "best_epoch": history["best_epoch"],
        "train_s": round(history["train_s"], 1),
        "params": int(model.count_params()),
        "selection_counts": ds.counts.__dict__ if ds.counts else None,
    }
    return model, ds, info, is_val, is_cal


from trainer.fmcnn import CALIB_FRACTION  # noqa: E402  (light: the module imports keras lazily)


@app.command()
def train(
    data: Path = typer.Option(None, help="RRUFF folder or zip (default: the shared copy)."),
    out: Path = typer.Option(..., help="Directory for model.keras and train.json."),
    selection: str = typer.Option("paper"),
    minerals: str = typer.Option(None),
    epochs: int = typer.Option(120),
    seed: int = typer.Option(0),
    augment: bool = typer.Option(True, help="Instrument-like augmentation (shift jitter, noise, baseline)."),
    val_split: str = typer.Option(
        "specimen", help="Early-stopping/held-out rows: 'spectrum' (random spectra) or 'specimen' (whole RRUFF IDs)."
    ),
    calib_fraction: float = typer.Option(
        CALIB_FRACTION,
        help="Fraction of each mineral's specimens kept out of training and early stopping for the "
        "temperature, fusion and unknown thresholds (0: fit them on the held-out rows).",
    ),
) -> None:
    """Train FMCNN on a selection and save the Keras model."""

    def run() -> None:
        import numpy as np

        model, ds, info, is_val, is_cal = _train(
            data, selection, minerals, epochs, seed, augment, val_split, calib_fraction
        )
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / "model.keras")
        np.savez_compressed(out / "data.npz", X=ds.X, y=ds.y, is_val=is_val, is_cal=is_cal, groups=ds.groups)
        (out / "labels.json").write_text(json.dumps(list(ds.labels)) + "\n")
        (out / "train.json").write_text(json.dumps(info, indent=1) + "\n")
        typer.echo(f"saved {out / 'model.keras'} ({info['params']} parameters, best epoch {info['best_epoch']})")

    _guard(run)


@app.command()
def export(
    out: Path = typer.Option(..., help="Bundle directory, e.g. models/fmcnn-rruff."),
    data: Path = typer.Option(None, help="RRUFF folder or zip (default: the shared copy)."),
    from_dir: Path = typer.Option(None, "--from", help="Export an already trained `trainer train` directory."),
    selection: str = typer.Option("paper"),
    minerals: str = typer.Option(None),
    epochs: int = typer.Option(120),
    seed: int = typer.Option(0),
    augment: bool = typer.Option(True),
    val_split: str = typer.Option(
        "specimen", help="Early-stopping/held-out rows: 'spectrum' (random spectra) or 'specimen' (whole RRUFF IDs)."
    ),
    calib_fraction: float = typer.Option(
        CALIB_FRACTION,
        help="Fraction of each mineral's specimens kept out of training and early stopping for the "
        "temperature, fusion and unknown thresholds (0: fit them on the held-out rows).",
    ),
    name: str = typer.Option(None, help="Bundle name (default: the directory name)."),
    metrics: Path = typer.Option(None, help="JSON of CV results to record in the manifest."),
    model_card: Path = typer.Option(None, help="MODEL_CARD.md to include (hashed with the rest)."),
    activations: str = typer.Option(
        "float32",
        help="Activations of model.tflite (weights are int8 always): float32 (dynamic range; the bottleneck "
        "runs on the host, ~40x faster on the device than 16x8), int16 (16x8) or int8 (full integer). "
        "Every choice must pass --parity-min.",
    ),
    parity_min: float = typer.Option(
        0.99,
        "--parity-min",
        help="Fail unless int8 and float agree on at least this fraction of held-out spectra. Lowering it is "
        "recorded in the manifest and belongs in the model card.",
    ),
) -> None:
    """Train (or load) FMCNN and write an int8 TFLite bundle with parity report."""

    def run() -> None:
        import numpy as np

        from edge.preprocess import PreprocessSpec
        from trainer.dataset import Dataset
        from trainer.export import export_bundle

        if from_dir is not None:
            import keras

            model = keras.models.load_model(from_dir / "model.keras")
            info = json.loads((from_dir / "train.json").read_text())
            z = np.load(from_dir / "data.npz")
            labels = tuple(json.loads((from_dir / "labels.json").read_text()))
            n = len(z["y"])
            ds = Dataset(
                z["X"], z["y"], labels, z["groups"], ("",) * n, np.zeros(n, np.int64), np.ones(n), PreprocessSpec()
            )
            is_val = z["is_val"]
            is_cal = z["is_cal"] if "is_cal" in z.files else np.zeros(n, dtype=bool)
        else:
            model, ds, info, is_val, is_cal = _train(
                data, selection, minerals, epochs, seed, augment, val_split, calib_fraction
            )
        held = ds.subset(np.flatnonzero(is_val))
        cal = ds.subset(np.flatnonzero(is_cal))
        fit = ds.subset(np.flatnonzero(~is_val & ~is_cal))
        m = json.loads(metrics.read_text()) if metrics else {}
        card = model_card.read_text() if model_card else None
        with _status("converting to int8 and checking parity"):
            manifest = export_bundle(
                model,
                fit,
                held,
                out,
                name=name or out.name,
                training_info=info,
                metrics=m,
                model_card=card,
                parity_min=parity_min,
                activations=activations,
                calibration_set=cal,
            )
        p = manifest["parity"]
        typer.echo(
            f"wrote {out}: model.tflite {manifest['size_bytes']['model.tflite'] / 1024:.0f} KB, "
            f"{len(ds.labels)} classes; int8 vs float top-1 agreement {p['top1_agreement']:.3f} on {p['n']} held-out "
            f"(float acc {p['float_accuracy']:.3f}, int8 acc {p['int8_accuracy']:.3f}); unknown threshold "
            f"{manifest['unknown']['threshold']:.3f}"
        )

    _guard(run)


@app.command("refit-fusion")
def refit_fusion_cmd(
    bundle: Path = typer.Option(..., help="Bundle directory whose fusion is re-fitted in place."),
    data: Path = typer.Option(None, help="The RRUFF data it was trained on (default: the shared copy)."),
    noisy: bool = typer.Option(
        True,
        "--noisy/--no-noisy",
        help="Also fit the parameters for noisy spectra (below an SNR threshold) on emulated raw readouts "
        "of the calibration specimens.",
    ),
) -> None:
    """Re-fit the hybrid fusion on the bundle's calibration specimens (no retraining; only
    manifest.json changes) and re-measure it on its held-out specimens."""

    def run() -> None:
        from trainer.refit import refit_fusion

        with _status(f"re-fitting the fusion of {bundle}"):
            f = refit_fusion(bundle, data or _default_data(), noisy=noisy)
        h = f["heldout"]
        typer.echo(
            f"{bundle}: w_corr {f['w_corr']:g}, w_emb {f['w_emb']:g}, T {f['temperature']:.2f}; held-out "
            f"accuracy {h['accuracy']:.3f}, ECE {h['ece']:.3f}, mean top-1 p {h['mean_confidence']:.3f} (n {h['n']})"
        )
        if f.get("noisy"):
            n = f["noisy"]
            typer.echo(
                f"below SNR {f['noisy_below_snr']:g}: w_corr {n['w_corr']:g}, w_emb {n['w_emb']:g}, "
                f"T {n['temperature']:.2f}"
            )

    _guard(run)


@app.command()
def evaluate(
    bundle: Path = typer.Option(..., help="Bundle directory."),
    data: Path = typer.Option(None, help="RRUFF folder or zip: all its Processed spectra are scored."),
    out: Path = typer.Option(None, help="JSON report (a confusion-matrix PNG is written beside it)."),
    library: Path = typer.Option(None, "--library", help="Added-reference directory (as `edge classify --library`)."),
) -> None:
    """Run a bundle exactly as the edge does (edge.pipeline.Analyzer, as `edge classify`) on RRUFF files."""

    def run() -> None:
        from trainer.evaluate import evaluate_bundle

        with _status("evaluating"):
            report = evaluate_bundle(bundle, data or _default_data(), out, library_dir=library)
        typer.echo(
            f"n={report['n']} (unknown label: {report['n_unknown_label']}, rejected: {report['n_rejected']}) "
            f"accuracy {report['accuracy']:.3f} top-3 {report['top3']:.3f} macro-F1 {report['macro_f1']:.3f} "
            f"flagged unknown {report['flagged_unknown_fraction']:.3f}"
        )
        if out:
            typer.echo(f"wrote {out}")

    _guard(run)


@app.command()
def report(
    cv_json: list[Path] = typer.Option([], "--cv", help="trainer cv JSON outputs to chart."),
    bundle: Path = typer.Option(None, help="Bundle for attribution figures."),
    data: Path = typer.Option(None),
    out: Path = typer.Option(Path("results/figures")),
) -> None:
    """PNG plots: CV comparison with the paper, attribution over spectrum (paper Fig. 5)."""

    def run() -> None:
        from trainer.report import attribution_figures, cv_chart

        out.mkdir(parents=True, exist_ok=True)
        for p in cv_json:
            typer.echo(f"wrote {cv_chart(p, out / (p.stem + '.png'))}")
        if bundle is not None:
            for f in attribution_figures(bundle, data or _default_data(), out):
                typer.echo(f"wrote {f}")

    _guard(run)


def main() -> None:
    """Console entry point: every expected error of any package is one line and a non-zero exit."""
    from raman_core.cli_errors import run_cli

    run_cli(app, "trainer")


if __name__ == "__main__":  # python -m trainer.cli
    main()
