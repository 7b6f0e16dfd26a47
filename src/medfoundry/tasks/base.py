"""The contract of a task kind: everything the rest of medfoundry asks about a kind.

A kind is a :class:`Kind` subclass registered with :func:`medfoundry.tasks.register_kind`.
Nothing outside the kind modules branches on the kind; the database, the validator, the
inspector, the loaders, the trainers, transfer and evaluation ask the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..data.database import MultiTaskDatabase
    from ..data.tasks import TaskSpec
    from ..models.heads import Head

__all__ = ["Kind", "KindWriter", "ValidationContext", "to_numpy", "format_items"]


def format_items(d: dict[str, Any], fmt: Callable[[Any], str] = str, limit: int = 12) -> str:
    """``"a: 1, b: 2, ... (+n)"`` for the one-line balance column of ``data inspect``."""
    parts = [f"{c}: {fmt(v)}" for c, v in list(d.items())[:limit]]
    if len(d) > limit:
        parts.append(f"... (+{len(d) - limit})")
    return ", ".join(parts)


def to_numpy(x: Any) -> Any:
    """Tensors, nested dicts and array-likes -> numpy (what the metric functions take)."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    return np.asarray(x)


class KindWriter:
    """Collects the targets of one task while a :class:`~medfoundry.data.TaskWriter` fills it.

    ``set(i, target)`` stores sample ``i`` (raising :class:`~medfoundry.errors.DataError` for a
    malformed target); ``close()`` writes the kind's array files into ``folder``.
    """

    def __init__(self, folder: Path, spec: "TaskSpec", n: int):
        self.folder, self.spec, self.n = folder, spec, n

    def set(self, i: int, target: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class ValidationContext:
    """What a kind's :meth:`Kind.validate` gets: the task folder, the sample count from
    ``images.npy`` (``None`` when unreadable), and the validator's reporting helpers.

    Attributes:
        folder: ``DB/tasks/<task>``.
        n: number of samples, or ``None``.
        chunk_bytes: bytes of an array to read per step.
        error, warn: ``(path, field, message)`` record a problem.
        load: ``(name, required=True) -> array | None`` memory-maps ``<name>.npy`` (reports
            a missing or unreadable file itself).
        count_mismatch: ``(path, field, found) -> bool`` reports a row count other than ``n``.
        train_indices: ``(n) -> array | None`` valid train indices from ``splits.json``.
        chunks: ``(array) -> iterator of (start, stop)`` row ranges of about ``chunk_bytes``.
        progress: ``(description, total) -> advance(k)`` a progress line.
    """

    def __init__(self, folder: Path, n: int | None, chunk_bytes: int, error: Callable, warn: Callable,
                 load: Callable, count_mismatch: Callable, train_indices: Callable, chunks: Callable,
                 progress: Callable):
        self.folder, self.n, self.chunk_bytes = folder, n, chunk_bytes
        self.error, self.warn, self.load = error, warn, load
        self.count_mismatch, self.train_indices, self.chunks, self.progress = (
            count_mismatch, train_indices, chunks, progress)


class Kind:
    """Base class of a task kind. Subclasses set the class attributes and override the methods.

    Attributes:
        name: the string stored as ``kind`` in ``database.yaml``.
        arrays: the kind's array files in a task folder (besides ``images``/``spacing``).
        min_classes: fewest class names a task of this kind may declare.
        primary_metric: the metric a sweep reports, plots and early-stops on (declared only
            here; heads do not carry it).
        pooled: ``True`` when the kind predicts one output per image from the pooled
            embedding (a frozen transfer run then trains a probe on embeddings), ``False``
            for dense kinds that train the decoder and head on multi-scale features.
        head: the :class:`~medfoundry.models.heads.Head` subclass (its ``loss`` and
            ``decode`` are the kind's loss and decoding).
        manifest: empty for kinds stored as ``database.yaml`` tasks of one ``image_size``;
            for a kind whose samples differ in shape (ragged storage), the file that
            describes one task inside its own folder. Such tasks are not ``database.yaml``
            entries: ``data validate`` and ``data inspect`` find them with
            :meth:`stored_tasks` and ask :meth:`validate_stored`, :meth:`summarize_stored`
            and :meth:`draw_stored`.
    """

    name: ClassVar[str] = ""
    arrays: ClassVar[tuple[str, ...]] = ()
    manifest: ClassVar[str] = ""
    min_classes: ClassVar[int] = 1
    primary_metric: ClassVar[str] = ""
    pooled: ClassVar[bool] = True
    head: ClassVar[type | None] = None

    # ----------------------------------------------------------------- storage
    def writer(self, folder: Path, spec: "TaskSpec", n: int) -> KindWriter:
        """A :class:`KindWriter` for ``n`` samples of ``spec`` in ``folder``."""
        raise NotImplementedError(f"kind {self.name!r} defines no writer")

    def target(self, db: "MultiTaskDatabase", task: str, index: int) -> Any:
        """The stored label of one sample, as numpy / Python values."""
        raise NotImplementedError(f"kind {self.name!r} defines no target reader")

    def validate(self, spec: "TaskSpec", ctx: ValidationContext) -> None:
        """Check the kind's arrays of one task folder, reporting through ``ctx``."""

    def invalid_targets(self, spec: "TaskSpec", db: "MultiTaskDatabase", task: str
                        ) -> tuple[str, str, np.ndarray, np.ndarray] | None:
        """Cheap range check run before any training (vectorised min/max, no full validation).

        Returns ``(array name, expected range, sample indices, one offending value each)`` for
        the samples whose stored target the head cannot take, or ``None`` when the kind has no
        such check. ``medfoundry.data.validate.check_targets`` turns it into one-line errors.
        """
        return None

    def strata(self, db: "MultiTaskDatabase", task: str) -> np.ndarray:
        """One integer per sample for stratified fractions (default: one stratum)."""
        return np.zeros(db.num_samples(task), dtype=np.int64)

    def example_target(self, spec: "TaskSpec", rng: np.random.Generator) -> Any:
        """A random valid target for ``spec`` (tests, docs and synthetic smoke data)."""
        raise NotImplementedError(f"kind {self.name!r} defines no example target")

    # ----------------------------------------------------------------- batches
    def collate(self, targets: Sequence[Any]) -> Any:
        """Per-sample targets -> the batch target (tensors on the CPU)."""
        import torch

        return torch.as_tensor(np.stack([np.asarray(t) for t in targets]))

    # ----------------------------------------------------------------- inspect
    def summary(self, db: "MultiTaskDatabase", task: str) -> dict[str, Any]:
        """The ``balance`` entry of ``medfoundry data inspect`` (JSON-ready)."""
        return {}

    def summary_text(self, balance: dict[str, Any], limit: int = 12) -> str:
        """One line of :meth:`summary` for the inspect table."""
        return format_items(balance, str, limit)

    def draw(self, ax: Any, spec: "TaskSpec", target: Any, palette: Sequence[Any]) -> str:
        """Overlay a 2D target on a matplotlib axis; returns the text for the panel title."""
        return ""

    def legend(self, spec: "TaskSpec", palette: Sequence[Any]) -> list[Any]:
        """Legend handles for the inspect figure (default none)."""
        return []

    # ------------------------------------------- self-described (ragged) tasks
    def stored_tasks(self, root: Path) -> list[str]:
        """Names of the tasks of this kind under ``root/tasks`` found by :attr:`manifest`."""
        if not self.manifest:
            return []
        return sorted(p.parent.name for p in (Path(root) / "tasks").glob(f"*/{self.manifest}"))

    def validate_stored(self, root: Path, task: str, error: Callable, warn: Callable) -> None:
        """Check a self-described task, reporting ``(path, field, message)`` through ``error``/``warn``."""
        raise NotImplementedError(f"kind {self.name!r} stores no self-described tasks")

    def summarize_stored(self, root: Path, task: str) -> dict[str, Any]:
        """The ``data inspect`` summary of a self-described task (the keys of
        :func:`medfoundry.data.inspect.summarize_task`; ``image_size`` is the largest shape and
        ``image_size_min`` the smallest)."""
        raise NotImplementedError(f"kind {self.name!r} stores no self-described tasks")

    def draw_stored(self, axes: Sequence[Any], root: Path, task: str, seed: int) -> None:
        """Draw up to ``len(axes)`` samples of a self-described task (seeded choice), one per axis."""
        raise NotImplementedError(f"kind {self.name!r} stores no self-described tasks")

    # ------------------------------------------------------------------- model
    def create_head(self, spec: "TaskSpec", encoder_channels: Sequence[int] | int, decoder_channels: int,
                    stride: int | Sequence[int] = 4, **kwargs: Any) -> "Head":
        """The kind's head for ``spec`` (see :func:`medfoundry.models.heads.create_head`)."""
        if self.head is None:
            raise NotImplementedError(f"kind {self.name!r} declares no head")
        return self.head(spec, encoder_channels, decoder_channels, stride=stride, **kwargs)

    def outputs(self, spec: "TaskSpec") -> int:
        """Width of the prediction layer of a pooled kind (the frozen-transfer probe's output
        size, fed to the head's ``loss`` and ``decode``); default one per class."""
        return spec.num_classes

    # ------------------------------------------------------------------ scores
    def metrics(self, spec: "TaskSpec", preds: Sequence[Any], targets: Sequence[Any],
                spacings: Sequence[Any] | None = None) -> dict[str, float]:
        """All metrics of decoded predictions; must contain :attr:`primary_metric`."""
        raise NotImplementedError(f"kind {self.name!r} defines no metrics")

    def primary_score(self, spec: "TaskSpec", preds: Sequence[Any], targets: Sequence[Any]) -> float:
        """Only the primary metric (override when the full set is expensive)."""
        return float(self.metrics(spec, preds, targets)[self.primary_metric])

    def bootstrap(self, spec: "TaskSpec", preds: Sequence[Any], targets: Sequence[Any],
                  resamples: np.ndarray) -> np.ndarray:
        """The primary metric on each row of case indices ``resamples`` (n_boot, N)."""
        return np.array([self.primary_score(spec, [preds[i] for i in r], [targets[i] for i in r])
                         for r in resamples])

    def chance_level(self, spec: "TaskSpec") -> float:
        """Expected primary metric of an uninformed predictor, from the task definition alone."""
        return 0.0
