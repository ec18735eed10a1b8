"""Temperature scaling (Guo et al. 2017) and the calibration numbers reported with a bundle.

One scalar T for softmax(logits / T), fitted by minimising the negative log-likelihood on
held-out spectra: it changes confidence, never the ranking (top-1 is unchanged).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge.classifier import softmax


def nll(logits: NDArray[np.floating], y: NDArray[np.int64], temperature: float = 1.0) -> float:
    p = softmax(np.asarray(logits, np.float64), temperature)
    return float(-np.mean(np.log(np.maximum(p[np.arange(y.size), y], 1e-12))))


def fit_temperature(logits: NDArray[np.floating], y: NDArray[np.int64], lo: float = 0.05, hi: float = 20.0) -> float:
    """The T in [lo, hi] minimising held-out NLL (golden-section search on log T; NLL is
    convex in 1/T, so unimodal on this interval)."""
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(logits, y, float(np.exp(c))), nll(logits, y, float(np.exp(d)))
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(logits, y, float(np.exp(c)))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(logits, y, float(np.exp(d)))
    return float(np.exp((a + b) / 2))


def reliability(probs: NDArray[np.floating], y: NDArray[np.int64], n_bins: int = 10) -> dict[str, object]:
    """Expected calibration error of the top-1 probability, with the per-bin table."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0, 1, n_bins + 1)
    bins = []
    ece = 0.0
    for i in range(n_bins):
        m = (conf > edges[i]) & (conf <= edges[i + 1]) if i else (conf >= 0) & (conf <= edges[1])
        if m.any():
            ece += m.mean() * abs(float(correct[m].mean()) - float(conf[m].mean()))
            bins.append(
                {
                    "lo": float(edges[i]),
                    "hi": float(edges[i + 1]),
                    "n": int(m.sum()),
                    "accuracy": float(correct[m].mean()),
                    "confidence": float(conf[m].mean()),
                }
            )
    return {
        "ece": float(ece),
        "mean_confidence": float(conf.mean()) if conf.size else float("nan"),
        "accuracy": float(correct.mean()) if y.size else float("nan"),
        "bins": bins,
    }


def reliability_png(before: dict[str, object], after: dict[str, object], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect")
    for rep, lab in ((before, "T = 1"), (after, "fitted T")):
        b = rep["bins"]  # type: ignore[index]
        ax.plot(
            [x["confidence"] for x in b],
            [x["accuracy"] for x in b],
            "o-",  # type: ignore[index]
            label=f"{lab} (ECE {rep['ece']:.3f})",
        )  # type: ignore[index]
    ax.set_xlabel("top-1 probability")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
