"""Task kinds as plug-ins: one registry, one module per kind.

A kind (classification, multilabel, segmentation, detection, or one you add) declares in one
:class:`Kind` subclass everything about it: its stored arrays and their validation, how a
target is read and collated, the strata of stratified fractions, the ``data inspect``
summary and overlay, the head (which holds the loss and the decoding), the metric set, the
primary metric and the chance level. The rest of medfoundry asks :func:`get_kind`.

Add a kind (recipe):

1. subclass :class:`Kind`, set ``name``, ``arrays``, ``min_classes``, ``primary_metric``,
   ``pooled`` and ``head`` (a :class:`~medfoundry.models.heads.Head` subclass with
   ``forward``, ``loss`` scaled to about 1 untrained, and ``decode``);
2. implement ``writer``, ``target``, ``metrics`` and ``chance_level`` (and, as needed,
   ``validate``, ``strata``, ``collate``, ``summary``, ``draw``);
3. call ``register_kind(MyKind())`` once, before a database of that kind is written or
   opened (e.g. at import of your package).

Its name is then a valid ``kind`` in ``database.yaml``, and ``DatabaseWriter``,
``validate_database``, ``inspect``, ``pretrain``, ``transfer`` and ``evaluate`` handle it.
``tests/tasks/test_new_kind.py`` adds an ordinal-regression kind this way.

Example:
    >>> from medfoundry.tasks import get_kind, list_kinds
    >>> list_kinds()
    ['classification', 'detection', 'multilabel', 'segmentation', 'segmentation3d']
    >>> get_kind("segmentation").primary_metric
    'dice'
"""

from __future__ import annotations

import fnmatch

from ..errors import ConfigError
from ..utils import look_up_option
from .base import Kind, KindWriter, ValidationContext

__all__ = ["Kind", "KindWriter", "ValidationContext", "register_kind", "unregister_kind", "get_kind",
           "list_kinds", "stored_task_kinds"]

_KINDS: dict[str, Kind] = {}
_BUILTINS_LOADED = False


def register_kind(kind: Kind | type[Kind]) -> Kind | type[Kind]:
    """Register a kind (an instance, or a class, which is instantiated); usable as a class decorator.

    Raises:
        ConfigError: the name is empty or already registered (so a plug-in cannot silently
            replace a built-in kind).
    """
    instance = kind() if isinstance(kind, type) else kind
    if not isinstance(instance, Kind):
        raise ConfigError(f"register_kind: expected a Kind subclass or instance, got {type(instance).__name__}")
    name = instance.name
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ConfigError(f"register_kind: {type(instance).__name__}.name must be a non-empty identifier, got {name!r}")
    if name in _KINDS:
        raise ConfigError(f"register_kind: task kind {name!r} is already registered "
                          f"(by {type(_KINDS[name]).__module__}.{type(_KINDS[name]).__qualname__})")
    _KINDS[name] = instance
    return kind


def unregister_kind(name: str) -> None:
    """Remove a registered kind (tests and interactive sessions that re-register)."""
    _KINDS.pop(str(name), None)


def _ensure_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        # the built-in kinds register themselves on import
        from . import classification, detection, multilabel, segmentation, segmentation3d  # noqa: F401


def get_kind(name: object) -> Kind:
    """The registered kind named ``name`` (a string or a ``TaskKind`` member).

    Raises:
        ConfigError: unknown name (the message lists close matches and the valid names).
    """
    _ensure_builtins()
    key = str(getattr(name, "value", name))
    return _KINDS[look_up_option(key, _KINDS, what="task kind")]


def stored_task_kinds(root: object) -> dict[str, Kind]:
    """Self-described tasks of database folder ``root`` (kinds with a ``manifest``, whose
    tasks are not ``database.yaml`` entries): task name -> kind, sorted by name."""
    _ensure_builtins()
    from pathlib import Path

    found = {task: kind for kind in _KINDS.values() for task in kind.stored_tasks(Path(str(root)))}
    return dict(sorted(found.items()))


def list_kinds(pattern: str = "*") -> list[str]:
    """Sorted names of the registered kinds matching a shell-style ``pattern``."""
    _ensure_builtins()
    return sorted(n for n in _KINDS if fnmatch.fnmatchcase(n, pattern))
