"""Official Learn2Reg evaluation configurations (MDL-UzL/L2R ``evaluation/*.json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RegistrationError
from .files import OFFICIAL_METRICS, Pair, _mark_long_names, parse_case_name, read_json

__all__ = ["EvaluationMethod", "EvaluationConfig", "load_evaluation_config", "evaluation_config_from_dict"]


# --------------------------------------------------------------------------------------------
# Official evaluation configs (MDL-UzL/L2R evaluation/*.json)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationMethod:
    """One entry of ``evaluation_methods``: the display name, the metric and its options.

    ``key`` is the name the results use: ``sdlogj_official``, ``dice``, ``hd95``, ``tre_lm``
    (landmarks) or ``tre_kp`` (keypoints).
    """

    name: str
    metric: str
    labels: tuple[int, ...] = ()
    dest: str | None = None

    @property
    def key(self) -> str:
        if self.metric == "sdlogj":
            return "sdlogj_official"
        if self.metric == "tre":
            return "tre_kp" if self.dest == "keypoints" else "tre_lm"
        return self.metric


@dataclass
class EvaluationConfig:
    """An evaluation configuration in the official schema.

    Attributes:
        task_name: the task (e.g. ``LungCT``).
        methods: the metrics to compute.
        expected_shape: the field shape (H, W, D, 3) or ``None`` to take it from the images.
        pairs: evaluation pairs (paths relative to the dataset root).
        masked: whether SDlogJ is computed inside the fixed mask (``masksTr``).
        version: ``eval_config_version``.
        source: the file it was read from, if any.
    """

    task_name: str
    methods: list[EvaluationMethod]
    expected_shape: tuple[int, ...] | None
    pairs: list[Pair]
    masked: bool = False
    version: float | None = None
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return [m.key for m in self.methods]

    def labels_for(self, metric: str) -> tuple[int, ...]:
        for m in self.methods:
            if m.metric == metric and m.labels:
                return m.labels
        return ()

    def to_dict(self) -> dict[str, Any]:
        """The config in the official JSON schema."""
        methods = []
        for m in self.methods:
            entry: dict[str, Any] = {"name": m.name, "metric": m.metric}
            if m.labels:
                entry["labels"] = list(m.labels)
            if m.dest:
                entry["dest"] = m.dest
            methods.append(entry)
        return {
            "task_name": self.task_name,
            "evaluation_methods": methods,
            "expected_shape": None if self.expected_shape is None else list(self.expected_shape),
            "eval_pairs": [{"fixed": p.fixed, "moving": p.moving} for p in self.pairs],
            "eval_config_version": self.version,
            "masked_evaluation": self.masked,
        }


def _config_error(path: Any, key: str, message: str) -> RegistrationError:
    return RegistrationError(f"{path}: [{key}] {message}")


def evaluation_config_from_dict(data: dict[str, Any], source: str | None = None) -> EvaluationConfig:
    """Validate a dict in the official evaluation-config schema (see :func:`load_evaluation_config`)."""
    where = source or "<evaluation config>"
    if not isinstance(data, dict):
        raise RegistrationError(f"{where}: expected a JSON object")
    for key in ("task_name", "evaluation_methods", "eval_pairs"):
        if key not in data:
            raise _config_error(where, key, "missing (official schema: task_name, evaluation_methods, "
                                "expected_shape, eval_pairs, eval_config_version, masked_evaluation)")
    methods = []
    if not isinstance(data["evaluation_methods"], list) or not data["evaluation_methods"]:
        raise _config_error(where, "evaluation_methods", "expected a non-empty list")
    for i, entry in enumerate(data["evaluation_methods"]):
        if not isinstance(entry, dict) or "metric" not in entry:
            raise _config_error(where, f"evaluation_methods][{i}", "expected an object with 'name' and 'metric'")
        metric = str(entry["metric"])
        if metric not in OFFICIAL_METRICS:
            raise _config_error(where, f"evaluation_methods][{i}][metric",
                                f"unknown metric {metric!r}; expected one of {', '.join(OFFICIAL_METRICS)}")
        labels = entry.get("labels", [])
        if metric in ("dice", "hd95") and not labels:
            raise _config_error(where, f"evaluation_methods][{i}][labels", f"{metric} needs a list of labels")
        try:
            labels = tuple(int(v) for v in labels)
        except (TypeError, ValueError) as err:
            raise _config_error(where, f"evaluation_methods][{i}][labels", "expected integers") from err
        dest = entry.get("dest")
        if metric == "tre" and dest not in ("landmarks", "keypoints"):
            raise _config_error(where, f"evaluation_methods][{i}][dest",
                                f"tre needs dest 'landmarks' or 'keypoints', got {dest!r}")
        methods.append(EvaluationMethod(str(entry.get("name", metric)), metric, labels, dest))
    shape = data.get("expected_shape")
    if shape is not None:
        if not isinstance(shape, list) or len(shape) not in (3, 4) or not all(isinstance(s, int) and s > 0 for s in shape):
            raise _config_error(where, "expected_shape", f"expected [H, W, D, 3] of positive integers, got {shape!r}")
        shape = tuple(shape)
    raw_pairs = data["eval_pairs"]
    if not isinstance(raw_pairs, list) or not raw_pairs:
        raise _config_error(where, "eval_pairs", "expected a non-empty list of {fixed, moving}")
    pairs = []
    for i, entry in enumerate(raw_pairs):
        if not isinstance(entry, dict) or "fixed" not in entry or "moving" not in entry:
            raise _config_error(where, f"eval_pairs][{i}", "expected an object with 'fixed' and 'moving'")
        try:
            parse_case_name(entry["fixed"])
            parse_case_name(entry["moving"])
        except RegistrationError as err:
            raise _config_error(where, f"eval_pairs][{i}", str(err)) from err
        pairs.append((str(entry["fixed"]), str(entry["moving"])))
    known = {"task_name", "evaluation_methods", "expected_shape", "eval_pairs", "eval_config_version",
             "masked_evaluation"}
    version = data.get("eval_config_version")
    return EvaluationConfig(
        task_name=str(data["task_name"]),
        methods=methods,
        expected_shape=shape,
        pairs=_mark_long_names(pairs),
        masked=bool(data.get("masked_evaluation", False)),
        version=None if version is None else float(version),
        source=source,
        extra={k: v for k, v in data.items() if k not in known},
    )


def load_evaluation_config(path: str | Path) -> EvaluationConfig:
    """Read an official Learn2Reg evaluation config (``TASK_VAL_evaluation_config.json``).

    Schema: ``task_name``; ``evaluation_methods``, a list of ``{name, metric, labels?, dest?}``
    with metric ``sdlogj`` | ``dice`` | ``hd95`` | ``tre`` (``dest`` = ``landmarks`` or
    ``keypoints`` for tre; labels for dice/hd95); ``expected_shape`` [H, W, D, 3];
    ``eval_pairs`` [{fixed, moving}] relative to the dataset root; ``eval_config_version``;
    ``masked_evaluation`` (SDlogJ inside ``masksTr`` of the fixed image).

    Raises:
        RegistrationError: missing file, invalid JSON, or a key that breaks the schema (named).
    """
    data = read_json(path, "evaluation config")
    return evaluation_config_from_dict(data, source=str(path))


