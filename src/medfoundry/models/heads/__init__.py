"""Task heads (a package: the contract in :mod:`.base`, one module per head family).

Which head a task gets is declared by its kind (:mod:`medfoundry.tasks`); ``create_head``
asks the kind registry.
"""

from .base import Head as Head
from .base import create_head as create_head
from .base import head_class as head_class
from .dense import SegmentationHead as SegmentationHead
from .detection import DetectionHead as DetectionHead
from .pooled import ClassificationHead as ClassificationHead
from .pooled import MultilabelHead as MultilabelHead

__all__ = ["Head", "ClassificationHead", "MultilabelHead", "SegmentationHead", "DetectionHead", "create_head",
           "head_class"]
