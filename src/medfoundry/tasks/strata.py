"""Strata shared by the kinds and the adapters' split makers (numpy only: cheap to import)."""

from __future__ import annotations

import numpy as np

__all__ = ["multilabel_strata"]


def multilabel_strata(labels: np.ndarray) -> np.ndarray:
    """One stratum per sample: its rarest positive label, or K for "no positive label".

    The rarest label wins so that rare labels keep a sample in small stratified subsets.
    """
    labels = np.asarray(labels, dtype=bool)
    n, k = labels.shape
    order = np.argsort(labels.sum(axis=0), kind="stable")
    out = np.full(n, k, dtype=np.int64)
    for j in order[::-1]:
        out[labels[:, j]] = j
    return out
