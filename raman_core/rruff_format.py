"""The RRUFF spectrum file format, and walking a RRUFF folder or zip.

Light on purpose (stdlib + NumPy only): the trainer, `edge classify` and the `firmware_bridge`
emulator all read RRUFF files, and the device side may not pull in TensorFlow.

File format: `##KEY=value` header lines, then `x, y` lines, then `##END=`. Newer rruff.net
files let header values run over several lines, so any non-numeric line outside the data
block is treated as header continuation, never as an error.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from raman_core.errors import DataError, DataNotFoundError, FileFormatError

#: What counts as "identity confirmed by X-ray diffraction" (paper's filter): the
#: `##STATUS=` text contains "x-ray diffraction" (case-insensitive). That matches
#: "confirmed by X-ray diffraction", "single-crystal X-ray diffraction", "made only by X-ray
#: diffraction", and not "not yet confirmed", "only by chemical analysis", "Raman".
XRAY_PATTERN = re.compile(r"x-ray\s+diffraction", re.IGNORECASE)

_FILENAME = re.compile(
    r"^(?P<mineral>[^_]+)__(?P<sample>[^_]+(?:_[^_]+)*?)__Raman__(?P<laser>\d+)__"
    r"(?P<orient_num>[^_]*)__(?P<orientation>[^_]*)__Raman_Data_(?P<kind>Processed|RAW)"
    r"__(?P<num>[^.]*)\.txt$",
    re.IGNORECASE,
)
_NUMBER_LINE = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*[,;\t ]\s*\S")


class RruffParseError(FileFormatError):
    """One RRUFF file could not be read; carries file, line and a reason key."""


@dataclass(frozen=True)
class FileNameInfo:
    mineral: str
    sample: str
    laser_nm: int | None
    orientation: str
    data_type: str  # "Processed" or "RAW"


@dataclass(frozen=True)
class RamanSpectrum:
    """One RRUFF spectrum with the header facts the selections need."""

    file: str
    mineral: str  # from ##NAMES= (the label), falling back to the file name
    rruff_id: str  # from ##RRUFFID= (trusted over the file name)
    laser_nm: int | None
    data_type: str
    orientation: str
    status: str
    xray_confirmed: bool
    digest: str  # SHA-256 of the file bytes: byte-identical duplicates share it
    shift_cm1: NDArray[np.float64]
    intensity: NDArray[np.float64]
    header: dict[str, str] = field(default_factory=dict, compare=False)


def parse_filename(name: str) -> FileNameInfo | None:
    """Parse `Mineral__RRUFFID__Raman__532__0__unoriented__Raman_Data_Processed__N.txt`."""
    m = _FILENAME.match(os.path.basename(name))
    if not m:
        return None
    return FileNameInfo(
        mineral=m["mineral"],
        sample=m["sample"],
        laser_nm=int(m["laser"]),
        orientation=m["orientation"],
        data_type="RAW" if m["kind"].upper() == "RAW" else "Processed",
    )


def parse_rruff_text(data: bytes | str, file: str = "<memory>") -> RamanSpectrum:
    """Parse one RRUFF text file; raises `RruffParseError` with file, line and reason."""
    raw = data if isinstance(data, bytes) else data.encode("utf-8")
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    fast = _parse_fast(text)
    if fast is not None:
        header, x_arr, y_arr = fast
        return _build(file, digest, header, x_arr, y_arr)
    header = {}
    xs: list[float] = []
    ys: list[float] = []
    last_key: str | None = None
    ended = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("##"):
            key, _, value = s[2:].partition("=")
            key = key.strip().upper()
            if key == "END":
                ended = True
                break
            header[key] = value.strip()
            last_key = key
            continue
        if _NUMBER_LINE.match(s):
            fields = re.split(r"[,;\t ]+", s)
            try:
                x, y = float(fields[0]), float(fields[1])
            except (ValueError, IndexError):
                raise RruffParseError(file, lineno, "bad_number", f"cannot read x, y from {s!r}") from None
            xs.append(x)
            ys.append(y)
            continue
        if xs:
            # Text after data without ##END=: trailing junk; stop reading data here.
            break
        if last_key is not None:  # multi-line header value (rruff.net style)
            header[last_key] = f"{header[last_key]} {s}"
    _ = ended  # a missing ##END= is tolerated: many exports omit it
    return _build(file, digest, header, np.asarray(xs, np.float64), np.asarray(ys, np.float64))


def _parse_fast(text: str) -> tuple[dict[str, str], np.ndarray, np.ndarray] | None:
    """The common, well-formed layout in one vectorised pass; None means "use the slow path".

    Well-formed: header lines, then one contiguous block of `x, y` lines, then ##END= or EOF.
    Anything else (junk, odd field counts) goes through the line-by-line parser, which
    gives the precise file:line diagnostic.
    """
    lines = text.splitlines()
    header: dict[str, str] = {}
    i = 0
    last_key: str | None = None
    while i < len(lines):
        s = lines[i].strip()
        if s.startswith("##"):
            key, _, value = s[2:].partition("=")
            last_key = key.strip().upper()
            header[last_key] = value.strip()
        elif s and _NUMBER_LINE.match(s):
            break
        elif s and last_key is not None:
            header[last_key] = f"{header[last_key]} {s}"
        i += 1
    start = i
    while i < len(lines) and not lines[i].lstrip().startswith("##"):
        i += 1
    block = " ".join(lines[start:i]).replace(",", " ").replace(";", " ")
    try:
        values = np.array(block.split(), dtype=np.float64)
    except ValueError:
        return None
    if values.size == 0 or values.size % 2:
        return None
    if "END" in header:
        header.pop("END")
    pairs = values.reshape(-1, 2)
    return header, pairs[:, 0].copy(), pairs[:, 1].copy()


def _build(file: str, digest: str, header: dict[str, str], x_arr: np.ndarray, y_arr: np.ndarray) -> RamanSpectrum:
    if x_arr.size == 0:
        raise RruffParseError(file, None, "no_data", "no x, y data lines found")
    finite = np.isfinite(x_arr) & np.isfinite(y_arr)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise RruffParseError(file, None, "non_finite", f"data point {bad + 1} is NaN or inf")
    if np.unique(x_arr).size < 16:
        raise RruffParseError(file, None, "too_short", f"only {np.unique(x_arr).size} distinct x")
    info = parse_filename(file)
    names = header.get("NAMES", "").strip()
    mineral = names.split(",")[0].strip() if names else (info.mineral if info else "")
    if not mineral:
        raise RruffParseError(file, None, "no_label", "no ##NAMES= header and no parsable file name")
    rruff_id = header.get("RRUFFID", "").strip() or (info.sample if info else "")
    status = header.get("STATUS", "")
    laser = info.laser_nm if info else None
    if "RAMAN WAVELENGTH" in header:
        m = re.search(r"\d+", header["RAMAN WAVELENGTH"])
        laser = int(m.group()) if m else laser
    return RamanSpectrum(
        file=os.path.basename(file),
        mineral=mineral,
        rruff_id=rruff_id,
        laser_nm=laser,
        data_type=info.data_type if info else _data_type_from_header(header),
        orientation=info.orientation if info else header.get("ORIENTATION", ""),
        status=status,
        xray_confirmed=bool(XRAY_PATTERN.search(status)),
        digest=digest,
        shift_cm1=x_arr,
        intensity=y_arr,
        header=header,
    )


def _data_type_from_header(header: dict[str, str]) -> str:
    return "RAW" if "RAW" in header.get("FILETYPE", "").upper() else "Processed"


def iter_files(
    path: str | os.PathLike[str], name_filter: Callable[[str], bool] | None = None
) -> Iterator[tuple[str, bytes]]:
    """Yield (name, bytes) for every .txt in a folder tree or in .zip files, sorted by name.

    A folder may itself hold zips (the shared copy does); they are read without unpacking.
    """
    p = Path(path)
    if not p.exists():
        raise DataNotFoundError(f"RRUFF path {p} does not exist (a RRUFF folder, .zip or .txt; see docs/data.md)")
    if p.is_file():
        if not zipfile.is_zipfile(p):
            if p.suffix.lower() == ".txt":
                yield p.name, p.read_bytes()
                return
            raise DataError(f"{p} is neither a .zip nor a .txt RRUFF file")
        with zipfile.ZipFile(p) as zf:
            for name in sorted(zf.namelist()):
                if name.lower().endswith(".txt") and (name_filter is None or name_filter(name)):
                    yield name, zf.read(name)
        return
    for child in sorted(p.rglob("*")):
        if child.is_file() and child.suffix.lower() == ".txt":
            if name_filter is None or name_filter(child.name):
                yield str(child.relative_to(p)), child.read_bytes()
        elif child.is_file() and child.suffix.lower() == ".zip":
            yield from iter_files(child, name_filter)


def mineral_key(name: str) -> str:
    """A mineral name reduced to how RRUFF file names spell it, case-folded: "Agardite-(Y)" ->
    "agarditey". Both `##NAMES=` labels and file-name fields compare equal under it, so a
    name filter can run on file names before any file is decompressed."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def mineral_name_filter(minerals: set[str] | frozenset[str] | None) -> Callable[[str], bool] | None:
    """A file-name filter for `iter_files` keeping RRUFF files of these minerals (None: all)."""
    if minerals is None:
        return None
    wanted = {mineral_key(m) for m in minerals if m.strip()}

    def keep(name: str) -> bool:
        info = parse_filename(name)
        return info is not None and mineral_key(info.mineral) in wanted

    return keep


def default_rruff_path() -> Path:
    """Where the full RRUFF copy is looked for: $RAMAN_RRUFF, else `../shared/data/rruff` beside
    a checkout. Only the trainer, the tests and the benchmarks need it; the edge and the
    emulator run on what ships in the packages."""
    env = os.environ.get("RAMAN_RRUFF")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "rruff"
