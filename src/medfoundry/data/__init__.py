"""Multi-task database: task specs, storage, adapters, loaders and the synthetic default."""

from .database import DatabaseWriter as DatabaseWriter
from .database import MultiTaskDatabase as MultiTaskDatabase
from .database import TaskWriter as TaskWriter
from .tasks import Modality as Modality
from .tasks import TaskKind as TaskKind
from .tasks import TaskSpec as TaskSpec

__all__ = ["DatabaseWriter", "MultiTaskDatabase", "TaskWriter", "Modality", "TaskKind", "TaskSpec"]
