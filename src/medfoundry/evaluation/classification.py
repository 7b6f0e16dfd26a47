"""Classification metrics (numpy): accuracy, balanced accuracy, macro F1, AUROC.

Conventions (stated once, applied everywhere):

* ``y_true`` holds integer class indices ``0 .. C-1``, shape (N,).
* Predictions are either integer labels (N,) or scores/probabilities (N, C); scores are
  turned into labels by ``argmax`` (the first maximum wins on ties, as ``np.argmax``).
* AUROC is the rank (Mann-Whitney U) statistic with tied scores given their average rank,
  which equals the area under the ROC curve with ties counted as half-correct.
* Macro averages are over classes present in ``y_true``: a class with no true sample has no
  recall and no one-vs-rest AUROC, so it is skipped rather than counted as 0 or 1. F1 follows
  scikit-learn: a class that appears in neither ``y_true`` nor the predictions is skipped.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "binary_auroc",
    "macro_auroc",
    "multilabel_auroc",
    "confusion_matrix",
]


def _labels(y_true, y_pred, name: str) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.ndim != 1:
        raise ValueError(f"{name}(): y_true must be 1-D class indices, got shape {t.shape}")
    if p.ndim == 2:
        p = np.argmax(p, axis=1)
    if p.shape != t.shape:
        raise ValueError(f"{name}(): y_pred has {p.shape[0] if p.ndim else 0} samples, y_true has {t.shape[0]}")
    return t.astype(np.int64), p.astype(np.int64)


def accuracy(y_true, y_pred) -> float:
    """Fraction of correct predictions; NaN for zero samples.

    Args:
        y_true: (N,) class indices.
        y_pred: (N,) predicted indices or (N, C) scores.
    """
    t, p = _labels(y_true, y_pred, "accuracy")
    if t.size == 0:
        return float("nan")
    return float(np.mean(t == p))


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """(C, C) counts; row = true class, column = predicted class."""
    t, p = _labels(y_true, y_pred, "confusion_matrix")
    c = num_classes if num_classes is not None else int(max(t.max(initial=-1), p.max(initial=-1)) + 1)
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= c):
        raise ValueError(f"confusion_matrix(): labels must lie in [0, {c}), got range "
                         f"[{min(t.min(), p.min())}, {max(t.max(), p.max())}]")
    out = np.zeros((c, c), dtype=np.int64)
    np.add.at(out, (t, p), 1)
    return out


def balanced_accuracy(y_true, y_pred, num_classes: int | None = None) -> float:
    """Mean per-class recall over the classes present in ``y_true``.

    Chance level is ``1 / C_present`` whatever the class balance, which is why it is the
    primary classification metric of the transfer benchmark.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[present] / support[present]))


def macro_f1(y_true, y_pred, num_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 = 2TP / (2TP + FP + FN).

    A class absent from both ``y_true`` and the predictions (0/0) is skipped.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(float)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # (TP + FP) + (TP + FN)
    keep = denom > 0
    if not keep.any():
        return float("nan")
    return float(np.mean(2 * tp[keep] / denom[keep]))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties replaced by the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # boundaries of runs of equal values
    starts = np.r_[0, np.flatnonzero(np.diff(xs) != 0) + 1]
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size, dtype=float)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def binary_auroc(y_true, scores) -> float:
    """Area under the ROC curve of binary labels (0/1) by the Mann-Whitney U statistic.

    ``AUROC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` where ``R_pos`` is the sum of
    the (average, for ties) ranks of the positives. NaN when only one class is present.
    """
    t = np.asarray(y_true).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype=float).reshape(-1)
    if t.shape != s.shape:
        raise ValueError(f"binary_auroc(): {t.size} labels but {s.size} scores")
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    if not np.all(np.isfinite(s)):
        raise ValueError("binary_auroc(): scores contain NaN or inf")
    ranks = _average_ranks(s)
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_auroc(y_true, probs, per_class: bool = False):
    """One-vs-rest AUROC averaged over the classes present in ``y_true``.

    Args:
        y_true: (N,) class indices.
        probs: (N, C) scores (probabilities or logits; only their order matters).
        per_class: also return the (C,) per-class array (NaN for skipped classes).

    Returns:
        The macro mean (NaN if fewer than two classes are present), or ``(mean, per_class)``.
    """
    t = np.asarray(y_true).astype(np.int64).reshape(-1)
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape[0] != t.size:
        raise ValueError(f"macro_auroc(): probs must be (N={t.size}, C), got {p.shape}")
    values = np.full(p.shape[1], np.nan)
    for c in range(p.shape[1]):
        values[c] = binary_auroc(t == c, p[:, c])
    mean = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return (mean, values) if per_class else mean


def multilabel_auroc(y_true, scores) -> tuple[np.ndarray, float]:
    """Per-label AUROC and their mean for (N, K) binary targets.

    Returns:
        ``(per_label, macro)``: per_label is (K,) with NaN for a label whose targets hold one
        class only (AUROC undefined); macro is the mean over the finite entries (NaN if none).
    """
    t = np.asarray(y_true)
    s = np.asarray(scores, dtype=float)
    if t.ndim != 2 or t.shape != s.shape:
        raise ValueError(f"multilabel_auroc(): y_true {t.shape} and scores {s.shape} must both be (N, K)")
    per = np.array([binary_auroc(t[:, k] > 0.5, s[:, k]) for k in range(t.shape[1])])
    macro = float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")
    return per, macro
