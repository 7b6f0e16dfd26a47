"""Converters from common user formats into a task of a :class:`MultiTaskDatabase`.

Every adapter resizes to the task's ``image_size`` (images: linear, anti-aliased when
shrinking; masks: nearest; boxes: scaled), keeps given splits or draws a seeded stratified
split, and writes through :func:`add_task` (a new database, or a task added atomically to an
existing one). See docs/database_format.md for examples.
"""

from ._common import DEFAULT_RATIOS as DEFAULT_RATIOS
from ._common import FIT_MODES as FIT_MODES
from ._common import Fit as Fit
from ._common import ImportResult as ImportResult
from ._common import Sample as Sample
from ._common import add_task as add_task
from ._common import grouped_split as grouped_split
from ._common import resize_image as resize_image
from ._common import resize_mask as resize_mask
from ._common import scale_boxes as scale_boxes
from ._common import stratified_split as stratified_split
from .coco import import_coco as import_coco
from .csv_table import import_csv as import_csv
from .image_folder import import_image_folder as import_image_folder
from .medmnist import import_medmnist as import_medmnist
from .segmentation_folders import import_segmentation_folders as import_segmentation_folders
from .volumes import import_volumes as import_volumes
from .volumes import normalize_volume as normalize_volume

__all__ = [
    "DEFAULT_RATIOS", "FIT_MODES", "Fit", "ImportResult", "Sample", "add_task", "grouped_split", "resize_image",
    "resize_mask",
    "scale_boxes", "stratified_split", "import_coco", "import_csv", "import_image_folder", "import_medmnist",
    "import_segmentation_folders", "import_volumes", "normalize_volume",
]
