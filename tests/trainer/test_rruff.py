"""RRUFF reading: real files from the shared copy, and crafted bad ones."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from trainer.rruff import (
    RamanSpectrum,
    RruffParseError,
    load_rruff,
    parse_filename,
    parse_rruff_text,
    select,
)

GOOD = (
    "##NAMES=Quartz\n##RRUFFID=R040031\n##IDEAL CHEMISTRY=SiO_2_\n##LOCALITY=Somewhere\n"
    "##STATUS=The identification of this mineral has been confirmed by X-ray diffraction.\n"
    "100.0, 1.0\n101.5, 2.0\n" + "".join(f"{102 + i}, {i % 7}\n" for i in range(30)) + "##END=\n\n"
)


def test_real_files_parse_with_header_and_filename(tiny_spectra: list[RamanSpectrum]) -> None:
    q = next(s for s in tiny_spectra if s.mineral == "Quartz")
    assert q.rruff_id.startswith(("R", "X"))
    assert q.laser_nm in (514, 532, 780, 785)
    assert q.data_type == "Processed" and q.orientation == "unoriented"
    assert q.shift_cm1.size > 500 and np.all(np.isfinite(q.intensity))
    assert "LOCALITY" in q.header


def test_filename_parsing() -> None:
    info = parse_filename("AgarditeY__R060227__Raman__785__0__unoriented__Raman_Data_RAW__33408.txt")
    assert info is not None
    assert (info.mineral, info.sample, info.laser_nm, info.data_type) == ("AgarditeY", "R060227", 785, "RAW")
    assert parse_filename("notes.txt") is None


@pytest.mark.parametrize(
    "text",
    [
        "\ufeff" + GOOD,  # BOM
        GOOD.replace("\n", "\r\n"),  # CRLF
        GOOD.replace("##END=\n", ""),  # missing END
        GOOD.replace("100.0, 1.0\n", "\n\n100.0, 1.0\n\n"),  # blank lines
        GOOD + "some trailing junk\n",  # junk after END
        GOOD.replace("##END=\n", "this is junk\n"),  # junk instead of END
        GOOD.replace("101.5, 2.0\n", "101.5, 2.0\n100.0, 3.0\n"),  # duplicated, non-monotonic x
        GOOD.replace("##STATUS=The", "##STATUS=The\nidentification continues"),  # multi-line header
    ],
)
def test_tolerated_oddities(text: str) -> None:
    s = parse_rruff_text(text.encode(), "Quartz__R040031__Raman__532__0__unoriented__Raman_Data_Processed__1.txt")
    assert s.mineral == "Quartz" and s.rruff_id == "R040031" and s.xray_confirmed
    assert s.shift_cm1.size >= 31


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("##NAMES=Quartz\n##END=\n", "no_data"),
        (GOOD.replace("101.5, 2.0", "101.5, nan"), "non_finite"),
        ("##NAMES=Quartz\n1, 2\n3, 4\n##END=\n", "too_short"),
        (GOOD.replace("##NAMES=Quartz\n", ""), "no_label"),
    ],
)
def test_unreadable_files_give_file_line_reason(text: str, reason: str) -> None:
    with pytest.raises(RruffParseError) as info:
        parse_rruff_text(text.encode(), "bad.txt")
    assert info.value.reason == reason and "bad.txt" in str(info.value)


def test_bad_number_diagnostic_names_the_line() -> None:
    text = GOOD.replace("101.5, 2.0", "101.5, 2.0.0")
    with pytest.raises(RruffParseError) as info:
        parse_rruff_text(text.encode(), "x.txt")
    assert info.value.reason == "bad_number" and info.value.line == 7


def test_header_id_wins_over_filename() -> None:
    s = parse_rruff_text(GOOD.encode(), "Quartz__R999999__Raman__532__0__unoriented__Raman_Data_Processed__1.txt")
    assert s.rruff_id == "R040031"


def test_load_from_folder_and_zip_counts_skips(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    (folder / "sub").mkdir(parents=True)
    (folder / "Quartz__R1__Raman__532__0__unoriented__Raman_Data_Processed__1.txt").write_text(GOOD)
    (folder / "sub" / "Quartz__R2__Raman__785__0__unoriented__Raman_Data_Processed__2.txt").write_text(
        GOOD.replace("R040031", "R2")
    )
    (folder / "empty.txt").write_text("##NAMES=X\n")
    spectra, report = load_rruff(folder)
    assert (report.n_files, report.n_kept, report.n_classes) == (3, 2, 1)
    assert report.skipped == {"no_data": 1}
    assert "skipped: no_data 1" in report.summary()
    z = tmp_path / "r.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in folder.rglob("*.txt"):
            zf.write(p, f"excellent_unoriented/{p.name}")
    spectra_z, report_z = load_rruff(z)
    assert report_z.n_kept == 2 and {s.rruff_id for s in spectra_z} == {"R040031", "R2"}


def test_selections_drop_duplicates_raw_and_unconfirmed(tmp_path: Path) -> None:
    def spec(name: str, rid: str, status: str = "confirmed by X-ray diffraction", kind: str = "Processed") -> bytes:
        return GOOD.replace("Quartz", name).replace("R040031", rid).replace(
            "The identification of this mineral has been confirmed by X-ray diffraction.", status
        ).encode(), f"{name}__{rid}__Raman__532__0__unoriented__Raman_Data_{kind}__1.txt"

    items = [
        spec("A", "R1"),
        spec("A", "R2"),
        spec("A", "R2"),  # R2 twice: byte-identical duplicate
        spec("B", "R3"),
        spec("B", "R4", status="not yet confirmed"),
        spec("C", "R5"),
        spec("C", "R6", kind="RAW"),
    ]
    spectra = [parse_rruff_text(b, n) for b, n in items]
    chosen, counts = select(spectra, "paper")
    assert {s.rruff_id for s in chosen} == {"R1", "R2"}
    assert counts.n_duplicates_dropped == 1 and counts.n_raw_dropped == 1 and counts.n_unconfirmed_dropped == 1
    assert counts.n_classes == 1


def test_shared_copy_selection_counts(rruff_path: Path) -> None:
    """The counts quoted in the README (docs/data.md) for our copy."""
    spectra, report = load_rruff(rruff_path)
    assert report.n_files == 5029 and not report.skipped
    paper, pc = select(spectra, "paper")
    min8, mc = select(spectra, "min8")
    assert (pc.n_spectra, pc.n_classes) == (4133, 1203)
    assert (mc.n_spectra, mc.n_classes) == (807, 59)
    assert pc.n_duplicates_dropped == 4 and pc.n_unlabelled_dropped == 14
