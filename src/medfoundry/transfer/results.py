"""The results store of a transfer sweep: one record per run, kept as JSON and CSV.

Files in the sweep folder::

    results.json    list of run records (below), including the bootstrap replicates
    results.csv     the same runs, one row each, metrics flattened, no replicates

A record::

    {"run_id": "toy_cls__random__finetune__f0.1__s0", "status": "ok",
     "task": str, "kind": str, "role": str | None, "group": str,
     "encoder": label, "encoder_kind": "random" | "single-task" | "multi-task" | "weights",
     "encoder_source": str, "mode": "frozen" | "finetune", "fraction": float, "seed": int,
     "n_train": int, "n_val": int, "n_test": int,
     "primary_metric": str, "primary": float,            # on the test split
     "chance": float,                                     # chance level of the primary metric
     "metrics": {name: float},                            # every test metric
     "val_primary": float, "steps": int, "best_step": int, "epochs": float, "time_s": float,
     "bootstrap": [float] * B,                            # primary on B paired test resamples
     "classes": [str], "confusion": [[int]]}              # classification only: test counts, rows true class

A failed run is kept as ``{"run_id", "status": "failed", "error", ...}`` and retried on resume.

Both files are rewritten atomically after every run, so an interrupted sweep resumes by
skipping the run ids already present with ``status == "ok"``. A sweep with worker processes
stores records as they finish and puts them in plan order when it ends, so ``results.json``
is the same whatever the number of workers.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable

from ..errors import DataError
from ..utils import atomic_write_json, atomic_write_text

__all__ = ["ResultStore", "run_id", "RESULTS_JSON", "RESULTS_CSV"]

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
_CSV_FIELDS = ["run_id", "status", "task", "kind", "role", "encoder", "encoder_kind", "mode", "fraction", "seed",
               "n_train", "n_val", "n_test", "primary_metric", "primary", "val_primary", "steps", "best_step",
               "epochs", "time_s"]


def run_id(task: str, encoder: str, mode: str, fraction: float, seed: int) -> str:
    """Stable identifier of one run of a sweep."""
    return f"{task}__{encoder}__{mode}__f{fraction:g}__s{seed}"


def _clean(x: Any) -> Any:
    """NaN/inf become None so the JSON is standard (and ``json.loads`` in browsers accepts it)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


class ResultStore:
    """Run records of one sweep folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.records: list[dict[str, Any]] = []
        path = self.folder / RESULTS_JSON
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise DataError(f"results file is not valid JSON: {err}", path=path) from err
            if not isinstance(data, list):
                raise DataError("results file must hold a list of run records", path=path)
            self.records = data

    def __len__(self) -> int:
        return len(self.records)

    def done(self) -> set[str]:
        return {r["run_id"] for r in self.records if r.get("status") == "ok"}

    def add(self, record: dict[str, Any]) -> None:
        """Add (or replace, by run id) one record and rewrite both files atomically."""
        record = _clean(record)
        self.records = [r for r in self.records if r.get("run_id") != record["run_id"]] + [record]
        self.save()

    def save(self) -> None:
        atomic_write_json(self.folder / RESULTS_JSON, self.records)
        atomic_write_text(self.folder / RESULTS_CSV, self.to_csv())

    def to_csv(self, records: Iterable[dict[str, Any]] | None = None) -> str:
        records = list(self.records if records is None else records)
        metric_names = sorted({k for r in records for k in (r.get("metrics") or {})})
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(_CSV_FIELDS + [f"test/{m}" for m in metric_names])
        for r in records:
            metrics = r.get("metrics") or {}
            row = [r.get(k) for k in _CSV_FIELDS] + [metrics.get(m) for m in metric_names]
            writer.writerow(["" if v is None else v for v in row])
        return buf.getvalue()
