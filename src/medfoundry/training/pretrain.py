"""Public entry points: run (or resume) a pretraining run from a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from ..data.database import MultiTaskDatabase
from ..data.tasks import TaskSpec
from ..data.validate import check_targets
from ..errors import ConfigError
from ..utils import atomic_write_json, resolve_device, seed_everything
from .checkpoint import latest_checkpoint
from .config import RESUMABLE_OVERRIDES, PretrainConfig
from .distributed import barrier, init_distributed, shutdown
from .multitask import MultiTaskTrainer, resolve_tasks
from .run_database import open_run_database

__all__ = ["pretrain", "pretrain_demo", "build_model", "CONFIG_FILE", "FINAL_METRICS_FILE", "MODEL_DIR"]

CONFIG_FILE = "config.yaml"
FINAL_METRICS_FILE = "final_metrics.json"
MODEL_DIR = "model"

ModelFactory = Callable[[Sequence[TaskSpec], PretrainConfig], nn.Module]


def build_model(specs: Sequence[TaskSpec], config: PretrainConfig) -> nn.Module:
    """The foundation model a config describes (encoder, shared decoder, one head per task)."""
    from ..models import FoundationModel

    dims = {s.spatial_dims for s in specs}
    if len(dims) != 1:
        raise ConfigError(f"tasks mix spatial_dims {sorted(dims)}; pretrain 2D and 3D tasks in separate runs")
    return FoundationModel(encoder=config.encoder, tasks=list(specs), spatial_dims=dims.pop(),
                           decoder_channels=config.decoder_channels, **config.encoder_kwargs)


def _check_dims(db: MultiTaskDatabase, tasks: Sequence[str]) -> None:
    """One encoder serves one ``spatial_dims``: refuse a run that mixes 2D and 3D tasks before
    anything is written (2D and 3D kernels are different tensors, so they cannot share weights)."""
    by_dims: dict[int, list[str]] = {}
    for t in tasks:
        by_dims.setdefault(db.task(t).spatial_dims, []).append(t)
    if len(by_dims) > 1:
        detail = "; ".join(f"{d}D: {', '.join(names)}" for d, names in sorted(by_dims.items()))
        raise ConfigError(f"tasks mix spatial_dims ({detail}); pretrain 2D and 3D tasks in separate runs")


def _resume_config(config: PretrainConfig, out: Path, db: MultiTaskDatabase) -> PretrainConfig:
    """The saved config of ``out``, with only the fields that may change on resumption taken from ``config``."""
    saved = PretrainConfig.from_yaml(out / CONFIG_FILE)
    asked = config.replace(tasks=resolve_tasks(db, config.tasks))
    clash = [f for f in saved.differences(asked) if f not in RESUMABLE_OVERRIDES]
    if clash:
        a, b = saved.to_dict(), asked.to_dict()
        detail = "; ".join(f"{f}: saved {a[f]!r}, asked {b[f]!r}" for f in clash)
        raise ConfigError(f"{out}: this run has a checkpoint and was started with other settings ({detail}). "
                          "Resume with the same settings, or choose a new --out folder.")
    return saved.replace(**{f: getattr(config, f) for f in RESUMABLE_OVERRIDES})


def pretrain(config: PretrainConfig, model_factory: ModelFactory | None = None) -> Path:
    """Pretrain (or resume) a multi-task model; returns the run folder.

    The run folder receives ``config.yaml``, ``metrics.jsonl``, ``checkpoints/``, the final
    model (``model/``, via ``save_pretrained``) and ``final_metrics.json`` (per-task validation
    metrics, each primary metric with its ``_chance`` level). A folder that already holds a
    checkpoint is resumed, bit-identically, with its saved config (``rounds``, ``device``,
    intervals and a few other fields that do not change a round's arithmetic may be changed).
    Works under ``torchrun`` (one process per device; see :mod:`.distributed`).

    Stored 3D tasks (``segmentation3d``, group ``3d``: name them in ``tasks``) train on patches
    of ``config.patch`` and validate on whole volumes (:mod:`.patches3d`); every task of a run
    shares ``spatial_dims`` (a mix is refused before anything is written).

    Args:
        config: the run configuration; ``database`` and ``out`` are required.
        model_factory: builds the model from the task specs (default :func:`build_model`).
    """
    if not config.database or not config.out:
        raise ConfigError("pretrain needs both 'database' (--database) and 'out' (--out)")
    out = Path(config.out)
    db = open_run_database(config.database, config.patch)
    resuming = latest_checkpoint(out) is not None
    if resuming:
        if not (out / CONFIG_FILE).is_file():
            raise ConfigError(f"{out}: has checkpoints but no {CONFIG_FILE}; cannot resume safely")
        config = _resume_config(config, out, db)
        db = open_run_database(config.database, config.patch)  # the saved patch sizes the 3D specs
    else:
        config = config.replace(tasks=resolve_tasks(db, config.tasks))
    _check_dims(db, config.tasks or [])
    check_targets(db, config.tasks or [])  # before any file is written or any round is trained
    device = resolve_device(config.device)
    import torch.distributed

    owns_group = not torch.distributed.is_initialized()
    ctx = init_distributed(device)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / CONFIG_FILE)
    seed_everything(config.seed)
    specs = [db.task(t) for t in config.tasks or []]
    model = (model_factory or build_model)(specs, config)
    trainer = MultiTaskTrainer(model, db, config, run_dir=out, dist=ctx)
    try:
        trainer.resume()
        metrics = trainer.fit(chance=True)
    finally:
        trainer.close()
    if ctx.is_main:
        model.save_pretrained(out / MODEL_DIR)
        atomic_write_json(out / FINAL_METRICS_FILE, {"round": trainer.round, "split": "val", "metrics": metrics})
    barrier(ctx)
    if owns_group:
        shutdown(ctx)
    return out


def pretrain_demo(db_root: str | Path, out: str | Path, rounds: int = 80, tasks: Sequence[str] | None = None,
                  batch_size: int = 16, seed: int = 0, progress: bool = True, **overrides: Any) -> Path:
    """Small, fast pretraining for the demo (CPU friendly): resnet_small, all pretrain tasks.

    Warm-up is 10 % of the rounds, one checkpoint at the end plus one at each quarter, and
    validation only at the end (capped at 64 samples per task). Speed measured on the
    11-task 64 x 64 synthetic database, batch 16 per task, ``torch.set_num_threads(1)``:
    1.9 s per round (0.52 rounds/s) on a lightly loaded 2-core machine, 3.7 s when other
    jobs share it, so 80 rounds take 2.5-5 min. Two threads on a shared 2-core machine were
    3-10x *slower* (OpenMP oversubscription). ``sampling="random_k", tasks_per_round=4``
    (an override) makes a round ~2.7x cheaper.
    """
    config = PretrainConfig(database=str(db_root), out=str(out), rounds=rounds,
                            tasks=None if tasks is None else list(tasks), batch_size=batch_size, seed=seed,
                            warmup_rounds=max(1, rounds // 10), checkpoint_every=max(1, rounds // 4),
                            eval_every=0, eval_max_samples=64, progress=progress, lr=2e-3)
    if overrides:
        config = config.replace(**overrides)
    return pretrain(config)
