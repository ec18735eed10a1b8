"""`edge library add|list|remove`: teach a mineral from spectrum files, without retraining.

A reference is read with the same file readers as `edge classify`, preprocessed with the
bundle's spec and stored (with its SHA-256, the model's SHA-256 and the source file name)
in a library directory *beside* the bundle, never inside it: the bundle stays byte-identical
to what `trainer export` hashed. Default directory: `<bundle>-library` next to the bundle.
`edge classify --library DIR` uses bundle library + these references.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from edge.bundle import Bundle, load_bundle
from edge.classifier import Classifier
from edge.errors import EdgeError, UsageError
from edge.library import LibraryError, ReferenceLibrary, build_library, load_library, save_library
from edge.preprocess import preprocess
from edge.spectrum_files import read_spectrum_file

library_app = typer.Typer(help="Reference spectra added on this device (no retraining).", no_args_is_help=True)


def default_library_dir(bundle: Bundle) -> Path:
    return bundle.path.resolve().parent / f"{bundle.path.resolve().name}-library"


def resolve_dir(bundle: Bundle, directory: Path | None) -> Path:
    d = (directory or default_library_dir(bundle)).resolve()
    if d == bundle.path.resolve() or bundle.path.resolve() in d.parents:
        raise UsageError(f"{d}: the library directory must be beside the bundle, not inside {bundle.path}")
    return d


def open_added(bundle: Bundle, directory: Path) -> ReferenceLibrary | None:
    """The added library in `directory` (None if it holds none yet); LibraryError if unsound."""
    if not directory.exists() or not any(directory.iterdir()):
        return None  # a new, empty directory: nothing added yet (anything else must be a library)
    return load_library(directory, grid_n=bundle.spec.grid_n, model_sha256=bundle.sha256)


def add_references(
    bundle: Bundle, directory: Path, files: list[Path], mineral: str, *, classifier: Classifier | None = None
) -> ReferenceLibrary:
    """Read, preprocess and embed `files` as references of `mineral`; save the library in `directory`.

    The embedding is the bundle model's own (edge.classifier), so an added reference takes part
    in the embedding search like the bundle's references; a model without an embedding
    output stores none. `classifier` reuses an open interpreter (the daemon, benchmarks)."""
    rows, ids = [], []
    for f in files:
        sf = read_spectrum_file(f)
        rows.append(preprocess(sf.shift_cm1, sf.intensity, bundle.spec, corrected=sf.corrected).values)
        ids.append(f"{mineral}:{sf.path.name}")
    clf = classifier or Classifier(bundle)
    embs = [clf.classify(r, k=1).embedding for r in rows]
    emb = np.stack(embs) if embs and all(e is not None for e in embs) else None
    new = build_library((mineral,), np.zeros(len(rows)), ids, np.zeros(len(rows)), np.stack(rows), emb)
    old = open_added(bundle, directory)
    lib = new if old is None else old.extended(new)
    save_library(lib, directory, model_sha256=bundle.sha256)
    return lib


def _run(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except (EdgeError, OSError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


LibOpt = typer.Option(None, "--library", help="Library directory (default: <bundle>-library beside it).")
ModelOpt = typer.Option(None, "--model", help="Model bundle directory (default: shipped).")


@library_app.command("add")
def add(
    files: list[Path] = typer.Argument(..., help="Reference spectrum files (RRUFF or CSV)."),
    mineral: str = typer.Option(..., "--mineral", help="Mineral name of these references."),
    library: Path | None = LibOpt,
    model: Path | None = ModelOpt,
) -> None:
    """Add reference spectra of MINERAL to the library directory."""

    def go() -> None:
        b = load_bundle(model)
        d = resolve_dir(b, library)
        lib = add_references(b, d, files, mineral)
        typer.echo(f"added {len(files)} reference(s) of {mineral} to {d} ({len(lib)} in total)")

    _run(go)


@library_app.command("list")
def list_(library: Path | None = LibOpt, model: Path | None = ModelOpt) -> None:
    """List the added minerals and their references."""

    def go() -> None:
        b = load_bundle(model)
        d = resolve_dir(b, library)
        lib = open_added(b, d)
        if lib is None or len(lib) == 0:
            typer.echo(f"{d}: no added references")
            return
        for c, m in enumerate(lib.minerals):
            ids = [lib.rruff_ids[i] for i in np.flatnonzero(lib.class_idx == c)]
            if ids:
                typer.echo(f"{m}\t{len(ids)}\t{', '.join(ids)}")

    _run(go)


@library_app.command("remove")
def remove(
    name: str = typer.Argument(..., help="Mineral to remove."),
    library: Path | None = LibOpt,
    model: Path | None = ModelOpt,
) -> None:
    """Remove every added reference of NAME."""

    def go() -> None:
        b = load_bundle(model)
        d = resolve_dir(b, library)
        lib = open_added(b, d)
        if lib is None:
            raise LibraryError(f"{d}: no added references")
        save_library(lib.without(name), d, model_sha256=b.sha256)
        typer.echo(f"removed {name} from {d}")

    _run(go)
