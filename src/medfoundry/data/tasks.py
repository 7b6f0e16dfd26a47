"""Typed description of one task of a multi-task database."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from ..errors import ConfigError, DataError

__all__ = ["TaskKind", "KindName", "kind_name", "Modality", "TaskSpec", "SPLITS", "parse_modality"]

SPLITS = ("train", "val", "test")


class TaskKind(str, Enum):
    """The built-in task kinds (their stored names). More kinds can be registered with
    :func:`medfoundry.tasks.register_kind`; a :class:`TaskSpec` of such a kind holds a
    :class:`KindName`. Everything about a kind is declared in its module under
    :mod:`medfoundry.tasks`."""

    CLASSIFICATION = "classification"  # one label per image, softmax
    MULTILABEL = "multilabel"  # K independent binary labels per image, sigmoid
    SEGMENTATION = "segmentation"  # one class index per pixel/voxel, 0 = background
    DETECTION = "detection"  # boxes (x0, y0, x1, y1) in pixels + a class per box


class KindName(str):
    """The name of a registered, non built-in kind; like a ``TaskKind`` member it is a ``str``
    with ``.value``, so code written for the built-in kinds handles it unchanged."""

    @property
    def value(self) -> str:
        return str(self)


def kind_name(value: "TaskKind | str") -> "TaskKind | KindName":
    """The ``TaskKind`` member, or the :class:`KindName` of a registered kind, named ``value``.

    Raises:
        ConfigError: no kind of that name is registered (with close matches).
    """
    from ..tasks import get_kind

    name = get_kind(value).name
    try:
        return TaskKind(name)
    except ValueError:
        return KindName(name)


class Modality(str, Enum):
    """Modality group; decides which input adapter an image enters the encoder through."""

    TOMOGRAPHIC = "tomographic"  # CT / MRI slices or volumes
    MICROSCOPIC = "microscopic"  # fluorescence, histology, cytology
    XRAY = "x-ray"  # projection radiography
    OTHER = "other"  # fundus, dermoscopy, ultrasound, ...


def parse_modality(value: "Modality | str", where: str = "modality") -> Modality:
    """The :class:`Modality` named by ``value`` (a member or its value, e.g. ``"x-ray"``).

    Raises:
        ConfigError: naming ``where`` (an option or field), the value and the valid values.
    """
    try:
        return Modality(value)
    except ValueError as err:
        valid = ", ".join(m.value for m in Modality)
        raise ConfigError(f"{where} {value!r}: expected one of {valid}") from err


@dataclass(frozen=True)
class TaskSpec:
    """One task of a database.

    Attributes:
        name: unique identifier, ``[a-z0-9_]+``.
        kind: the task kind: a registered kind name (``medfoundry.tasks.list_kinds()``),
            held as a ``TaskKind`` member for the built-in kinds.
        classes: class names. For segmentation, index 0 is the background class; for
            detection the names of the box classes (no background entry).
        modality: modality group.
        spatial_dims: 2 for images, 3 for volumes.
        image_size: spatial shape of every stored sample, (H, W) or (D, H, W), in voxels.
        channels: number of image channels (1 grey, 3 RGB, ...).
        description: one line for tables and reports.
        spacing: default pixel/voxel spacing in mm, same order as ``image_size``; ``None``
            when unknown (distances are then reported in pixels).
        group: free-form tag, e.g. ``pretrain`` or ``downstream``.
    """

    name: str
    kind: TaskKind
    classes: tuple[str, ...]
    modality: Modality
    spatial_dims: int
    image_size: tuple[int, ...]
    channels: int
    description: str = ""
    spacing: tuple[float, ...] | None = None
    group: str = "pretrain"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        if not self.name or not all(c.isalnum() or c == "_" for c in self.name) or self.name != self.name.lower():
            raise DataError(f"{where}: name must be lower-case letters, digits and '_'", field="name")
        try:
            object.__setattr__(self, "kind", kind_name(self.kind))
        except ConfigError as err:
            import difflib

            from ..tasks import list_kinds

            close = difflib.get_close_matches(str(self.kind), list_kinds(), n=2)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise DataError(f"{where}: kind {self.kind!r} is not one of the registered kinds "
                            f"{', '.join(list_kinds())}{hint}", field="kind") from err
        object.__setattr__(self, "modality", _enum(Modality, self.modality, where, "modality"))
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        if self.spacing is not None:
            object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        if self.spatial_dims not in (2, 3):
            raise DataError(f"{where}: spatial_dims must be 2 or 3, got {self.spatial_dims}", field="spatial_dims")
        if len(self.image_size) != self.spatial_dims or min(self.image_size) < 1:
            raise DataError(
                f"{where}: image_size must have {self.spatial_dims} positive entries, got {list(self.image_size)}",
                field="image_size",
            )
        if self.spacing is not None and (len(self.spacing) != self.spatial_dims or min(self.spacing) <= 0):
            raise DataError(f"{where}: spacing must have {self.spatial_dims} positive entries (mm)", field="spacing")
        if self.channels < 1:
            raise DataError(f"{where}: channels must be >= 1, got {self.channels}", field="channels")
        from ..tasks import get_kind

        # ragged kinds describe themselves (see their module); a model's spec of such a task
        # (multi-task pretraining) says where it is stored and is not a database.yaml entry
        if get_kind(self.kind).manifest and "stored_in" not in self.extra:
            raise DataError(f"{where}: {self.kind.value} tasks are described by tasks/{self.name}/"
                            f"{get_kind(self.kind).manifest}, not by database.yaml (remove this entry)",
                            field="kind")
        minimum = get_kind(self.kind).min_classes
        if len(self.classes) < minimum:
            raise DataError(
                f"{where}: a {self.kind.value} task needs at least {minimum} class names, got {len(self.classes)}",
                field="classes",
            )
        if len(set(self.classes)) != len(self.classes):
            raise DataError(f"{where}: class names must be unique", field="classes")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def chance_level(self) -> float:
        """Expected primary metric of an uninformed predictor (declared by the kind)."""
        from ..tasks import get_kind

        return get_kind(self.kind).chance_level(self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind.value
        d["modality"] = self.modality.value
        d["classes"] = list(self.classes)
        d["image_size"] = list(self.image_size)
        d["spacing"] = None if self.spacing is None else list(self.spacing)
        if not d["extra"]:
            del d["extra"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "database.yaml") -> "TaskSpec":
        if not isinstance(d, dict):
            raise DataError(f"each task entry must be a mapping, got {type(d).__name__}", path=source, field="tasks")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        name = d.get("name", "?")
        if unknown:
            raise DataError(f"task {name!r}: unknown keys {sorted(unknown)}", path=source, field="tasks")
        required = ["name", "kind", "classes", "modality", "spatial_dims", "image_size", "channels"]
        missing = [k for k in required if k not in d]
        if missing:
            raise DataError(f"task {name!r}: missing keys {missing}", path=source, field="tasks")
        try:
            return cls(**d)
        except DataError as err:
            raise DataError(err.message, path=source, field=err.field) from err
        except (TypeError, ValueError) as err:
            raise DataError(f"task {name!r}: {err}", path=source, field="tasks") from err


def _enum(enum_cls, value, where: str, field_name: str):
    try:
        return enum_cls(value)
    except ValueError as err:
        valid = ", ".join(m.value for m in enum_cls)
        raise DataError(f"{where}: {field_name} {value!r} is not one of {valid}", field=field_name) from err
