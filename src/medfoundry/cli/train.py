"""Commands ``pretrain``, ``extract`` and ``info``: thin wrappers over :mod:`medfoundry.training`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError, DataError

__all__ = ["register", "pretrain_command", "extract_command", "info_command", "extract_features"]

console = Console()


def _primary(metrics: dict[str, Any]) -> str | None:
    for key in metrics:
        if key.endswith("_chance"):
            return key[: -len("_chance")]
    return None


def metrics_table(metrics: dict[str, dict[str, Any]], title: str = "validation") -> Table:
    """Per task: primary metric, its value, the chance level (declared by the task kind), n."""
    table = Table(title=title)
    for col in ("task", "metric", "value", "chance", "n"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for task, m in metrics.items():
        name = _primary(m) or next((k for k in m if k != "n"), "")
        value, chance = m.get(name), m.get(f"{name}_chance")
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        n = m.get("n")
        table.add_row(task, name, fmt(value), fmt(chance), "-" if n is None else str(int(n)))
    return table


def pretrain_command(
    database: Optional[Path] = typer.Option(None, "--database", "-d", help="Database folder (MultiTaskDatabase)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder; resumed when it holds a checkpoint."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (PretrainConfig fields)."),
    tasks: Optional[str] = typer.Option(None, help="Comma-separated task names (default: group=pretrain tasks)."),
    encoder: Optional[str] = typer.Option(None, help="Encoder name, e.g. resnet_small."),
    rounds: Optional[int] = typer.Option(None, help="Number of rounds (optimizer steps)."),
    batch_size: Optional[int] = typer.Option(None, help="Samples per task per round (global under torchrun)."),
    lr: Optional[float] = typer.Option(None, help="Peak AdamW learning rate."),
    sampling: Optional[str] = typer.Option(None, help="Task sampling: all | random_k | size_weighted."),
    tasks_per_round: Optional[int] = typer.Option(None, help="k for random_k / size_weighted."),
    precision: Optional[str] = typer.Option(None, help="auto | fp32 | bf16 | fp16 (autocast on CUDA only)."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N."),
    seed: Optional[int] = typer.Option(None, help="Seed of weights, task sampling and batch order."),
    eval_every: Optional[int] = typer.Option(None, help="Validate every N rounds (0: at the end only)."),
    checkpoint_every: Optional[int] = typer.Option(None, help="Checkpoint every N rounds."),
    num_workers: Optional[int] = typer.Option(None, help="Threads loading a round's batches."),
    tensorboard: Optional[bool] = typer.Option(None, "--tensorboard/--no-tensorboard", help="Also log to TensorBoard."),
    patch: Optional[str] = typer.Option(None, help="3D tasks: training patch in voxels, 'D,H,W' (default 32,32,32)."),
    augment: Optional[str] = typer.Option(None, help="2D batch augmentation: none | light | standard (default none)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Multi-task pretraining (memory-decoupled rounds); resumes RUN when it has a checkpoint.

    Launch on several devices with: torchrun --nproc-per-node N -m medfoundry pretrain ...
    """
    from ..training import PretrainConfig, latest_checkpoint, pretrain
    from ..training.pretrain import CONFIG_FILE, FINAL_METRICS_FILE

    saved = out / CONFIG_FILE
    if config is not None:
        base = PretrainConfig.from_yaml(config)
    elif latest_checkpoint(out) is not None and saved.is_file():
        base = PretrainConfig.from_yaml(saved)
        console.print(f"resuming {out} from {latest_checkpoint(out).name}")
    else:
        base = PretrainConfig()
    cfg = base.replace(
        database=None if database is None else str(database), out=str(out), tasks=tasks, encoder=encoder,
        rounds=rounds, batch_size=batch_size, lr=lr, sampling=sampling, tasks_per_round=tasks_per_round,
        precision=precision, device=device, seed=seed, eval_every=eval_every, checkpoint_every=checkpoint_every,
        num_workers=num_workers, tensorboard=tensorboard, progress=progress, patch=_parse_patch(patch), augment=augment,
    )
    if not cfg.database:
        raise ConfigError("pretrain: give --database (or a --config naming 'database')")
    run = pretrain(cfg)
    final = run / FINAL_METRICS_FILE
    if final.is_file() and int(os.environ.get("RANK", "0")) == 0:  # one table under torchrun
        data = json.loads(final.read_text(encoding="utf-8"))
        console.print(metrics_table(data["metrics"], title=f"validation after {data['round']} rounds"))
        console.print(f"model saved to {run / 'model'}")


def _parse_patch(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--patch: expected three positive voxel counts 'D,H,W', got {text!r}")
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def _parse_image_specs(specs: list[str]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    files: list[Path] = []
    for spec in specs:
        parts = spec.split(":")
        if len(parts) in (2, 3) and (Path(parts[0]) / "database.yaml").is_file():
            out.append(("db", (Path(parts[0]), parts[1], parts[2] if len(parts) == 3 else None)))
        elif Path(spec).is_file():
            files.append(Path(spec))
        else:
            raise DataError("--images: neither an image file nor DB:TASK[:SPLIT] with a database folder", path=spec)
    if files:
        out.append(("files", files))
    return out


def extract_features(encoder_dir: str | Path, images: list[str], out: str | Path, modality: str = "other",
                     batch_size: int = 32, device: str = "auto", multiscale: bool = False) -> Path:
    """Embed images with a pretrained encoder; writes ``out`` (.npz).

    Args:
        encoder_dir: a run folder (uses ``RUN/model``) or a ``save_pretrained`` folder.
        images: ``DB:TASK[:SPLIT]`` entries (all samples of the task when no split) and/or image
            files (PNG, JPEG, TIFF, 2D NIfTI, DICOM; intensities scaled by dtype to [0, 1]).
        modality: modality group of the image files (database tasks carry their own).

    The npz holds ``embeddings`` (N, D) float32, ``index`` (N,) int64 (sample index in its task,
    or position in the file list), ``source`` (N,) str (``task`` or file path) and ``split``.
    """
    import numpy as np

    from ..data.database import MultiTaskDatabase
    from ..inference import embed
    from ..models import load_encoder
    from ..utils import atomic_path, resolve_device

    folder = Path(encoder_dir)
    if (folder / "model").is_dir():
        folder = folder / "model"
    dev = resolve_device(device)
    trunk = load_encoder(folder, map_location=dev).eval()
    embeddings, index, source, split_of = [], [], [], []
    for kind, value in _parse_image_specs(images):
        if kind == "db":
            root, task, split = value
            db = MultiTaskDatabase.open(root)
            spec = db.task(task)
            idx = db.split_indices(task, split) if split else np.arange(db.num_samples(task))
            for start in range(0, len(idx), batch_size):  # stream: a task may not fit in memory
                chunk = [db.image(task, int(i)) for i in idx[start:start + batch_size]]
                embeddings.append(embed(trunk, chunk, spec.modality.value, batch_size, dev, multiscale).numpy())
            index.extend(int(i) for i in idx)
            source.extend([task] * len(idx))
            split_of.extend([split or ""] * len(idx))
        else:
            # files may differ in size: consecutive files of one size share a batch
            embeddings.append(embed(trunk, list(value), modality, batch_size, dev, multiscale).numpy())
            index.extend(range(len(value)))
            source.extend(str(p) for p in value)
            split_of.extend([""] * len(value))
    out = Path(out)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, embeddings=np.concatenate(embeddings).astype(np.float32), index=np.asarray(index, np.int64),
                     source=np.asarray(source), split=np.asarray(split_of))
    return out


def extract_command(
    encoder: Path = typer.Option(..., "--encoder", "-e", help="Run folder or save_pretrained model folder."),
    images: list[str] = typer.Option(..., "--images", "-i", help="DB:TASK[:SPLIT] or an image file; repeatable."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .npz (embeddings, index, source, split)."),
    modality: str = typer.Option("other", help="Modality of image files: tomographic|microscopic|x-ray|other."),
    batch_size: int = typer.Option(32, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    multiscale: bool = typer.Option(False, help="Concatenate pooled features of every stage."),
) -> None:
    """Embed images with a pretrained encoder into an .npz of (N, D) features."""
    path = extract_features(encoder, images, out, modality=modality, batch_size=batch_size, device=device,
                            multiscale=multiscale)
    import numpy as np

    with np.load(path) as data:
        console.print(f"wrote {path}: embeddings {tuple(data['embeddings'].shape)}")


def run_info(run: str | Path) -> dict[str, Any]:
    """Summary of a run folder: config, rounds done, tasks, last metrics, parameter counts."""
    from ..training import PretrainConfig, latest_checkpoint, read_metrics
    from ..training.checkpoint import list_checkpoints
    from ..training.pretrain import CONFIG_FILE, FINAL_METRICS_FILE

    run = Path(run)
    if not (run / CONFIG_FILE).is_file():
        raise DataError(f"not a pretraining run folder (no {CONFIG_FILE})", path=run)
    cfg = PretrainConfig.from_yaml(run / CONFIG_FILE)
    trains = list(read_metrics(run, "train"))
    evals = list(read_metrics(run, "eval"))
    info: dict[str, Any] = {"run": str(run), "config": cfg.to_dict(), "tasks": cfg.tasks,
                            "rounds_done": trains[-1]["round"] if trains else 0, "rounds_total": cfg.rounds,
                            "checkpoints": [r for r, _ in list_checkpoints(run)],
                            "last_losses": trains[-1]["losses"] if trains else None,
                            "last_eval": evals[-1] if evals else None}
    state = None
    ckpt = latest_checkpoint(run)
    if ckpt is not None:
        from ..training.checkpoint import load_checkpoint

        state = load_checkpoint(ckpt)["model"]
    elif (run / "model" / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(run / "model" / "model.safetensors")
    if state is not None:
        heads = sum(v.numel() for k, v in state.items() if k.startswith("heads."))
        total = sum(v.numel() for v in state.values())
        info["parameters"] = {"total": total, "trunk": total - heads, "heads": heads}
    if (run / FINAL_METRICS_FILE).is_file():
        info["final"] = json.loads((run / FINAL_METRICS_FILE).read_text(encoding="utf-8"))
    return info


def info_command(
    run: Path = typer.Argument(..., help="Run folder written by `medfoundry pretrain`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Show a run: config, rounds done, tasks, last metrics, parameter counts."""
    info = run_info(run)
    if as_json:
        console.print_json(json.dumps(info, default=str))
        return
    cfg = info["config"]
    console.print(f"[bold]{info['run']}[/]  encoder {cfg['encoder']}  rounds {info['rounds_done']}/{info['rounds_total']}"
                  f"  checkpoints {info['checkpoints']}")
    console.print(f"tasks ({len(info['tasks'] or [])}): {', '.join(info['tasks'] or [])}")
    if "parameters" in info:
        p = info["parameters"]
        console.print(f"parameters: total {p['total']:,}  trunk {p['trunk']:,}  heads {p['heads']:,}")
    if info["last_losses"]:
        console.print("last losses: " + "  ".join(f"{t} {v:.3f}" for t, v in info["last_losses"].items() if v is not None))
    last = info.get("final") or info.get("last_eval")
    if last:
        console.print(metrics_table(last["metrics"], title=f"validation at round {last['round']}"))


def register(app: typer.Typer) -> None:
    """Add the top-level commands ``pretrain``, ``extract`` and ``info`` to ``app``."""
    app.command("pretrain")(pretrain_command)
    app.command("extract")(extract_command)
    app.command("info")(info_command)
