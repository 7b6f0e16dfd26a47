"""Which cases of a downstream task a transfer run trains on, early-stops on and is scored on.

Reported figures are scored on the test split. A recipe is chosen with ``score_split="val"``
instead: the val split is cut once per task (a fixed, stratified halving that does not depend
on the run's seed) into a selection half, which early-stops every run, and a scoring half,
which scores it, so choosing a recipe never reads the test split and no run is scored on the
cases that picked its weights.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ..data.database import MultiTaskDatabase, stratified_prefix
from .config import TransferConfig

__all__ = ["RunSplits", "run_splits", "val_halves"]


@dataclass(frozen=True)
class RunSplits:
    """Sorted database indices of one run's training, early-stopping and scoring cases."""

    train: np.ndarray
    select: np.ndarray
    score: np.ndarray


def val_halves(db: MultiTaskDatabase, task: str) -> tuple[np.ndarray, np.ndarray]:
    """``(selection, scoring)`` halves of ``task``'s val split, stratified; a stratum with one
    case keeps it for selection."""
    val = db.split_indices(task, "val")
    strata = db.strata(task)[val]
    rng = np.random.default_rng(zlib.crc32(f"{task}/val-halves".encode()))
    select, score = [val[:0]], [val[:0]]
    for s in np.unique(strata):
        members = val[strata == s]
        members = members[rng.permutation(len(members))]
        half = len(members) // 2
        score.append(members[:half])
        select.append(members[half:])
    return np.sort(np.concatenate(select)), np.sort(np.concatenate(score))


def run_splits(db: MultiTaskDatabase, task: str, fraction: float, seed: int, cfg: TransferConfig) -> RunSplits:
    """The cases of one run (task, fraction, seed) under ``cfg.val_policy`` and ``cfg.score_split``."""
    train = db.fraction_indices(task, fraction, seed)
    if cfg.score_split == "test":
        val = db.split_indices(task, "val")
        if len(val) and cfg.val_policy == "scaled":
            val = db.fraction_indices(task, fraction, seed, split="val")
        return RunSplits(train, val, db.split_indices(task, "test"))
    select, score = val_halves(db, task)
    if len(select) and cfg.val_policy == "scaled":
        rng = np.random.default_rng([seed, zlib.crc32(f"{task}/val-select".encode())])
        select = stratified_prefix(select, db.strata(task)[select], fraction, rng)
    return RunSplits(train, select, score)
