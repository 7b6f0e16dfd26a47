"""Voxel-wise calibration of segmentation probabilities: expected calibration error (ECE) and
reliability diagrams.

A voxel's confidence is the probability of the class it is assigned (softmax: the largest class
probability; sigmoid regions: ``max(p, 1 - p)`` per region), and it is correct when that class
matches the reference. Background far from any structure is nearly always right with confidence
near 1, and would drown every error, so by default only **foreground-aware** voxels count: those
where the reference or the prediction is foreground (per region for sigmoid outputs). Bins are
``bins`` equal-width intervals of confidence in [0, 1]; ECE = sum over bins of
``n_b / N * |accuracy_b - confidence_b|`` (Guo et al. 2017, Naeini et al. 2015).

Bin tables of several cases add up (:func:`merge_bins`), so a folder's ECE pools its voxels.

Classification heads (:func:`classification_bins`): **top-label** ECE over samples, the
confidence being the largest class probability and correct meaning that class is the label;
multilabel heads: every (sample, label) entry with confidence ``max(p, 1 - p)``. Same 15 bins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["calibration_bins", "classification_bins", "ece_from_bins", "merge_bins", "expected_calibration_error",
           "reliability_diagram"]


def _confidence_correct(probabilities: np.ndarray, reference: np.ndarray, activation: str,
                        foreground_only: bool) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, dtype=np.float32)
    ref = np.asarray(reference)
    if activation == "softmax":
        pred = np.argmax(p, axis=0)
        conf, correct = p.max(axis=0), pred == ref
        mask = (ref > 0) | (pred > 0) if foreground_only else np.ones(ref.shape, bool)
        return conf[mask], correct[mask]
    # sigmoid: reference is (R, *S) region masks
    pred = p > 0.5
    conf, correct = np.maximum(p, 1 - p), pred == (ref > 0)
    mask = (ref > 0) | pred if foreground_only else np.ones(ref.shape, bool)
    return conf[mask], correct[mask]


def calibration_bins(probabilities: np.ndarray, reference: np.ndarray, *, activation: str = "softmax",
                     foreground_only: bool = True, bins: int = 15) -> np.ndarray:
    """Bin table (bins, 3): voxel count, summed confidence, summed correctness per bin.

    Args:
        probabilities: (K, *S) softmax probabilities, or (R, *S) sigmoid region probabilities.
        reference: (*S) class indices (softmax), or (R, *S) region masks (sigmoid).
        activation: ``softmax`` or ``sigmoid``.
        foreground_only: count only voxels where the reference or the prediction is foreground.
        bins: equal-width confidence bins in [0, 1].
    """
    if activation not in ("softmax", "sigmoid"):
        raise ValueError(f"calibration_bins: activation must be softmax or sigmoid, got {activation!r}")
    conf, correct = _confidence_correct(probabilities, reference, activation, foreground_only)
    index = np.clip((conf * bins).astype(int), 0, bins - 1)
    table = np.zeros((bins, 3), np.float64)
    np.add.at(table[:, 0], index, 1.0)
    np.add.at(table[:, 1], index, conf)
    np.add.at(table[:, 2], index, correct.astype(np.float64))
    return table


def classification_bins(probabilities: np.ndarray, labels: np.ndarray, *, activation: str = "softmax",
                        bins: int = 15) -> np.ndarray:
    """Bin table (bins, 3) of a classification head over samples.

    Args:
        probabilities: (N, K) class probabilities (softmax) or label scores (sigmoid).
        labels: (N,) class indices (softmax) or (N, K) 0/1 labels (sigmoid; NaN entries, i.e.
            missing labels, are left out).
        activation: ``softmax`` (top-label ECE) or ``sigmoid`` (every entry).
    """
    p = np.asarray(probabilities, dtype=np.float32)
    y = np.asarray(labels)
    if p.ndim != 2 or (activation == "softmax" and y.shape != (p.shape[0],)) or \
            (activation == "sigmoid" and y.shape != p.shape):
        raise ValueError(f"classification_bins: probabilities (N, K) and labels (N,) or (N, K) expected, got "
                         f"{p.shape} and {y.shape}")
    if activation == "sigmoid":
        known = np.isfinite(y.astype(np.float64))
        return calibration_bins(p[known][None], (y[known] > 0.5)[None], activation="sigmoid",
                                foreground_only=False, bins=bins)
    return calibration_bins(p.T, y, activation="softmax", foreground_only=False, bins=bins)


def merge_bins(tables: Sequence[np.ndarray]) -> np.ndarray:
    """Pool the bin tables of several cases."""
    return np.sum(np.stack(tables), axis=0)


def ece_from_bins(table: np.ndarray) -> float:
    """ECE of a bin table; NaN when it holds no voxel."""
    n = table[:, 0]
    if n.sum() == 0:
        return float("nan")
    filled = n > 0
    gap = np.abs(table[filled, 2] / n[filled] - table[filled, 1] / n[filled])
    return float((n[filled] * gap).sum() / n.sum())


def expected_calibration_error(probabilities: np.ndarray, reference: np.ndarray, *, activation: str = "softmax",
                               foreground_only: bool = True, bins: int = 15) -> float:
    """ECE of one case (arguments as :func:`calibration_bins`), in [0, 1]."""
    return ece_from_bins(calibration_bins(probabilities, reference, activation=activation,
                                          foreground_only=foreground_only, bins=bins))


def reliability_diagram(tables: dict[str, np.ndarray], out: str | Path, title: str = "reliability") -> list[Path]:
    """Accuracy vs confidence per bin, one line per method (``{name: bin table}``), with the
    diagonal of perfect calibration; writes ``out`` as PNG and SVG (suffix replaced)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils import atomic_path

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect")
    for name, table in tables.items():
        filled = table[:, 0] > 0
        conf = table[filled, 1] / table[filled, 0]
        acc = table[filled, 2] / table[filled, 0]
        ax.plot(conf, acc, marker="o", markersize=3, label=f"{name} (ECE {ece_from_bins(table):.3f})")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    written = []
    for suffix in (".png", ".svg"):
        target = Path(out).with_suffix(suffix)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=120)
        written.append(target)
    plt.close(fig)
    return written
