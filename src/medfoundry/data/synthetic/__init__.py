"""Seeded generators of the embedded default database (see docs/synthetic_tasks.md).

Example:
    >>> from medfoundry.data.synthetic import make_synthetic_database
    >>> db = make_synthetic_database("demo_out/db", seed=0, scale="small")
    >>> db.task_names("pretrain")[:2]
    ['mri_tissue_seg', 'mri_lesion_seg']
"""

from __future__ import annotations

from .build import SCALES as SCALES
from .build import SYNTHETIC_3D_TASKS as SYNTHETIC_3D_TASKS
from .build import SYNTHETIC_TASKS as SYNTHETIC_TASKS
from .build import list_synthetic_tasks as list_synthetic_tasks
from .build import make_synthetic_database as make_synthetic_database
from .build import synthetic_task_spec as synthetic_task_spec
from .catalog import CATALOG as CATALOG
from .catalog import SyntheticTask as SyntheticTask

__all__ = ["SCALES", "SYNTHETIC_TASKS", "SYNTHETIC_3D_TASKS", "CATALOG", "SyntheticTask", "list_synthetic_tasks",
           "make_synthetic_database", "synthetic_task_spec"]
