"""Read one spectrum file for `edge classify`: RRUFF text, or two-column CSV/TSV/whitespace text.

Formats, detected from the content (not the file name):

- **RRUFF** (any line starting with `##`): parsed by `raman_core.rruff_format.parse_rruff_text`, the
  same parser the trainer uses, so a library file gives the model exactly what it saw in
  training. RRUFF "Processed" files are baseline-corrected; RAW files are not.
- **Delimited text**: `shift_cm1, intensity` per line, separated by commas, semicolons, tabs
  or spaces. `#` starts a comment line; one non-numeric header line before the data is
  allowed (`shift_cm1,intensity`). A comment `# corrected=true` / `# corrected=false` says
  whether the intensities are already baseline-corrected.

Raw or corrected decides the pipeline path (raw: despike + baseline removal + quality
gate; corrected: resample + normalise), so it must be right. Precedence: the caller's
explicit `corrected=` (a CLI flag) > the file's own statement (RRUFF data type, CSV comment)
> the default (a CSV without a statement is treated as raw instrument counts, the safe
side: baseline removal on an already-corrected spectrum costs little, skipping it on a
fluorescent raw one ruins the classification).

Every failure is a `SpectrumFileError` with the file, the line (when there is one), a short
reason key (`not_found`, `empty`, `bad_number`, ...) and a sentence, never a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge.errors import FileFormatError
from edge.preprocess import MIN_POINTS
from raman_core.rruff_format import RruffParseError, parse_rruff_text

FORMATS = ("rruff", "delimited")

_CORRECTED_COMMENT = re.compile(r"^#\s*corrected\s*[=:]\s*(?P<value>\S+)", re.IGNORECASE)
_SPLIT = re.compile(r"[,;\t ]+")
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


class SpectrumFileError(FileFormatError):
    """A spectrum file could not be read; `reason` is a short key, `line` is 1-based or None."""

    @property
    def short(self) -> str:
        """`reason: [line N: ]detail`, the form used in result `reason` fields."""
        at = f"line {self.line}: " if self.line else ""
        return f"{self.reason}: {at}{self.detail}"


@dataclass(frozen=True)
class SpectrumFile:
    path: Path
    format: str  # "rruff" or "delimited"
    shift_cm1: NDArray[np.float64]
    intensity: NDArray[np.float64]
    corrected: bool  # True: baseline-corrected (library style); False: raw counts
    corrected_source: str  # "flag", "file" or "default": who decided `corrected`
    label: str | None = None  # the mineral a RRUFF header names (for reference only)


def read_spectrum_file(path: str | Path, *, corrected: bool | None = None) -> SpectrumFile:
    """Read `path`; `corrected` None lets the file decide (see the module docstring)."""
    p = Path(path)
    name = str(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise SpectrumFileError(name, None, "not_found", "no such file") from None
    except IsADirectoryError:
        raise SpectrumFileError(name, None, "unreadable", "is a directory, not a spectrum file") from None
    except OSError as err:
        raise SpectrumFileError(name, None, "unreadable", f"cannot read ({err.strerror or err})") from None
    if not data.strip():
        raise SpectrumFileError(name, None, "empty", "the file is empty")
    if b"\x00" in data[:4096]:
        raise SpectrumFileError(name, None, "not_text", "binary data, not a text spectrum file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # old instrument exports; numbers are ASCII either way
    if any(line.lstrip().startswith("##") for line in text.splitlines()):
        return _read_rruff(p, name, data, corrected)
    return _read_delimited(p, name, text, corrected)


def _read_rruff(p: Path, name: str, data: bytes, corrected: bool | None) -> SpectrumFile:
    try:
        spec = parse_rruff_text(data, p.name)
    except RruffParseError as err:
        if err.reason != "no_label":
            raise SpectrumFileError(name, err.line, err.reason, err.detail) from None
        # A RRUFF-style file without ##NAMES= (an instrument export in that layout): the
        # label is only for reference, so read it with a placeholder name.
        spec = parse_rruff_text(b"##NAMES=?\n" + data, p.name)
        spec_label = None
    else:
        spec_label = spec.mineral
    file_corrected = spec.data_type != "RAW"
    return SpectrumFile(
        path=p,
        format="rruff",
        shift_cm1=spec.shift_cm1,
        intensity=spec.intensity,
        corrected=file_corrected if corrected is None else corrected,
        corrected_source="file" if corrected is None else "flag",
        label=spec_label,
    )


def _read_delimited(p: Path, name: str, text: str, corrected: bool | None) -> SpectrumFile:
    stated: bool | None = None
    xs: list[float] = []
    ys: list[float] = []
    header_seen = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            m = _CORRECTED_COMMENT.match(s)
            if m:
                value = m["value"].lower()
                if value not in _TRUE | _FALSE:
                    raise SpectrumFileError(
                        name, lineno, "bad_comment", f"'corrected=' must be true or false, not {m['value']!r}"
                    )
                stated = value in _TRUE
            continue
        fields = [f for f in _SPLIT.split(s) if f]
        try:
            values = [float(f) for f in fields]
        except ValueError:
            if not xs and not header_seen:
                header_seen = True  # one column-name line before the data
                continue
            raise SpectrumFileError(
                name, lineno, "bad_number", f"cannot read 'shift_cm1, intensity' from {_clip(s)!r}"
            ) from None
        if len(values) != 2:
            raise SpectrumFileError(
                name,
                lineno,
                "bad_columns",
                f"expected 2 columns (shift_cm1, intensity), found {len(values)} in {_clip(s)!r}",
            )
        if not all(np.isfinite(values)):
            raise SpectrumFileError(name, lineno, "non_finite", f"NaN or infinite value in {_clip(s)!r}")
        xs.append(values[0])
        ys.append(values[1])
    if not xs:
        raise SpectrumFileError(name, None, "no_data", "no 'shift_cm1, intensity' data lines found")
    x = np.asarray(xs, dtype=np.float64)
    if np.unique(x).size < MIN_POINTS:
        raise SpectrumFileError(
            name, None, "too_short", f"only {np.unique(x).size} distinct shifts (need {MIN_POINTS})"
        )
    if corrected is not None:
        decided, source = corrected, "flag"
    elif stated is not None:
        decided, source = stated, "file"
    else:
        decided, source = False, "default"
    return SpectrumFile(
        path=p,
        format="delimited",
        shift_cm1=x,
        intensity=np.asarray(ys, dtype=np.float64),
        corrected=decided,
        corrected_source=source,
    )


def _clip(s: str, n: int = 60) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."
