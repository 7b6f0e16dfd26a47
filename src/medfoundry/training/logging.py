"""Run log: ``metrics.jsonl`` (one JSON object per line), optional TensorBoard, progress bar.

Line kinds (field ``kind``):
    ``train``: ``round`` (1-based count of rounds done), ``lr``, ``losses`` {task: float},
    ``grad_norm`` (shared gradient L2 norm before clipping), ``seconds`` (round wall time),
    ``images`` (images seen in the round, all ranks).
    ``eval``: ``round``, ``split``, ``metrics`` {task: {metric: float}}.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

__all__ = ["RunLogger", "read_metrics"]

METRICS_FILE = "metrics.jsonl"


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN/inf; null reads as "undefined" in every consumer
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return _clean(obj.item())
    return obj


class RunLogger:
    """Appends to ``RUN/metrics.jsonl`` (and TensorBoard when asked and installed).

    Args:
        run_dir: run folder; ``None`` logs nowhere (e.g. non-main ranks).
        tensorboard: also write TensorBoard scalars under ``RUN/tensorboard``.
        resume_round: when resuming from the checkpoint of this round, lines of later rounds
            (written before the interruption, to be recomputed) are dropped first.
    """

    def __init__(self, run_dir: str | Path | None, tensorboard: bool = False, resume_round: int | None = None):
        self.path = None if run_dir is None else Path(run_dir) / METRICS_FILE
        self._tb = None
        if self.path is None:
            return
        if resume_round is not None and self.path.is_file():
            from ..utils import atomic_write_text

            # A line cut short by a kill mid-write does not parse: it goes too.
            keep = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if (record := _parse(line)) is not None and record.get("round", 0) <= resume_round]
            atomic_write_text(self.path, "".join(line + "\n" for line in keep))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                # Asked for and missing: say so before any work, rather than a run without its logs.
                from ..errors import ConfigError

                raise ConfigError("config field 'tensorboard': the tensorboard package is not installed "
                                  "(pip install -c constraints.txt tensorboard, or pass --no-tensorboard)") from err
            else:
                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        record = _clean(record)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=False) + "\n")
            fh.flush()
        if self._tb is not None:
            step = int(record.get("round", 0))
            if record.get("kind") == "train":
                for task, loss in record.get("losses", {}).items():
                    if loss is not None:
                        self._tb.add_scalar(f"loss/{task}", loss, step)
                for key in ("lr", "grad_norm"):
                    if record.get(key) is not None:
                        self._tb.add_scalar(key, record[key], step)
            elif record.get("kind") == "eval":
                for task, metrics in record.get("metrics", {}).items():
                    for name, value in metrics.items():
                        if isinstance(value, (int, float)):
                            self._tb.add_scalar(f"{record.get('split', 'val')}/{task}/{name}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: str | Path, kind: str | None = None) -> Iterator[dict[str, Any]]:
    """Records of ``RUN/metrics.jsonl`` (optionally only one ``kind``)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        record = _parse(line)
        if record is not None and (kind is None or record.get("kind") == kind):
            yield record


def _parse(line: str) -> dict[str, Any] | None:
    """One record, or ``None`` for a blank or truncated line (a run killed mid-write)."""
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None
