"""Score a folder of predictions against a folder of references with one protocol.

``results.json`` (and the returned dict) holds:

* ``protocol``: name, description, official source; ``pred_dir``, ``ref_dir``;
* ``cases``: per case ``case``, ``ref``, ``pred`` (``null`` when missing), ``status``
  (``"ok"`` or ``"failed"``), ``error`` (one line or ``null``) and ``figures``
  ``{region: {figure: value}}``. A missing prediction is a failure scored with the
  protocol's worst case; a case that cannot be read (shape or affine mismatch, bad labels) is a
  failure without figures;
* ``unmatched_predictions``: prediction files no reference uses;
* ``n_cases``, ``n_failed``;
* ``aggregates``: ``{region: {figure: {mean, median, std, n, n_nan, n_inf}}}`` over the cases
  with figures; ``mean``/``median``/``std`` (population) skip NaN and inf, which are counted.

NaN and inf are written as JSON ``NaN`` / ``Infinity`` (Python's ``json`` reads them back).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...errors import ConfigError, MedfoundryError
from .cases import Case, check_same_grid, match_cases, read_label_map
from .registry import SegmentationProtocol, get_protocol

__all__ = ["evaluate_segmentation", "evaluate_case_files", "aggregate"]


def evaluate_case_files(case: Case, protocol: SegmentationProtocol) -> dict[str, Any]:
    """Score one case; every package error becomes a failed case with a one-line message."""
    record: dict[str, Any] = {"case": case.name, "ref": str(case.ref),
                              "pred": None if case.pred is None else str(case.pred),
                              "status": "ok", "error": None, "figures": {}}
    try:
        ref = read_label_map(case.ref)
        if case.pred is None:
            record.update(status="failed", error="prediction missing; scored as the protocol's worst case",
                          figures=protocol.missing_case(ref.array, ref.spacing))
            return record
        pred = read_label_map(case.pred)
        check_same_grid(pred, ref, case.pred, case.ref)
        record["figures"] = protocol.evaluate_case(pred.array, ref.array, ref.spacing)
    except MedfoundryError as err:
        message = str(err)
        if case.pred is not None and str(case.pred) not in message and str(case.ref) not in message:
            message = f"{case.pred} vs {case.ref}: {message}"
        record.update(status="failed", error=message, figures={})
    return record


def _summary(values: list[float]) -> dict[str, float | int]:
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    nan = float("nan")
    return {
        "mean": float(finite.mean()) if finite.size else nan,
        "median": float(np.median(finite)) if finite.size else nan,
        "std": float(finite.std()) if finite.size else nan,
        "n": int(array.size),
        "n_nan": int(np.isnan(array).sum()),
        "n_inf": int(np.isinf(array).sum()),
    }


def aggregate(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | int]]]:
    """Per region and figure: mean, median, std over finite values; counts of NaN and inf."""
    collected: dict[str, dict[str, list[float]]] = {}
    for record in records:
        for region, figures in record["figures"].items():
            for figure, value in figures.items():
                collected.setdefault(region, {}).setdefault(figure, []).append(float(value))
    return {region: {figure: _summary(values) for figure, values in figures.items()}
            for region, figures in collected.items()}


def evaluate_segmentation(pred_dir: str | Path, ref_dir: str | Path, protocol: str | SegmentationProtocol = "default",
                          out: str | Path | None = None, workers: int = 1, progress: bool = False,
                          on_case: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Score every reference in ``ref_dir`` against its prediction in ``pred_dir``.

    Args:
        pred_dir: folder of predicted label maps (.nii.gz / .nii).
        ref_dir: folder of reference label maps; files are paired by case name
            (:func:`~medfoundry.evaluation.protocols.cases.case_name`).
        protocol: a registered name (``list_protocols()``) or a protocol object.
        out: results JSON to write atomically; ``None`` writes nothing.
        workers: processes scoring cases in parallel (1 = in this process).
        progress: show a progress bar.
        on_case: called with each case record as it completes.

    Returns:
        The results dict described in the module docstring.

    Raises:
        DataError: a folder is missing or holds no label maps, or two files give one case name.
        ConfigError: unknown protocol or ``workers < 1``.
    """
    protocol = get_protocol(protocol)
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    cases, unmatched = match_cases(pred_dir, ref_dir)
    records: list[dict[str, Any] | None] = [None] * len(cases)

    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task(f"{protocol.name}", total=len(cases))
    try:
        def done(index: int, record: dict[str, Any]) -> None:
            records[index] = record
            if on_case is not None:
                on_case(record)
            if bar is not None:
                bar.advance(task)

        if workers == 1 or len(cases) <= 1:
            for i, case in enumerate(cases):
                done(i, evaluate_case_files(case, protocol))
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(cases))) as pool:
                futures = {pool.submit(evaluate_case_files, case, protocol): i for i, case in enumerate(cases)}
                for future in as_completed(futures):
                    done(futures[future], future.result())
    finally:
        if bar is not None:
            bar.stop()

    final = [r for r in records if r is not None]
    results = {
        "protocol": protocol.info(),
        "pred_dir": str(pred_dir),
        "ref_dir": str(ref_dir),
        "n_cases": len(final),
        "n_failed": sum(r["status"] != "ok" for r in final),
        "cases": final,
        "unmatched_predictions": [str(p) for p in unmatched],
        "aggregates": aggregate(final),
    }
    if out is not None:
        from ...utils import atomic_write_json

        atomic_write_json(out, results)
    return results
