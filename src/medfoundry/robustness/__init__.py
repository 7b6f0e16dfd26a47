"""Robustness to the scanner: graded shifts of volumes, test-time methods, ensembles, calibration.

:mod:`.shifts` and :mod:`.calibration` are numpy/scipy only; :mod:`.adapt` imports torch.
Importing this package imports neither torch nor matplotlib.
"""

from .shifts import CORRUPTIONS as CORRUPTIONS
from .shifts import corrupt as corrupt
from .shifts import make_shift_volumes as make_shift_volumes

__all__ = ["CORRUPTIONS", "corrupt", "make_shift_volumes"]
