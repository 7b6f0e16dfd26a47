"""Data-efficiency sweeps: every (task, encoder, mode, seed, fraction) run, resumable.

For each downstream task the sweep trains on nested, stratified subsets of the train split
(``MultiTaskDatabase.fraction_indices``), early-stops on the validation split and scores the
best weights on the **test split only**. Results go to ``OUT/results.{json,csv}`` after every
run (see :mod:`.results`), with ``OUT/config.json`` and ``OUT/versions.json`` beside them
(written once the first run succeeds, so a sweep that fails at once leaves a new ``OUT``
as it found it); a rerun with the same ``OUT`` skips the runs already done.

Runs are independent, so ``workers=N`` spreads them over N processes (``spawn``, each with
``cores // N`` torch threads): the frozen runs that share one feature extraction (same task,
encoder and encoder seed) form one job, every fine-tuning run is a job of its own. Every run
seeds itself, so the records do not depend on N (``tests/transfer/test_sweep_workers.py``);
they are stored as they finish, and in plan order once the sweep ends.

Example:
    >>> from medfoundry.transfer import run_sweep
    >>> store = run_sweep("demo_out/db", encoders=["random", "mt=demo_out/pretrain"],
    ...                   tasks=["derm_cls"], out="demo_out/transfer", fractions=(0.01, 0.1, 1.0), seeds=2)
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from rich.console import Console

from .. import __version__
from ..data.database import MultiTaskDatabase
from ..data.validate import check_targets
from ..errors import ConfigError, MedfoundryError
from ..tasks.base import to_numpy
from ..evaluation.tasks import chance_level, primary_bootstrap, primary_metric, task_metrics
from ..training.multitask import PlainProgress
from ..utils import atomic_write_json, resolve_device
from .config import TransferConfig
from .sources import EncoderSource, build_model, drop_inapplicable, parse_encoder, prepare_encoder
from .finetune import run_finetune
from .loop import TaskData
from .probe import FeatureCache, extract_features, run_frozen
from .results import ResultStore, run_id
from .splits import run_splits

__all__ = ["run_sweep", "run_transfer", "plan_runs", "reference_only_tasks", "software_versions", "BOOTSTRAP_SEED",
           "available_cores", "threads_per_worker"]

# One fixed seed for the test-case resamples, so replicate b is the same resample in every run
# of a task (what the seed x case bootstrap of the report needs).
BOOTSTRAP_SEED = 0


def software_versions(device: torch.device | None = None) -> dict[str, Any]:
    """Versions of Python, the platform and the numerical stack (for the report)."""
    import importlib.metadata as md

    out: dict[str, Any] = {"medfoundry": __version__, "python": sys.version.split()[0],
                           "platform": platform.platform(), "torch_threads": torch.get_num_threads()}
    for pkg in ("torch", "numpy", "scipy", "monai", "matplotlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    if device is not None:
        out["device"] = str(device)
        if device.type == "cuda":
            out["gpu"] = torch.cuda.get_device_name(device)
    return out


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Torch threads of each of ``workers`` processes: the cores shared out, at least one.

    More threads than free cores make OpenMP threads spin-wait on each other (measured 1.5 s
    per pretraining round with 1 thread vs up to 50 s with 2 threads when a second process
    held one of 2 cores), so the pool never oversubscribes.
    """
    return max(1, (cores or available_cores()) // max(1, workers))


def plan_runs(tasks: Sequence[str], sources: Sequence[EncoderSource], cfg: TransferConfig,
              random_finetune: bool = True, roles: dict[str, str | None] | None = None
              ) -> list[tuple[str, EncoderSource, str, int, float]]:
    """Every ``(task, source, mode, seed, fraction)`` of a sweep, in execution order.

    With ``cfg.goal_fractions`` a task whose role (``roles[task]``) has a goal also runs that
    goal's fraction (and 100 %). Every goal is judged against the reference, random init
    fine-tuned on 100 %: when ``finetune`` is not among the requested modes and
    ``random_finetune`` is set, random-init encoders run that one reference (100 %, every
    seed) on the tasks with a goal, and nothing else fine-tuned (:func:`reference_only_tasks`
    names those tasks, so the caller can say so).
    """
    plan = []
    reference_tasks = set(reference_only_tasks(tasks, cfg, roles)) if random_finetune else set()
    for task in tasks:
        fractions = set(cfg.fractions)
        goal = _goal(task, cfg, roles)
        if goal is not None:
            fractions |= {goal, 1.0}
        for src in sources:
            runs = [(mode, sorted(fractions)) for mode in cfg.modes]
            if src.kind == "random" and task in reference_tasks:
                runs.append(("finetune", [1.0]))
            for mode, mode_fractions in runs:
                for seed in range(cfg.seeds):
                    for fraction in mode_fractions:
                        plan.append((task, src, mode, seed, fraction))
    return plan


def _goal(task: str, cfg: TransferConfig, roles: dict[str, str | None] | None) -> float | None:
    """The fraction the report judges a goal at on ``task`` (``None``: no goal is judged there)."""
    return cfg.goal_fraction((roles or {}).get(task)) if cfg.goal_fractions else None


def reference_only_tasks(tasks: Sequence[str], cfg: TransferConfig,
                         roles: dict[str, str | None] | None = None) -> list[str]:
    """Tasks on which a sweep without ``finetune`` mode still fine-tunes random init on 100 %
    of the data, because a goal of the report is judged against that reference."""
    if "finetune" in cfg.modes:
        return []
    return [t for t in tasks if _goal(t, cfg, roles) is not None]


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]transfer[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.description}"), disable=not enabled, transient=False)


def run_sweep(database: str | Path, encoders: Sequence[str], out: str | Path, tasks: Sequence[str] | None = None,
              config: TransferConfig | None = None, baseline: bool = True, fail_fast: bool = False,
              feature_cache: FeatureCache | None = None, on_run: Callable[[dict[str, Any]], None] | None = None,
              workers: int = 1, **overrides: Any) -> ResultStore:
    """Run (or resume) a transfer / data-efficiency sweep.

    Args:
        database: database folder.
        encoders: ``--encoder`` values (see :mod:`.encoders`).
        out: output folder (created; reused to resume).
        tasks: task names (default: every task with ``group == "downstream"``).
        config: budgets; ``overrides`` (e.g. ``fractions=``, ``seeds=``, ``modes=``) replace fields.
        baseline: add the ``random`` encoder if no random-init encoder is listed.
        fail_fast: re-raise a failing run instead of recording it as ``status: failed``
            (a failed run is retried when the sweep is resumed).
        feature_cache: share frozen features between calls (default: a new cache).
        on_run: called with each new record.
        workers: processes running the runs (1: in this process, with its torch threads;
            N > 1: a ``spawn`` pool, ``cores // N`` threads each; ``feature_cache`` is then
            not used). The records are the same for every N.

    Returns:
        The :class:`ResultStore` of ``out``.

    Raises:
        ConfigError / DataError: bad encoders, tasks or settings.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"transfer: --workers {workers!r}: expected an integer >= 1")
    cfg = (config or TransferConfig()).replace(**overrides)
    db = MultiTaskDatabase.open(database)
    if tasks is None:
        tasks = db.task_names(group="downstream")
        if not tasks:
            raise ConfigError(f"{database}: no task has group 'downstream'; name the tasks with --task")
    tasks = list(dict.fromkeys(tasks))
    for t in tasks:
        db.task(t)  # unknown names fail here, with close matches
    check_targets(db, tasks)  # an out-of-range label would otherwise fail deep inside the loss
    if not encoders and not baseline:
        raise ConfigError("transfer: give at least one --encoder")
    sources = [parse_encoder(e, cfg) for e in encoders]
    if baseline and not any(s.kind == "random" for s in sources):
        sources.insert(0, parse_encoder("random", cfg))
    labels = [s.label for s in sources]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"transfer: encoder labels {dup} are used twice; name them with LABEL=PATH")
    out = Path(out)
    new_folder = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    store = ResultStore(out)
    roles = {t: db.task(t).extra.get("role") for t in tasks}
    reference_tasks = reference_only_tasks(tasks, cfg, roles) if baseline else []
    config_doc = _config_doc(out, database, tasks, sources, cfg, store, reference_tasks)
    if reference_tasks:
        Console(stderr=True).print(
            f"transfer: frozen mode only, but random init is also fine-tuned on 100 % of {', '.join(reference_tasks)}: "
            "the report's goals are judged against that reference (--no-goal-fractions skips it and the goals)",
            highlight=False, soft_wrap=True)
    plan = plan_runs(tasks, sources, cfg, random_finetune=baseline, roles=roles)
    # e.g. the classical baseline: frozen mode and pooled kinds only; say what was left out and why
    plan, not_run = drop_inapplicable(plan, {t: db.task(t) for t in tasks})
    if not_run:
        config_doc["not_applicable"] = not_run
        for s in not_run:
            Console(stderr=True).print(f"transfer: {s['encoder']} {s['mode']} on {s['task']} skipped: {s['reason']}",
                                       highlight=False, soft_wrap=True)
    try:
        _sweep(db, database, plan, out, cfg, device, store, feature_cache, fail_fast, on_run,
               lambda: (atomic_write_json(out / "config.json", config_doc),
                        atomic_write_json(out / "versions.json", {**software_versions(device),
                                                                  "sweep_workers": workers})),
               workers)
    except BaseException:
        if new_folder and not store.done():  # nothing succeeded in a folder this call created: leave no trace
            for name in ("config.json", "versions.json"):
                (out / name).unlink(missing_ok=True)
            if not any(out.iterdir()):
                out.rmdir()
        raise
    return store


Run = tuple  # (task, EncoderSource, mode, seed, fraction)


def _jobs(plan: list[Run], done: set[str]) -> list[list[Run]]:
    """The runs still to do, grouped into jobs (frozen runs sharing features go together), in plan order."""
    groups: dict[tuple, list[Run]] = {}
    for k, run in enumerate(plan):
        task, src, mode, seed, fraction = run
        if run_id(task, src.label, mode, fraction, seed) in done:
            continue
        key = ("frozen", task, src.label, seed if src.kind == "random" else None) if mode == "frozen" else (k,)
        groups.setdefault(key, []).append(run)
    return list(groups.values())


class _Runner:
    """Runs jobs in one process: the open database, the current task's data and the frozen features."""

    def __init__(self, database: str | Path, cfg: TransferConfig, device: torch.device,
                 cache: FeatureCache | None = None):
        self.db = MultiTaskDatabase.open(database)
        self.cfg, self.device = cfg, device
        self.cache = cache if cache is not None else FeatureCache()
        self.task: str | None = None
        self.data: TaskData | None = None

    def job(self, runs: list[Run], fail_fast: bool,
            on_record: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """The runs' records; ``on_record`` gets each as soon as it exists (to store it at once)."""
        out = []
        for task, src, mode, seed, fraction in runs:
            if task != self.task:  # hold one task's images (and features) at a time
                self.cache.drop(lambda k, t=self.task: k[-1] == t)
                self.task, self.data = task, TaskData(self.db, task)
            try:
                record = _one_run(self.db, self.data, src, mode, seed, fraction, self.cfg, self.device, self.cache)
            except MedfoundryError:
                raise
            except (RuntimeError, ValueError, FloatingPointError) as err:
                if fail_fast:
                    raise
                record = {"run_id": run_id(task, src.label, mode, fraction, seed), "status": "failed", "task": task,
                          "encoder": src.label, "mode": mode, "fraction": fraction, "seed": seed,
                          "error": f"{type(err).__name__}: {err}"}
            out.append(record)
            if on_record is not None:
                on_record(record)
        return out


_WORKER: dict[str, Any] = {}


def _init_worker(database: str, cfg: TransferConfig, threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    _WORKER["runner"] = _Runner(database, cfg, resolve_device(cfg.device))


def _worker_job(runs: list[Run], fail_fast: bool) -> tuple[str, Any]:
    """A job in a pool process; errors come back as text (exception classes with extra
    constructor arguments do not survive pickling)."""
    try:
        return "ok", _WORKER["runner"].job(runs, fail_fast)
    except MedfoundryError as err:
        return "error", str(err)
    except Exception as err:  # fail_fast: the run's own error, re-raised in the parent
        return "crash", f"{type(err).__name__}: {err}"


def _sweep(db: MultiTaskDatabase, database: str | Path, plan: list, out: Path,
           cfg: TransferConfig, device: torch.device, store: ResultStore, feature_cache: FeatureCache | None,
           fail_fast: bool, on_run: Callable[[dict[str, Any]], None] | None, write_meta: Callable[[], Any],
           workers: int = 1) -> None:
    """Run the plan; ``write_meta`` writes config.json and versions.json once a run has succeeded."""
    done = store.done()
    if done:
        write_meta()  # a resumed folder already has results: refresh its metadata now
    state = {"meta": bool(done), "finished": len(plan) - sum(len(j) for j in _jobs(plan, done))}
    jobs = _jobs(plan, done)
    prepared: dict[str, EncoderSource] = {}
    lines = PlainProgress("transfer runs", len(plan), cfg.progress)
    with _progress(cfg.progress) as bar:
        bar_job = bar.add_task("", total=len(plan), completed=state["finished"])
        for runs in jobs:  # single:<task> baselines pretrain here, once, before any run needs them
            for task, src, *_ in runs:
                if src.label not in prepared:
                    bar.update(bar_job, description=f"preparing encoder {src.label}")
                    prepared[src.label] = prepare_encoder(src, database, out, cfg, db.task(task).spatial_dims)
        jobs = [[(t, prepared[s.label], m, sd, f) for t, s, m, sd, f in runs] for runs in jobs]

        def record_done(record: dict[str, Any]) -> None:
            store.add(record)
            if not state["meta"] and record.get("status") == "ok":
                write_meta()
                state["meta"] = True
            if on_run is not None:
                on_run(record)
            bar.advance(bar_job)
            state["finished"] += 1
            lines.update(state["finished"], f"{record['run_id']} {record['status']}")

        if workers <= 1 or len(jobs) <= 1:
            runner = _Runner(database, cfg, device, feature_cache)
            for runs in jobs:
                task, src, mode, seed, fraction = runs[0]
                bar.update(bar_job, description=run_id(task, src.label, mode, fraction, seed))
                runner.job(runs, fail_fast, record_done)
        else:
            _pool(database, cfg, jobs, workers, fail_fast, record_done, bar, bar_job)
    if jobs:  # plan order (earlier sweeps' other runs first): the same file for every N and every resume
        order = {run_id(t, s.label, m, f, sd): k for k, (t, s, m, sd, f) in enumerate(plan)}
        store.records.sort(key=lambda r: order.get(r.get("run_id"), -1))
        store.save()


def _pool(database: str | Path, cfg: TransferConfig, jobs: list[list[Run]], workers: int, fail_fast: bool,
          record_done: Callable[[dict[str, Any]], None], bar: Any, bar_job: Any) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    workers = min(workers, len(jobs))
    # spawn, not fork: a forked child inherits the parent's OpenMP thread pool state and can hang in it
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(str(database), cfg, threads_per_worker(workers)))
    bar.update(bar_job, description=f"{workers} workers")
    try:
        pending = {pool.submit(_worker_job, runs, fail_fast) for runs in jobs}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                status, payload = fut.result()
                if status == "error":
                    raise MedfoundryError(payload)
                if status == "crash":
                    raise RuntimeError(f"a transfer run failed in a worker process: {payload}")
                for record in payload:
                    record_done(record)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _config_doc(out: Path, database: str | Path, tasks: Sequence[str], sources: Sequence[EncoderSource],
                cfg: TransferConfig, store: ResultStore, reference_tasks: Sequence[str] = ()) -> dict[str, Any]:
    """The content of ``out/config.json``, merged with an earlier sweep's (raises on a clash)."""
    path = out / "config.json"
    doc = {"database": str(database), "tasks": list(tasks),
           "encoders": [{"label": s.label, "kind": s.kind, "spec": s.spec} for s in sources],
           "transfer": cfg.to_dict()}
    if reference_tasks:
        doc["reference_only"] = {"tasks": list(reference_tasks), "why": (
            "modes exclude finetune, but the goals are judged against random init fine-tuned on 100 %, "
            "so only that reference was fine-tuned")}
    if path.is_file() and len(store):
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = None
        if isinstance(old, dict) and old.get("transfer") != doc["transfer"]:
            changed = sorted(k for k in doc["transfer"] if old.get("transfer", {}).get(k) != doc["transfer"][k]
                             and k not in ("fractions", "seeds", "modes", "progress", "device"))
            if changed:
                raise ConfigError(f"{out}: results exist from a sweep with other settings ({', '.join(changed)}); "
                                  "use a new --out folder or the same settings")
        if isinstance(old, dict):  # remember every task, fraction and encoder this folder has seen
            doc["tasks"] = list(dict.fromkeys([*old.get("tasks", []), *doc["tasks"]]))
            fr = set(old.get("transfer", {}).get("fractions", [])) | set(doc["transfer"]["fractions"])
            doc["transfer"]["fractions"] = sorted(float(f) for f in fr)
            known = {e["label"]: e for e in old.get("encoders", [])}
            for e in doc["encoders"]:
                if e["label"] in known and known[e["label"]].get("spec") != e["spec"]:
                    raise ConfigError(f"{out}: encoder label {e['label']!r} meant {known[e['label']]['spec']!r} in "
                                      f"the earlier sweep, now {e['spec']!r}; use another label (LABEL=...)")
            known.update({e["label"]: e for e in doc["encoders"]})
            doc["encoders"] = list(known.values())
    return doc


def _one_run(db: MultiTaskDatabase, data: TaskData, src: EncoderSource, mode: str, seed: int, fraction: float,
             cfg: TransferConfig, device: torch.device, cache: FeatureCache) -> dict[str, Any]:
    spec = data.spec
    task = spec.name
    t0 = time.perf_counter()
    cases = run_splits(db, task, fraction, seed, cfg)
    train_idx, val_idx, test_idx = cases.train, cases.select, cases.score
    train_pos, val_pos, test_pos = data.positions(train_idx), data.positions(val_idx), data.positions(test_idx)
    model = build_model(src, spec, cfg, seed)
    lr_facts: dict[str, Any] = {}
    if mode == "frozen":
        model.to(device)
        enc_seed = cfg.init_seed + seed if src.kind == "random" else None
        feats = cache.get((src.label, enc_seed, task),
                          lambda: extract_features(model, data, cfg.eval_batch_size, device, cfg.probe_multiscale))
        result = run_frozen(model, data, feats, train_pos, val_pos, test_pos, cfg, seed, device)
    else:
        reference = src.kind == "random" and fraction == 1.0
        run_cfg = cfg.for_run("finetune", reference, scratch=src.kind == "random")
        result = run_finetune(model, data, train_pos, val_pos, test_pos, run_cfg, seed, device)
        lr_facts = {"lr": run_cfg.lr, "encoder_lr_ratio": run_cfg.encoder_lr_ratio}
    targets = [data.targets[p] for p in test_pos]
    spacings = [data.spacings[p] for p in test_pos]
    with np.errstate(all="ignore"):
        metrics = task_metrics(spec, result.test_preds, targets, spacings)
        boots = primary_bootstrap(spec, result.test_preds, targets, cfg.n_boot, seed=BOOTSTRAP_SEED)
    name = primary_metric(spec.kind)
    fit = result.fit
    return {
        "run_id": run_id(task, src.label, mode, fraction, seed), "status": "ok",
        "task": task, "kind": spec.kind.value, "role": spec.extra.get("role"), "group": spec.group,
        "encoder": src.label, "encoder_kind": src.kind, "encoder_source": src.spec, "mode": mode,
        "fraction": fraction, "seed": seed, "score_split": cfg.score_split,
        "n_train": int(len(train_idx)), "n_val": int(len(val_idx)), "n_test": int(len(test_idx)),
        "primary_metric": name, "primary": metrics.get(name, math.nan), "chance": chance_level(spec),
        "metrics": metrics, "val_primary": fit.val_primary, "steps": fit.steps, "best_step": fit.best_step,
        "epochs": round(fit.epochs, 3), "time_s": round(time.perf_counter() - t0, 3), **fit.convergence(),
        "bootstrap": [float(x) for x in boots], **lr_facts,
        **_confusion(spec, result.test_preds, targets),
    }


def _confusion(spec: Any, preds: Sequence[Any], targets: Sequence[Any]) -> dict[str, Any]:
    """``{"classes", "confusion"}`` of a single-label classification run (rows: true class,
    columns: predicted), for the report's per-class recall / F1 and confusion matrices; ``{}``
    for the other kinds, whose per-class figures are already among the metrics."""
    if spec.kind.value != "classification" or not len(preds):
        return {}
    k = spec.num_classes
    pred = np.stack([np.asarray(to_numpy(p), dtype=float).reshape(-1) for p in preds]).argmax(axis=1)
    true = np.asarray([int(to_numpy(t)) for t in targets], dtype=np.int64)
    matrix = np.bincount(true * k + pred, minlength=k * k).reshape(k, k)
    return {"classes": list(spec.classes), "confusion": matrix.tolist()}


def run_transfer(encoder: str, database: str | Path, task: str, mode: str = "frozen",
                 fractions: Sequence[float] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0), seeds: int = 3,
                 out: str | Path = "transfer_out", config: TransferConfig | None = None, **overrides: Any
                 ) -> list[dict[str, Any]]:
    """One encoder on one task in one mode over fractions and seeds (no automatic baseline).

    Returns the records of this encoder/task/mode from ``out``'s results (see :func:`run_sweep`).
    """
    store = run_sweep(database, [encoder], out, tasks=[task], config=config, baseline=False,
                      fractions=tuple(fractions), seeds=seeds, modes=(mode,), **overrides)
    label = parse_encoder(encoder, config).label
    return [r for r in store.records if r.get("task") == task and r.get("encoder") == label
            and r.get("mode") == mode]
