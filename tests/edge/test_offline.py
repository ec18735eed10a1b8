"""`edge classify` on real RRUFF files from the shared zip, CSV input and broken files.

The shipped bundle is provisional: expected minerals are checked against `bundle.labels`
rather than assumed, so a bigger model with the same format passes the same tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rruff_data import require_rruff
from typer.testing import CliRunner

from edge.bundle import DEFAULT_BUNDLE, load_bundle
from edge.cli import app
from edge.config import EdgeConfig
from edge.errors import BundleError
from edge.offline import classify
from edge.spectrum_files import SpectrumFileError, read_spectrum_file
from raman_core.rruff_format import iter_files, parse_filename

MINERALS = ("Quartz", "Calcite")
PER_MINERAL = 3
RECORD_KEYS = {"file", "status", "reason", "top", "unknown", "match", "mixture", "peaks", "quality", "corrected"}

runner = CliRunner()


@pytest.fixture(scope="module")
def labels() -> tuple[str, ...]:
    return load_bundle(DEFAULT_BUNDLE).labels


@pytest.fixture(scope="module")
def rruff_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """A few real RRUFF Processed files per mineral, written out byte-for-byte."""
    rruff = require_rruff()
    out = tmp_path_factory.mktemp("rruff")
    found: dict[str, list[Path]] = {m: [] for m in MINERALS}

    def wanted(name: str) -> bool:
        info = parse_filename(name)
        return info is not None and info.mineral in MINERALS and info.data_type == "Processed"

    for name, data in iter_files(rruff, wanted):
        info = parse_filename(name)
        assert info is not None
        if len(found[info.mineral]) < PER_MINERAL:
            p = out / Path(name).name
            p.write_bytes(data)
            found[info.mineral].append(p)
    return found


def quartz_csv(path: Path, *, comment: str = "", header: bool = True, sep: str = ",") -> Path:
    """A raw, quartz-like instrument spectrum: bands on a sloping fluorescence background."""
    x = np.arange(100.0, 1800.0, 1.5)
    rng = np.random.default_rng(0)
    y = (
        2000 * np.exp(-0.5 * ((x - 464) / 4) ** 2)
        + 600 * np.exp(-0.5 * ((x - 206) / 6) ** 2)
        + 500
        + 0.3 * x
        + rng.normal(0, 8, x.size)
    )
    lines = [comment] if comment else []
    if header:
        lines.append(f"shift_cm1{sep}intensity")
    lines += [f"{a:.2f}{sep}{b:.2f}" for a, b in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_json(args: list[str]) -> tuple[int, list[dict[str, Any]], str]:
    res = runner.invoke(app, ["classify", "--json", *args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    records = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return res.exit_code, records, res.stderr


def test_real_rruff_files_top1(rruff_files: dict[str, list[Path]], labels: tuple[str, ...]) -> None:
    files = [p for m in MINERALS for p in rruff_files[m]]
    rc, records, _ = run_json([str(p) for p in files])
    assert rc == 0
    assert [r["file"] for r in records] == [str(p) for p in files]
    for mineral in MINERALS:
        recs = [r for r in records if Path(str(r["file"])).name.startswith(mineral + "__")]
        assert len(recs) == len(rruff_files[mineral]) > 0
        for r in recs:
            assert r["status"] == "ok", r
            assert r["corrected"] is True  # RRUFF Processed
            if mineral in labels:
                top = r["top"]
                assert isinstance(top, list)
                assert top[0]["mineral"] == mineral, r


def test_json_lines_schema(rruff_files: dict[str, list[Path]], tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    rc, records, _ = run_json([str(rruff_files["Quartz"][0]), str(missing)])
    assert rc == 1
    ok, bad = records
    for r in records:
        assert set(r) == RECORD_KEYS
    assert ok["status"] == "ok" and ok["reason"] is None
    assert isinstance(ok["unknown"], bool)
    top = ok["top"]
    assert isinstance(top, list) and 1 <= len(top) <= 3
    ps = [c["p"] for c in top]
    assert all(set(c) == {"mineral", "p"} and 0.0 <= c["p"] <= 1.0 for c in top)
    assert ps == sorted(ps, reverse=True)
    peaks = ok["peaks"]
    assert isinstance(peaks, list) and peaks
    assert all(set(p) == {"shift_cm1", "relevance", "intensity"} for p in peaks)
    assert set(ok["quality"]) == {"snr", "coverage", "n_spikes", "saturated", "fluorescence_ratio"}
    assert bad["status"] == "error" and bad["top"] == [] and "not_found" in str(bad["reason"])


def test_csv_raw_and_corrected(tmp_path: Path, labels: tuple[str, ...]) -> None:
    raw = quartz_csv(tmp_path / "raw.csv")
    stated = quartz_csv(tmp_path / "stated.tsv", comment="# corrected=false", header=False, sep="\t")
    assert read_spectrum_file(raw).corrected is False  # CSV default: raw counts
    assert read_spectrum_file(raw).corrected_source == "default"
    assert read_spectrum_file(stated).corrected_source == "file"
    assert read_spectrum_file(raw, corrected=True).corrected_source == "flag"
    rc, records, _ = run_json([str(raw), str(stated)])
    assert rc == 0
    for r in records:
        assert r["status"] == "ok", r
        assert r["corrected"] is False
        if "Quartz" in labels:
            assert r["top"][0]["mineral"] == "Quartz"
        assert any(abs(p["shift_cm1"] - 464) <= 3 for p in r["peaks"])


@pytest.mark.parametrize(
    ("content", "reason", "line"),
    [
        ("", "empty", None),
        ("shift,intensity\n100,1\n101,nan\n", "non_finite", 3),
        ("100,1\n101,2\nabc,3\n", "bad_number", 3),
        ("100,1,5\n", "bad_columns", 1),
        ("# corrected=maybe\n100,1\n", "bad_comment", 1),
        ("100,1\n101,2\n", "too_short", None),
        ("##NAMES=Quartz\n##END=\n", "no_data", None),
    ],
)
def test_unreadable_files(tmp_path: Path, content: str, reason: str, line: int | None) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(SpectrumFileError) as exc:
        read_spectrum_file(p)
    assert exc.value.reason == reason
    assert exc.value.line == line
    assert str(p) in str(exc.value)


def test_bad_files_flagged_processing_continues(rruff_files: dict[str, list[Path]], tmp_path: Path) -> None:
    nan = tmp_path / "nan.csv"
    nan.write_text("".join(f"{100 + i},{'nan' if i == 20 else i}\n" for i in range(40)))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    good = rruff_files["Calcite"][0]
    res = runner.invoke(app, ["classify", str(nan), str(empty), str(tmp_path / "nope.csv"), str(good)])
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 4
    assert "error" in lines[0] and "non_finite" in lines[0] and "line 21" in lines[0]
    assert "error" in lines[1] and "empty" in lines[1]
    assert "error" in lines[2] and "not_found" in lines[2]
    assert lines[3].split()[:2] == [str(good), "ok"]
    assert "3 unreadable" in res.stderr


def test_rejected_is_not_unreadable(tmp_path: Path) -> None:
    """A file that reads fine but fails the quality gate is a 'rejected' answer, exit 0."""
    far = tmp_path / "far.csv"  # entirely outside the model grid
    far.write_text("# corrected=true\n" + "".join(f"{3000 + i},{i % 7}\n" for i in range(50)))
    rc, records, _ = run_json([str(far)])
    assert rc == 0
    assert records[0]["status"] == "rejected" and records[0]["reason"]


def test_tampered_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    labels = bundle / "labels.json"
    data = bytearray(labels.read_bytes())
    data[-2] ^= 0x01
    labels.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="SHA-256") as exc:
        classify(EdgeConfig(model_dir=bundle), [], as_json=True)
    assert str(labels) in str(exc.value)
    res = runner.invoke(app, ["classify", "--model", str(bundle), str(tmp_path / "x.csv")])
    assert res.exit_code == 1
    assert "labels.json" in res.stderr and "SHA-256" in res.stderr
    assert "Traceback" not in res.output


def test_missing_bundle(tmp_path: Path) -> None:
    res = runner.invoke(app, ["classify", "--model", str(tmp_path / "nowhere"), "x.csv"])
    assert res.exit_code == 1
    assert res.stderr.strip() == f"error: model bundle {tmp_path / 'nowhere'} not found"
