"""`edge library add/list/remove` and `edge classify --library` on real RRUFF files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def calcite_files(tmp_path_factory) -> list[Path]:  # type: ignore[no-untyped-def]
    from rruff_data import require_rruff

    from trainer.rruff import iter_files, parse_filename

    out = tmp_path_factory.mktemp("rruff")
    files: list[Path] = []

    def wanted(name: str) -> bool:
        info = parse_filename(name)
        return info is not None and info.mineral == "Calcite" and info.data_type == "Processed"

    for name, data in iter_files(require_rruff(), wanted):
        if len(files) < 2:
            p = out / Path(name).name
            p.write_bytes(data)
            files.append(p)
    if len(files) < 2:
        pytest.skip("no calcite files in the shared RRUFF copy")
    return files


def test_add_list_classify_remove(calcite_files: list[Path], tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    r = runner.invoke(app, ["library", "add", str(calcite_files[0]), "--mineral", "Newcalcite", "--library", str(lib)])
    assert r.exit_code == 0, r.output
    assert (lib / "library.json").is_file()
    r = runner.invoke(app, ["library", "list", "--library", str(lib)])
    assert "Newcalcite\t1" in r.output
    r = runner.invoke(app, ["classify", "--json", "--library", str(lib), str(calcite_files[1])])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output.splitlines()[0])
    names = [t["mineral"] for t in rec["top"]]
    # The added reference takes part: it is named among the candidates. A bundle that already
    # knows calcite (its own library and CNN) may rank its Calcite first: the same mineral.
    assert "Newcalcite" in names and names[0] in ("Newcalcite", "Calcite")
    assert rec["match"]["mineral"] in ("Newcalcite", "Calcite")
    r = runner.invoke(app, ["library", "remove", "Newcalcite", "--library", str(lib)])
    assert r.exit_code == 0, r.output


def test_damaged_or_misplaced_library_is_refused(calcite_files: list[Path], tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    runner.invoke(app, ["library", "add", str(calcite_files[0]), "--mineral", "X", "--library", str(lib)])
    (lib / "library.npz").write_bytes(b"garbage")
    r = runner.invoke(app, ["classify", "--library", str(lib), str(calcite_files[1])])
    assert r.exit_code == 1 and "damaged" in r.output
    from edge.bundle import DEFAULT_BUNDLE

    r = runner.invoke(app, ["library", "list", "--library", str(DEFAULT_BUNDLE / "added")])
    assert r.exit_code != 0 and "beside the bundle" in r.output
