"""Which encoder a transfer run starts from, parsed from one string.

==========================  ===================================================================
``--encoder`` value         meaning
==========================  ===================================================================
``random``                  random init of ``TransferConfig.encoder`` (the baseline)
``random:<arch>``           random init of another registered architecture
``classical``               no network: intensity and texture statistics
                            (:mod:`medfoundry.transfer.classical`) under the frozen probe;
                            frozen mode, classification and multilabel tasks only
``single:<task>``           single-task baseline: pretrain on ``<task>`` alone with
                            :func:`medfoundry.training.pretrain` (``single_task_rounds``
                            rounds) into ``OUT/encoders/single_<task>``, then transfer
``RUN``                     a pretraining run folder (``RUN/model/config.json``)
``DIR``                     a checkpoint folder (``config.json`` + ``model.safetensors``),
                            full model or encoder only
``FILE@<arch>``             a plain encoder state dict (``.safetensors``/``.pt``) of ``<arch>``
``LABEL=<any of the above>`` the same, shown as ``LABEL`` in results and plots
==========================  ===================================================================

The *kind* recorded with every result (``random``, ``classical``, ``single-task``,
``multi-task``, ``weights``) comes from the checkpoint for a pretrained encoder: a model pretrained on more than one task is
``multi-task``, on exactly one ``single-task``; a plain state dict is ``weights``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..data.tasks import TaskSpec
from ..errors import ConfigError
from .config import TransferConfig

__all__ = ["EncoderSource", "parse_encoder", "build_model", "prepare_encoder", "not_applicable", "drop_inapplicable",
           "ENCODER_KINDS"]

ENCODER_KINDS = ("random", "classical", "single-task", "multi-task", "weights")
_LABEL = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class EncoderSource:
    """A parsed ``--encoder`` value.

    Attributes:
        label: short name used in run ids, tables and plots.
        kind: one of :data:`ENCODER_KINDS` (``single-task`` for ``single:<task>`` before it is trained).
        spec: the original string.
        path: checkpoint folder or file (``None`` for random init and untrained single-task).
        arch: architecture for random init and plain state dicts.
        pretrain_task: the task of a ``single:<task>`` baseline.
    """

    label: str
    kind: str
    spec: str
    path: str | None = None
    arch: str | None = None
    pretrain_task: str | None = None


def _checkpoint_dir(path: Path) -> Path | None:
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    if (path / "model" / "config.json").is_file():
        return path / "model"
    return None


def _kind_of_checkpoint(ckpt: Path) -> str:
    try:
        cfg = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{ckpt / 'config.json'}: cannot read the checkpoint config: {err}") from err
    n = len(cfg.get("tasks") or [])
    return "multi-task" if n > 1 else ("single-task" if n == 1 else "weights")


def parse_encoder(text: str, cfg: TransferConfig | None = None) -> EncoderSource:
    """Parse one ``--encoder`` value (see the module docstring).

    Raises:
        ConfigError: a path that does not exist or is not a checkpoint, a bad label.
    """
    cfg = cfg or TransferConfig()
    raw = text.strip()
    label = None
    if "=" in raw:
        label, raw = (s.strip() for s in raw.split("=", 1))
        if not _LABEL.match(label):
            raise ConfigError(f"--encoder {text!r}: label {label!r} may hold letters, digits, '_', '-', '.' only")
    if raw == "classical":
        return EncoderSource(label or "classical", "classical", text)
    if raw == "random" or raw.startswith("random:"):
        arch = raw.split(":", 1)[1] if ":" in raw else cfg.encoder
        from ..models import list_encoders

        if arch not in list_encoders():
            from ..utils import look_up_option

            look_up_option(arch, list_encoders(), what="encoder architecture")
        return EncoderSource(label or ("random" if arch == cfg.encoder else f"random_{arch}"), "random", text,
                             arch=arch)
    if raw.startswith("single:"):
        task = raw.split(":", 1)[1]
        if not task:
            raise ConfigError(f"--encoder {text!r}: expected single:<pretraining task>")
        return EncoderSource(label or f"single_{task}", "single-task", text, pretrain_task=task)
    arch = None
    if "@" in raw and not Path(raw).exists():
        raw, arch = raw.rsplit("@", 1)
    path = Path(raw).expanduser()
    if not path.exists():
        raise ConfigError(f"--encoder {text!r}: {path} does not exist (expected random, single:<task>, a run "
                          "folder, a checkpoint folder or FILE@<arch>)")
    if path.is_dir():
        ckpt = _checkpoint_dir(path)
        if ckpt is None:
            raise ConfigError(f"--encoder {text!r}: {path} holds neither config.json + model.safetensors "
                              "nor model/config.json")
        name = path.name if ckpt == path else path.name
        return EncoderSource(label or _safe(name), _kind_of_checkpoint(ckpt), text, path=str(ckpt))
    return EncoderSource(label or _safe(path.stem), "weights", text, path=str(path), arch=arch or cfg.encoder)


def _safe(name: str) -> str:
    out = re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("_")
    return out or "encoder"


def prepare_encoder(source: EncoderSource, database: str | Path, out: str | Path, cfg: TransferConfig,
                    spatial_dims: int = 2) -> EncoderSource:
    """Make a source ready to build models from: trains ``single:<task>`` baselines (once;
    a finished or interrupted run in ``OUT/encoders/`` is reused or resumed)."""
    if source.pretrain_task is None or source.path is not None:
        return source
    from ..training import PretrainConfig, pretrain

    run = Path(out) / "encoders" / f"single_{source.pretrain_task}"
    model_dir = run / "model"
    if not (model_dir / "config.json").is_file():
        rounds = cfg.single_task_rounds
        pcfg = PretrainConfig(database=str(database), out=str(run), encoder=cfg.encoder,
                              decoder_channels=cfg.decoder_channels, tasks=[source.pretrain_task], rounds=rounds,
                              warmup_rounds=max(1, rounds // 10), checkpoint_every=max(1, rounds // 4),
                              eval_every=0, eval_max_samples=64, device=cfg.device, progress=cfg.progress,
                              seed=cfg.init_seed)
        pretrain(pcfg)
    return replace(source, path=str(model_dir))


def build_model(source: EncoderSource, spec: TaskSpec, cfg: TransferConfig, seed: int) -> Any:
    """A :class:`~medfoundry.models.FoundationModel` with the source's encoder and a fresh head
    for ``spec`` (on the CPU).

    Pretrained models keep their adapters, encoder and decoder; their pretraining heads are
    dropped. Random-init encoders are seeded with ``cfg.init_seed + seed``; the new head (and a
    decoder that the checkpoint lacks) with ``seed``.
    """
    from ..models import FoundationModel, load_encoder, load_encoder_state

    if source.kind == "classical":
        from .classical import ClassicalEncoder

        torch.manual_seed(seed)
        model = ClassicalEncoder()
        model.add_task(spec)
        return model
    if source.kind == "random":
        torch.manual_seed(cfg.init_seed + seed)
        model = FoundationModel(source.arch or cfg.encoder, spatial_dims=spec.spatial_dims,
                                decoder_channels=cfg.decoder_channels)
    elif source.path is None:
        raise ConfigError(f"encoder {source.label!r}: not prepared (call prepare_encoder first)")
    else:
        path = Path(source.path)
        torch.manual_seed(seed)
        if path.is_dir():
            cfg_json = json.loads((path / "config.json").read_text(encoding="utf-8"))
            if cfg_json.get("decoder_channels") is not None:
                model = FoundationModel.from_pretrained(path)
                for name in list(model.task_specs):
                    model.remove_task(name)
            else:
                trunk = load_encoder(path)
                model = _wrap_trunk(trunk, cfg)
        else:
            trunk = load_encoder_state(path, source.arch or cfg.encoder, spatial_dims=spec.spatial_dims)
            model = _wrap_trunk(trunk, cfg)
        if model.spatial_dims != spec.spatial_dims:
            raise ConfigError(f"encoder {source.label!r} is {model.spatial_dims}D but task {spec.name!r} is "
                              f"{spec.spatial_dims}D")
    torch.manual_seed(seed)
    model.add_task(spec)
    return model


def not_applicable(source: EncoderSource, spec: TaskSpec, mode: str) -> str | None:
    """Why ``source`` cannot run ``mode`` on ``spec`` (``None``: it can)."""
    if source.kind != "classical":
        return None
    from ..tasks import get_kind

    if mode != "frozen":
        return "the classical baseline has no network to fine-tune (frozen mode only)"
    if not get_kind(spec.kind).pooled:
        return f"the classical baseline predicts one output per image; {spec.kind.value} needs feature maps"
    if spec.spatial_dims != 2:
        return f"the classical baseline describes 2D images; task {spec.name!r} is {spec.spatial_dims}D"
    return None


def drop_inapplicable(plan: list[tuple[str, EncoderSource, str, int, float]], specs: dict[str, TaskSpec]
                      ) -> tuple[list[tuple[str, EncoderSource, str, int, float]], list[dict[str, Any]]]:
    """``plan`` without the runs :func:`not_applicable` rules out, and one record per skipped
    (task, encoder, mode): ``{"task", "encoder", "mode", "runs", "reason"}`` (for config.json)."""
    kept, skipped = [], {}
    for run in plan:
        task, src, mode = run[0], run[1], run[2]
        reason = not_applicable(src, specs[task], mode)
        if reason is None:
            kept.append(run)
        else:
            entry = skipped.setdefault((task, src.label, mode), {"task": task, "encoder": src.label, "mode": mode,
                                                                  "runs": 0, "reason": reason})
            entry["runs"] += 1
    return kept, list(skipped.values())


def _wrap_trunk(trunk: Any, cfg: TransferConfig) -> Any:
    """A FoundationModel around a loaded trunk, with a fresh decoder."""
    from ..models import FoundationModel

    enc = trunk.encoder
    model = FoundationModel(enc.name, spatial_dims=trunk.spatial_dims, decoder_channels=cfg.decoder_channels,
                            adapter_channels=enc.in_channels, adapter_standardize=trunk.adapters.standardize,
                            **(getattr(enc, "build_kwargs", None) or {}))
    model.trunk = trunk
    return model
