"""Patch-based training of a 3D segmentation network on a stored 3D task.

One step = ``batch_size`` patches (foreground-oversampled, augmented) -> network -> loss ->
AdamW step. Losses: Dice + cross-entropy over softmax classes, or, with regions, Dice + binary
cross-entropy over sigmoid region outputs (BraTS WT/TC/ET). Both use batch Dice (one Dice over
the whole batch, nnU-Net's choice: a patch without foreground does not produce a 0/0).

Run folder::

    RUN/config.yaml          the SegmentConfig (a resumed run must match it)
    RUN/checkpoints/         round_NNNNNNN.pt (training/checkpoint.py): weights, optimizer,
                             step, elapsed seconds, the sampler's NumPy generator (as JSON
                             text) and torch's generator; plain containers and tensors only
    RUN/metrics.jsonl        train lines every 10 steps, eval lines every val_every steps and at the end
    RUN/model/               final network (config.json + model.safetensors), for predict
    RUN/summary.json         steps, seconds, budget, validation Dice, load average

Resuming from a checkpoint of a ``steps`` run gives bit-identical weights to a run never
interrupted (the schedule is a function of the step). A ``minutes`` run schedules the
learning rate on elapsed time, which is stored, so it resumes where the clock stopped, but
not bit for bit. The budget covers the whole call: the loop stops when the time left would
not fit one more step plus the final validation and saving (estimated from measured step time).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError
from ..utils import atomic_write_json
from .config import SegmentConfig

__all__ = ["train_segmentation"]

_LOG_EVERY = 10
_GRAD_CLIP = 12.0  # nnU-Net's gradient-norm clip
_SAVE_SECONDS = 1.0  # writing the final model and summary


def _lr_factor(cfg: SegmentConfig, step: int, elapsed: float) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = step / cfg.steps if cfg.steps is not None else elapsed / (cfg.minutes * 60.0)
    return max(0.0, 1.0 - min(progress, 1.0)) ** 0.9


def _windows(shape: tuple[int, ...], window: tuple[int, ...], overlap: float = 0.5) -> int:
    return int(np.prod([max(1, math.ceil((s - w) / (w * (1 - overlap))) + 1) for s, w in zip(shape, window)]))


def _check_run(run: Path, cfg: SegmentConfig) -> bool:
    """True when ``run`` holds a matching checkpoint to resume; raise when it holds another run."""
    from ..training.checkpoint import latest_checkpoint

    saved = run / "config.yaml"
    if not saved.is_file():
        if run.exists() and any(run.iterdir()):
            raise ConfigError(f"{run}: folder is not empty and holds no segmentation run; choose a new --out")
        return False
    before = SegmentConfig.from_yaml(saved)
    diff = [k for k in before.differences(cfg) if k not in ("device", "threads")]
    if diff:
        raise ConfigError(f"{saved}: the run was started with other settings ({', '.join(diff)}); use a new --out "
                          "or the same options to resume")
    return latest_checkpoint(run) is not None


def train_segmentation(cfg: SegmentConfig, run: str | Path, *, progress: bool = True,
                       interrupt_after: int | None = None,
                       on_step: Callable[[int, float], Any] | None = None) -> dict[str, Any]:
    """Train (or resume) a 3D segmentation run.

    Args:
        cfg: the configuration.
        run: run folder (created; resumed when it holds a checkpoint of the same config).
        progress: show a rich progress bar.
        interrupt_after: stop right after the checkpoint of this step without finishing
            (what a kill after a checkpoint leaves behind; for resume tests).
        on_step: called as ``on_step(step, loss)`` after every step.

    Returns:
        The summary (also written to ``RUN/summary.json``).
    """
    import torch

    from ..data.volumes3d import VolumeTask
    from ..training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from ..training.logging import RunLogger
    from ..utils import resolve_device
    from .model import build_network, build_trunk, save_network, set_cpu_threads
    from .patches import PatchSampler
    from .regions import format_regions, parse_regions

    started = time.perf_counter()
    run = Path(run)
    task = VolumeTask.open(cfg.database, cfg.task)
    regions = parse_regions(cfg.regions, task.num_classes) if cfg.regions else None
    train_ids, val_ids = task.split("train"), task.split("val")
    if not train_ids:
        raise ConfigError(f"task {cfg.task!r} has no training case")
    resume = _check_run(run, cfg)
    run.mkdir(parents=True, exist_ok=True)
    cfg.save(run / "config.yaml")
    device = resolve_device(cfg.device)
    set_cpu_threads(cfg.threads)

    torch.manual_seed(cfg.seed)
    trunk = build_trunk(cfg.encoder, cfg.encoder_name, cfg.encoder_kwargs, cfg.adapter_channels)
    # which pretrained stem the task's channels enter through (models/stems.py fallback rule)
    stem = trunk.adapters.resolve(task.modality, task.channels)
    out_channels = len(regions) if regions else task.num_classes
    net = build_network(trunk, task.modality, task.channels, out_channels, cfg.decoder_norm).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = _loss(regions is not None)
    sampler = PatchSampler(task, train_ids, cfg.patch, cfg.foreground_fraction, cfg.augment)
    rng = np.random.default_rng(cfg.seed)
    step, elapsed_before = 0, 0.0
    if resume:
        state = load_checkpoint(latest_checkpoint(run))
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        step, elapsed_before = int(state["round"]), float(state["elapsed"])
    logger = RunLogger(run, resume_round=step if resume else None)
    window = cfg.val_patch or cfg.patch
    info = {"task": task.name, "classes": list(task.classes), "channel_names": list(task.channel_names),
            "regions": format_regions(regions) if regions else None, "intensity": task.intensity,
            "target_spacing": task.target_spacing, "window": list(window), "label_values": list(task.label_values)}
    budget = None if cfg.minutes is None else cfg.minutes * 60.0
    val_windows = sum(_windows(task.cases[i].shape, window) for i in val_ids)

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - started

    def checkpoint() -> None:
        save_checkpoint(run, step, {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                                    "numpy_rng": json.dumps(rng.bit_generator.state),
                                    "torch_rng": torch.get_rng_state(), "elapsed": elapsed()})

    def validate() -> tuple[dict[str, float], int]:
        deadline = None if budget is None else started + budget - elapsed_before - _SAVE_SECONDS
        scores, scored = _validate(net, task, val_ids, window, regions, device, deadline) if val_ids else ({}, 0)
        logger.log({"kind": "eval", "round": step, "split": "val", "metrics": {task.name: scores},
                    "cases": scored, "seconds": elapsed()})
        return scores, scored

    step_seconds = None
    net.train()
    bar = _progress(progress, cfg)
    scores: dict[str, float] = {}
    scored = 0
    with bar:
        job = bar.add_task("segment train", total=cfg.steps or budget, completed=step if cfg.steps else elapsed())
        while True:
            if cfg.steps is not None and step >= cfg.steps:
                break
            if budget is not None and step_seconds is not None:
                # one more step, then validation (a window costs about a third of a training
                # patch's forward and backward; validation also stops at the deadline) and saving
                reserve = step_seconds * (1 + val_windows / (3 * cfg.batch_size)) + _SAVE_SECONDS
                if elapsed() + reserve > budget:
                    break
            t0 = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * _lr_factor(cfg, step, elapsed())
            images, labels = sampler.batch(rng, cfg.batch_size)
            x = torch.from_numpy(images).to(device)
            y = torch.from_numpy(labels.astype(np.int64)).to(device)
            logits = net(x)
            loss = loss_fn(logits, y, regions)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), _GRAD_CLIP)
            optimizer.step()
            step += 1
            dt = time.perf_counter() - t0
            step_seconds = dt if step_seconds is None else 0.9 * step_seconds + 0.1 * dt
            value = float(loss.detach())
            if step % _LOG_EVERY == 0:
                logger.log({"kind": "train", "round": step, "lr": optimizer.param_groups[0]["lr"],
                            "losses": {task.name: value}, "grad_norm": float(grad_norm), "seconds": dt})
            if on_step is not None:
                on_step(step, value)
            bar.update(job, completed=step if cfg.steps else min(elapsed(), budget))
            if cfg.val_every and step % cfg.val_every == 0 and (cfg.steps is None or step < cfg.steps):
                scores, scored = validate()
                net.train()
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint()
                if interrupt_after is not None and step >= interrupt_after:
                    logger.close()
                    return {"interrupted": step}
    if not (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
        checkpoint()
    scores, scored = validate()
    save_network(run, net, info)
    summary = {"task": task.name, "steps": step, "seconds": round(elapsed(), 2), "budget_seconds": budget,
               "step_seconds": None if step_seconds is None else round(step_seconds, 4),
               "val_cases": scored, "val_dice": scores, "device": str(device),
               "encoder": cfg.encoder, "input_stem": {"key": stem.key, "rule": stem.rule},
               "threads": torch.get_num_threads(), "load_average": list(os.getloadavg())}
    atomic_write_json(run / "summary.json", summary)
    logger.close()
    return summary


def _loss(sigmoid: bool):
    import torch
    from monai.losses import DiceCELoss, DiceLoss

    if not sigmoid:
        dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
        return lambda logits, y, regions: dice_ce(logits, y)
    dice_fn = DiceLoss(sigmoid=True, batch=True)
    bce = torch.nn.BCEWithLogitsLoss()

    def region_loss(logits, y, regions):
        from .regions import regions_to_targets

        target = regions_to_targets(y, regions)
        return dice_fn(logits, target) + bce(logits, target)

    return region_loss


def _validate(net, task, ids, window, regions, device, deadline: float | None) -> tuple[dict[str, float], int]:
    """Mean Dice over the validation cases and how many were scored: with a ``deadline``
    (``time.perf_counter`` value), a case whose predicted duration would pass it is skipped,
    so a loaded machine shortens validation instead of breaking the time budget (the first
    case is always scored)."""
    from ..inference.sliding_window import SlidingWindowPredictor
    from .predict import decode
    from .scores import dice_scores, mean_scores

    net.eval()
    predictor = SlidingWindowPredictor(net, window, "sigmoid" if regions else "softmax", device=device)
    per_case, per_voxel = [], 0.0
    for i in ids:
        size = task.cases[i].size
        if deadline is not None and per_case and time.perf_counter() + per_voxel * size > deadline:
            break
        t0 = time.perf_counter()
        per_case.append(dice_scores(decode(predictor(task.image(i)).numpy(), regions), task.label(i), task.classes,
                                    regions))
        per_voxel = max(per_voxel, (time.perf_counter() - t0) / size)
    return mean_scores(per_case), len(per_case)


def _progress(enabled: bool, cfg: SegmentConfig):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    unit = "steps" if cfg.steps is not None else "s"
    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn(f"{{task.completed:.0f}}/{{task.total:.0f}} {unit}"), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=not enabled, transient=False)
