"""Temperature scaling (Guo et al. 2017) and the calibration numbers reported with a bundle.

One scalar T for softmax(logits / T), fitted on held-out spectra: it changes confidence, never
the ranking (top-1 is unchanged). Two criteria:

- "nll": the negative log-likelihood of the true class (Guo et al.);
- "top_label_brier" (the export's default): mean (max p - [top-1 correct])^2, a proper score
  of the one number a result reports and ECE measures. With 1,203 classes and a quarter of
  held-out specimens wrong, the NLL is dominated by the true class's tiny probability in the
  wrong answers, so minimum NLL raises T until the right answers look unsure: the shipped
  model's min-NLL T = 1.28 took its held-out ECE from 0.059 to 0.092, under-confident.

`trainer export` fits T on calibration specimens that neither training nor early stopping saw
and reports ECE on the held-out specimens, out of sample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge.classifier import softmax


def nll(logits: NDArray[np.floating], y: NDArray[np.int64], temperature: float = 1.0) -> float:
    p = softmax(np.asarray(logits, np.float64), temperature)
    return float(-np.mean(np.log(np.maximum(p[np.arange(y.size), y], 1e-12))))


def top_label_brier(logits: NDArray[np.floating], y: NDArray[np.int64], temperature: float = 1.0) -> float:
    p = softmax(np.asarray(logits, np.float64), temperature)
    correct = p.argmax(axis=1) == y
    return float(np.mean((p.max(axis=1) - correct) ** 2))


CRITERIA = {"nll": nll, "top_label_brier": top_label_brier}


def fit_temperature(
    logits: NDArray[np.floating],
    y: NDArray[np.int64],
    lo: float = 0.05,
    hi: float = 20.0,
    *,
    criterion: str = "nll",
) -> float:
    """The T in [lo, hi] minimising `criterion` on held-out spectra (golden-section search on
    log T; NLL is convex in 1/T, and the top-label Brier score is unimodal in T because the
    top-1 probability is monotone in T for a fixed ranking)."""
    if criterion not in CRITERIA:
        raise ValueError(f"temperature criterion must be one of {sorted(CRITERIA)}, got {criterion!r}")
    f = CRITERIA[criterion]
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(logits, y, float(np.exp(c))), f(logits, y, float(np.exp(d)))
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(logits, y, float(np.exp(c)))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(logits, y, float(np.exp(d)))
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
