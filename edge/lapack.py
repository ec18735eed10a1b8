"""LAPACK's banded Cholesky solve (dpbsv) for the edge, preferably without importing SciPy.

NumPy's wheels carry an OpenBLAS build with the LAPACKE C interface, already loaded by
`import numpy`. Calling its `LAPACKE_dpbsv` through ctypes costs no extra memory or import
time, whereas `scipy.linalg` adds ~29 MB of RSS and ~0.3-0.4 s at start-up on the device
(bench/cold_start.py). Where that library or symbol is absent (a NumPy built against MKL or
a distribution's BLAS), `scipy.linalg.lapack.dpbsv` is used: the same LAPACK routine.
`RAMAN_EDGE_LAPACK=scipy` forces the SciPy path (the tests compare the two).
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: LAPACKE's matrix_layout value for column-major (Fortran) storage.
_COL_MAJOR = 102
#: (symbol, integer type): NumPy >= 2 wheels (scipy-openblas, ILP64), NumPy 1.x wheels
#: (openblas64_, ILP64), then 32-bit-integer builds.
_SYMBOLS = (
    ("scipy_LAPACKE_dpbsv64_", ctypes.c_int64),
    ("LAPACKE_dpbsv64_", ctypes.c_int64),
    ("scipy_LAPACKE_dpbsv", ctypes.c_int32),
    ("LAPACKE_dpbsv", ctypes.c_int32),
)

#: (ab, b) -> LAPACK info; ab (kd+1, n) lower band storage in Fortran order, b (n,); both
#: overwritten (ab by the Cholesky factor, b by the solution).
BandedSolve = Callable[[NDArray[np.float64], NDArray[np.float64]], int]


def _numpy_lapacke() -> BandedSolve | None:
    root = os.path.dirname(os.path.dirname(np.__file__))
    for path in sorted(
        glob.glob(os.path.join(root, "numpy.libs", "*openblas*"))
        + glob.glob(os.path.join(os.path.dirname(np.__file__), ".dylibs", "*openblas*"))
    ):
        try:
            lib = ctypes.CDLL(path)  # already mapped by numpy: dlopen returns that handle
        except OSError:
            continue
        for name, int_t in _SYMBOLS:
            fn = getattr(lib, name, None)
            if fn is None:
                continue
            fn.restype = int_t
            fn.argtypes = [
                ctypes.c_int,
                ctypes.c_char,
                int_t,
                int_t,
                int_t,
                ctypes.c_void_p,
                int_t,
                ctypes.c_void_p,
                int_t,
            ]

            def solve(ab: NDArray[np.float64], b: NDArray[np.float64], fn: Any = fn) -> int:
                kd1, n = ab.shape
                return int(fn(_COL_MAJOR, b"L", n, kd1 - 1, 1, ab.ctypes.data, kd1, b.ctypes.data, n))

            solve.__name__ = f"numpy_openblas:{name}"
            return solve
    return None


def _scipy_lapack() -> BandedSolve:
    from scipy.linalg.lapack import dpbsv

    def solve(ab: NDArray[np.float64], b: NDArray[np.float64]) -> int:
        _, x, info = dpbsv(ab, b, lower=1, overwrite_ab=1, overwrite_b=1)
        if x is not b:  # f2py copied (not contiguous / not float64): hand the result back
            b[...] = x
        return int(info)

    solve.__name__ = "scipy.linalg.lapack.dpbsv"
    return solve


@functools.lru_cache(maxsize=2)
def banded_solver(prefer: str | None = None) -> BandedSolve:
    """The symmetric positive-definite banded solver (lower storage) this process uses."""
    choice = prefer or os.environ.get("RAMAN_EDGE_LAPACK", "auto")
    if choice not in ("auto", "numpy", "scipy"):
        raise ValueError(f"RAMAN_EDGE_LAPACK must be auto, numpy or scipy, got {choice!r}")
    if choice != "scipy":
        found = _numpy_lapacke()
        if found is not None:
            return found
        if choice == "numpy":
            raise ValueError("NumPy's OpenBLAS LAPACKE_dpbsv was not found (RAMAN_EDGE_LAPACK=numpy)")
    return _scipy_lapack()
