"""Align a spectrum to its best library match before the CNN sees it (issue 12).

A Raman-shift axis error moves every band by the same amount. The library search is shift
tolerant (edge.library: best correlation over +-20 cm-1 of lags) but the CNN is not: on the
shipped bundle's held-out specimens its top-1 fell from 0.734 clean to 0.617 at 10 cm-1 and
0.430 at 20 cm-1. The best-matching reference says by how much the axis is off (its lag), so
the query is moved by that lag and the CNN and the embedding are run on the moved spectrum.

Only lags of at least `min_lag_pts` move anything: on clean spectra a lag of a point or two is
the reference's own calibration scatter, and on a spectrum whose best match is the wrong
mineral the lag is noise. Fitted with it in `trainer export` (trainer/hybrid.py), so the
fusion weights and temperature see the CNN as the edge runs it.

A moved spectrum can also be scored twice (fusion `cnn_views` "both"): the CNN and the
embedding search run on the moved and on the unmoved spectrum, and each class keeps the better
of its two scores (`better_view`). Moving by the best match's lag helps when the axis is off
and costs when that match is the wrong mineral, which then pulls the CNN its way; keeping both
views lets a class the unmoved spectrum supports keep its score. On the early-stopping
specimens of 8 grouped-by-specimen CV training folds (~1,700 spectra, never their test folds;
fusion fitted on one half of the specimens and scored on the other) it gave 0.796 / 0.778 /
0.750 at 0 / 10 / 20 cm-1 where the moved view alone gave 0.784 / 0.775 / 0.756 and the
unmoved view alone 0.808 / 0.735 / 0.568 (shift robustness given up).

Pure NumPy on arrays; no state.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def move_by(values: NDArray[np.floating], lag_pts: int) -> NDArray[np.float32]:
    """`values` moved by `lag_pts` grid points (positive: to higher shift), zero filled, as the
    library's lag convention (edge.library._lagged), re-normalised to a maximum of 1 (the model
    input's normalisation) when something is left."""
    v = np.asarray(values, np.float32)
    out = np.zeros_like(v)
    if lag_pts >= 0:
        out[lag_pts:] = v[: v.size - lag_pts]
    else:
        out[:lag_pts] = v[-lag_pts:]
    m = float(out.max()) if out.size else 0.0
    return out / m if m > 0 else out


def match_lag(sim: NDArray[np.floating], lag: NDArray[np.integer]) -> int:
    """The lag of the best-matching reference (0 for an empty library)."""
    if sim.size == 0:
        return 0
    return int(lag[int(np.argmax(sim))])


def aligned(
    values: NDArray[np.floating], sim: NDArray[np.floating], lag: NDArray[np.integer], min_lag_pts: int
) -> tuple[NDArray[np.float32], int]:
    """(model input, lag applied in points): moved by the best match's lag when |lag| >=
    `min_lag_pts` > 0, else the input itself and 0."""
    best = match_lag(sim, lag)
    if min_lag_pts <= 0 or abs(best) < min_lag_pts:
        return np.asarray(values, np.float32), 0
    return move_by(values, best), best


def calibrated_view(
    sim: NDArray[np.floating], lag: NDArray[np.integer], sim0: NDArray[np.floating], gap: float
) -> tuple[NDArray[np.floating], NDArray[np.integer]]:
    """(similarities, lags) the fusion works with (edge.library.ReferenceLibrary.search).

    When the best zero-lag similarity is within `gap` of the best one over all lags, the axis
    looks calibrated: the zero-lag similarities, and no lag (so nothing is moved). A lag
    window also lets a wrong reference slide onto the query, and moving the query onto a wrong
    best match pulls the CNN its way; both cost accuracy on a calibrated axis, which `edge
    calibrate` keeps. Otherwise the shift-tolerant similarities and their lags. `gap` < 0: never
    (bundles fitted before it). Chosen in `trainer export` (trainer/hybrid.py)."""
    if gap < 0 or sim.size == 0 or float(np.max(sim) - np.max(sim0)) > gap:
        return sim, lag
    return sim0, np.zeros_like(lag)


#: What the CNN and the embedding search score when the spectrum was moved (edge.fusion).
CNN_VIEWS = ("moved", "both")


def better_view(moved: NDArray[np.floating], unmoved: NDArray[np.floating]) -> NDArray[np.float64]:
    """Per class, the better of the scores of the moved and of the unmoved spectrum (log
    probabilities or best embedding similarities; -inf where a class has neither)."""
    return np.fmax(np.asarray(moved, np.float64), np.asarray(unmoved, np.float64))
