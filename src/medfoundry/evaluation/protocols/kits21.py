"""KiTS21 (kidney tumours, CT): Dice and surface Dice on the hierarchical evaluation classes.

Definitions follow the challenge's evaluation code (github.com/neheller/kits21,
``kits21/evaluation/metrics.py`` and ``kits21/configuration/labels.py``), written here anew.
Labels: 1 kidney, 2 tumour, 3 cyst. Hierarchical evaluation classes (HECs), each one binary
mask:

* ``kidney_and_mass`` = {1, 2, 3}, surface-Dice tolerance 1.0330772532390826 mm;
* ``mass`` = {2, 3}, tolerance 1.1328796488598762 mm;
* ``tumor`` = {2}, tolerance 1.1498198361434828 mm.

Per HEC: ``dice`` (1 when both masks are empty) and ``surface_dice``: the surfel area of both
surfaces lying within the tolerance of the other surface, over the total surfel area (DeepMind's
surface-distance definition, :mod:`medfoundry.evaluation.surface`, spacing in mm from the
header); 1 when both are empty, 0 when exactly one is. Labels other than 1-3 are ignored. The
official evaluation averages over several sampled annotations per case; with one reference
file per case this protocol compares against that file. A missing prediction scores 0 on
every figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .registry import CaseFigures, SegmentationProtocol, register_protocol

__all__ = ["Kits21Protocol", "HECS"]

HECS: dict[str, tuple[tuple[int, ...], float]] = {
    "kidney_and_mass": ((1, 2, 3), 1.0330772532390826),
    "mass": ((2, 3), 1.1328796488598762),
    "tumor": ((2,), 1.1498198361434828),
}


@dataclass(frozen=True)
class Kits21Protocol(SegmentationProtocol):
    """KiTS21 figures per hierarchical evaluation class (see the module docstring)."""

    name: str = "kits21"
    description: str = "KiTS21 kidney/mass/tumour classes: Dice and surface Dice at the official tolerances (mm)"
    source: str = "github.com/neheller/kits21 kits21/evaluation/metrics.py, configuration/labels.py"
    hecs: dict[str, tuple[tuple[int, ...], float]] = field(default_factory=lambda: dict(HECS))

    def evaluate_case(self, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> CaseFigures:
        from ..surface import surface_dice

        out: CaseFigures = {}
        for hec, (labels, tolerance) in self.hecs.items():
            p = np.isin(pred, labels)
            r = np.isin(ref, labels)
            n_p, n_r = int(np.count_nonzero(p)), int(np.count_nonzero(r))
            if n_p == 0 and n_r == 0:
                out[hec] = {"dice": 1.0, "surface_dice": 1.0}
                continue
            dice = 2.0 * int(np.count_nonzero(p & r)) / (n_p + n_r)
            sd = 0.0 if n_p == 0 or n_r == 0 else surface_dice(r, p, spacing, tolerance)
            out[hec] = {"dice": dice, "surface_dice": sd}
        return out

    def missing_case(self, ref: np.ndarray, spacing: Sequence[float]) -> CaseFigures:
        return {hec: {"dice": 0.0, "surface_dice": 0.0} for hec in self.hecs}


KITS21 = register_protocol(Kits21Protocol())
