"""Score a head of one or several runs on a database task under test-time methods and ensembles:
the engine of ``medfoundry shift evaluate``.

For each method in ``methods`` (``none``, ``tta``, ``entropy``, ``etta``; see
:mod:`.head_adapt`) every run predicts the split through :mod:`medfoundry.inference`
(:func:`~medfoundry.inference.run_batches` with the method's predictor wrapper), its
probabilities are combined (``ensemble``: ``mean``, ``vote``, ``staple``), and the result is
scored with the task kind's own metrics (primary metric: balanced accuracy, AUROC or Dice)
plus the expected calibration error (:mod:`.calibration`: top-label over samples for
classification, every entry for multilabel, foreground-aware pixels for segmentation).

A run is a ``medfoundry pretrain`` run folder (its ``model/``) or any ``save_pretrained``
folder holding a head for the task (a fine-tuned model saved with ``save_pretrained``).

Example:
    >>> report = evaluate_heads(["runs/mt"], "db", "xray_cls", methods=("none", "tta"), device="cpu")
    >>> report["methods"]["tta"]["score"], report["methods"]["tta"]["ece"]
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .adapt import ADAPT_METHODS, AdaptConfig
from .calibration import calibration_bins, classification_bins, ece_from_bins, merge_bins
from .ensemble import majority_vote, mean_probabilities, staple, vote_classes

__all__ = ["load_run_model", "resolve_head", "evaluate_heads", "HEAD_ENSEMBLES"]

HEAD_ENSEMBLES = ("mean", "vote", "staple")


def load_run_model(run: str | Path, device: torch.device | str = "cpu") -> Any:
    """The :class:`~medfoundry.models.FoundationModel` of a run folder (``RUN/model``) or of a
    ``save_pretrained`` folder, in eval mode on ``device``."""
    from ..models import FoundationModel

    folder = Path(run)
    if (folder / "model" / "config.json").is_file():
        folder = folder / "model"
    if not (folder / "config.json").is_file():
        raise DataError("neither a run folder with model/ nor a save_pretrained folder (no config.json); "
                        "transfer runs keep no model, save one with FoundationModel.save_pretrained", path=run)
    return FoundationModel.from_pretrained(folder, map_location=device).eval()


def resolve_head(model: Any, run: Any, spec: Any, head: str | None = None) -> str:
    """The head of ``model`` that predicts database task ``spec``: ``head`` if given, else the
    task's own name, else (a shifted copy ``T__<corruption>_s<severity>`` of ``medfoundry shift
    make``) the source task ``T``; its classes must be the task's."""
    specs = getattr(model, "task_specs", {})
    name = head
    if name is None:
        name = spec.name
        source, sep, condition = spec.name.rpartition("__")
        if name not in specs and sep and re.fullmatch(r"[a-z]+_s\d", condition):
            name = source
    if name not in specs:
        raise ConfigError(f"{run}: the model has no head for task {name!r} (heads: "
                          f"{', '.join(sorted(specs)) or 'none'}); pass --head")
    if tuple(specs[name].classes) != tuple(spec.classes):
        raise ConfigError(f"{run}: head {name!r} predicts classes {list(specs[name].classes)}, the database "
                          f"task {spec.name!r} has {list(spec.classes)}")
    return name


def _kind_name(spec: Any) -> str:
    return str(getattr(spec.kind, "value", spec.kind))


def _combine(probs: list[np.ndarray], ensemble: str, kind: str, k: int) -> tuple[np.ndarray | None, np.ndarray]:
    """(probabilities or None, predictions) of one batch from each run's (B, K, ...) probabilities."""
    if len(probs) == 1 or ensemble == "mean":
        p = probs[0] if len(probs) == 1 else mean_probabilities(probs)
        if kind == "segmentation":
            return p, p.argmax(1).astype(np.int64)
        return p, p
    if kind == "segmentation":
        maps = [q.argmax(1).astype(np.uint8) for q in probs]
        combine = majority_vote if ensemble == "vote" else staple
        return None, np.stack([combine([m[b] for m in maps]) for b in range(len(maps[0]))]).astype(np.int64)
    if kind == "multilabel":  # share of runs voting positive: a score, not a calibrated probability
        return None, np.mean([q > 0.5 for q in probs], axis=0).astype(np.float32)
    return None, np.eye(k, dtype=np.float32)[vote_classes(probs, k)]


def evaluate_heads(runs: Sequence[str | Path], database: str | Path, task: str, *, split: str = "test",
                   methods: Sequence[str] = ("none",), ensemble: str = "mean", adapt: AdaptConfig | None = None,
                   rotate: bool = True, batch_size: int = 16, max_samples: int | None = None, device: str = "auto",
                   seed: int = 0, head: str | None = None, out: str | Path | None = None, progress: Any = None
                   ) -> dict[str, Any]:
    """Scores, calibration, time and memory per test-time method of one task head.

    Args:
        runs: one run (or ``save_pretrained`` folder), or several for an ensemble.
        database: the database root; ``task`` its task name; ``split`` the split scored.
        methods: test-time methods, each scored on its own (``none`` is the before).
        ensemble: how several runs combine: ``mean`` (probabilities), ``vote`` (majority of
            predicted classes / label maps), ``staple`` (segmentation only).
        adapt: settings of ``entropy`` / ``etta`` (``method`` is replaced per method).
        rotate: ``tta`` adds in-plane quarter turns to the flips.
        batch_size: images per forward pass (``entropy`` / ``etta`` adapt per image).
        max_samples: keep the first samples of the split.
        head: the model's head predicting ``task`` (default: :func:`resolve_head`).
        out: results JSON to write (atomic), with ``<stem>_reliability.{png,svg}`` beside it.
        progress: called as ``progress(done, total)`` after each batch of each method.

    Returns:
        ``{"task", "kind", "split", "runs", "n", "ensemble", "methods": {method: {"score",
        "primary_metric", "metrics", "ece", "reliability_bins", "seconds_per_case",
        "peak_memory_mb", "members"?, "adapt"?}}}``.
    """
    from ..data.database import MultiTaskDatabase
    from ..inference import as_image_batches, compose, run_batches
    from ..inference.predictors import activate, head_activation
    from ..tasks import get_kind
    from ..utils import atomic_write_json, resolve_device, seed_everything
    from .head_adapt import HeadAdapter

    runs = list(runs)
    if not runs:
        raise ConfigError("evaluate_heads: give at least one run")
    bad = [m for m in methods if m not in ADAPT_METHODS]
    if bad or not methods:
        raise ConfigError(f"--adapt: expected one or more of {', '.join(ADAPT_METHODS)}, got {list(methods)}")
    if ensemble not in HEAD_ENSEMBLES:
        raise ConfigError(f"--ensemble: expected one of {', '.join(HEAD_ENSEMBLES)}, got {ensemble!r}")
    db = MultiTaskDatabase.open(database)
    spec = db.task(task)
    kind_name, kind = _kind_name(spec), get_kind(spec.kind)
    if kind_name not in ("classification", "multilabel", "segmentation"):
        raise ConfigError(f"task {task!r} is a {kind_name} task; shift evaluate scores classification, multilabel "
                          "and 2D segmentation heads")
    if ensemble == "staple" and kind_name != "segmentation" and len(runs) > 1:
        raise ConfigError("--ensemble staple combines label maps: segmentation tasks only")
    dev = resolve_device(device)
    models = [load_run_model(r, dev) for r in runs]
    heads = {resolve_head(m, r, spec, head) for r, m in zip(runs, models)}
    if len(heads) != 1:
        raise ConfigError(f"the runs name the head of task {task!r} differently ({sorted(heads)}); pass --head")
    head = heads.pop()
    act = head_activation(models[0], head)
    chosen = np.asarray(db.split_indices(task, split), dtype=np.int64)
    if max_samples is not None:
        chosen = chosen[:max_samples]
    if len(chosen) == 0:
        raise DataError(f"task {task!r} has no sample in split {split!r}", field="split")
    targets = [db.target(task, int(i)) for i in chosen]
    spacings = [db.spacing(task, int(i)) for i in chosen]
    spacings_or_none = None if any(s is None for s in spacings) else spacings
    k = len(spec.classes)
    base = adapt or AdaptConfig()
    report: dict[str, Any] = {"task": task, "head": head, "kind": kind_name, "split": split, "database": str(database),
                              "runs": [str(r) for r in runs], "n": int(len(chosen)),
                              "ensemble": ensemble if len(runs) > 1 else None, "rotate": bool(rotate),
                              "adapt_settings": base.to_dict(), "methods": {}}
    total_steps, done = len(methods) * -(-len(chosen) // batch_size), 0
    for method in methods:
        seed_everything(seed)
        cfg = base.replace(method=method)
        adapters = [HeadAdapter(cfg, rotate=rotate) for _ in models]
        predictors = [compose(a) for a in adapters]
        preds: list[Any] = []
        member_preds: list[list[Any]] = [[] for _ in models]
        tables, member_tables = [], [[] for _ in models]
        start = time.perf_counter()
        for a in range(0, len(chosen), batch_size):
            idx = chosen[a:a + batch_size]
            batch = as_image_batches(np.stack([db.image(task, int(i)) for i in idx]), len(idx))
            probs = []
            for m, (model, predictor) in enumerate(zip(models, predictors)):
                with torch.no_grad():
                    decoded = run_batches(lambda b, model=model, predictor=predictor:
                                          predictor(model, head, b[0].to(dev)),
                                          batch, 1, lambda o: list(activate(o, act).cpu().numpy()))
                p = np.stack(decoded).astype(np.float32)
                probs.append(p)
                member_preds[m].extend(p.argmax(1).astype(np.int64) if kind_name == "segmentation" else p)
                if len(models) > 1:
                    member_tables[m].append(_bins(p, targets[a:a + len(idx)], kind_name, act))
            combined, pred = _combine(probs, ensemble, kind_name, k)
            preds.extend(pred)
            if combined is not None:
                tables.append(_bins(combined, targets[a:a + len(idx)], kind_name, act))
            done += 1
            if progress is not None:
                progress(done, total_steps)
        seconds = time.perf_counter() - start
        entry = _score(kind, spec, preds, targets, spacings_or_none, tables)
        per_case = np.sum([[r["seconds"] for r in ad.records] for ad in adapters], axis=0)
        entry.update({"seconds": seconds, "seconds_per_case": float(per_case.mean()),
                      "seconds_per_case_max": float(per_case.max()),
                      "peak_memory_mb": float(max(r["peak_memory_mb"] for ad in adapters for r in ad.records))})
        if method in ("entropy", "etta"):
            recs = [r for ad in adapters for r in ad.records]
            entry["adapt"] = {"loss_before": float(np.mean([r["loss_before"] for r in recs])),
                              "loss_after": float(np.mean([r["loss_after"] for r in recs])),
                              "steps": cfg.steps, "lr": cfg.lr, "mode": cfg.mode}
        if len(models) > 1:
            entry["members"] = [_score(kind, spec, mp, targets, spacings_or_none, mt, brief=True)
                                for mp, mt in zip(member_preds, member_tables)]
        report["methods"][method] = entry
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tables_by_method = {m: np.asarray(e["reliability_bins"]) for m, e in report["methods"].items()
                            if e.get("reliability_bins") is not None}
        if tables_by_method:
            from .calibration import reliability_diagram

            written = reliability_diagram(tables_by_method, out.with_name(out.stem + "_reliability.png"),
                                          title=f"reliability ({task}, {split})")
            report["reliability_diagram"] = [str(p) for p in written]
        atomic_write_json(out, report)
    return report


def _bins(probabilities: np.ndarray, targets: Sequence[Any], kind: str, act: str) -> np.ndarray:
    if kind == "segmentation":
        return merge_bins([calibration_bins(p, np.asarray(t), activation="softmax") for p, t in
                           zip(probabilities, targets)])
    labels = np.stack([np.asarray(t) for t in targets]) if kind == "multilabel" else \
        np.asarray([int(t) for t in targets], dtype=np.int64)
    return classification_bins(probabilities, labels, activation=act)


def _score(kind: Any, spec: Any, preds: list[Any], targets: list[Any], spacings: Any, tables: list[np.ndarray],
           brief: bool = False) -> dict[str, Any]:
    metrics = kind.metrics(spec, preds, targets, spacings)
    pooled = merge_bins(tables) if tables else None
    out: dict[str, Any] = {"primary_metric": kind.primary_metric, "score": float(metrics[kind.primary_metric]),
                           "ece": ece_from_bins(pooled) if pooled is not None else None}
    if not brief:
        out["metrics"] = {key: float(v) for key, v in metrics.items()}
        out["reliability_bins"] = pooled.tolist() if pooled is not None else None
    return out
