"""Build the segmentation network of a run, save it as safetensors and load it back.

``RUN/model/`` holds ``config.json`` (architecture, task facts needed to predict: classes,
regions, channels, modality, intensity, target spacing, window) and ``model.safetensors``.
Loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from ..utils import atomic_path, atomic_write_json

__all__ = ["build_trunk", "build_network", "save_network", "load_network", "set_cpu_threads", "MODEL_DIR", "FORMAT"]

MODEL_DIR = "model"
FORMAT = "medfoundry.segment3d"


def build_trunk(encoder: str, encoder_name: str, encoder_kwargs: dict[str, Any], adapter_channels: int):
    """The encoder with input adapters: random (``encoder="random"``), a ``medfoundry
    pretrain`` run folder (its ``model/``), a checkpoint folder, or a state-dict file of
    ``encoder_name``; it must be 3D."""
    from ..models import EncoderWithAdapters, load_encoder, load_encoder_state

    if encoder == "random":
        trunk = EncoderWithAdapters(encoder_name, 3, adapter_channels, False, **encoder_kwargs)
    else:
        path = Path(encoder)
        if path.is_dir():
            trunk = load_encoder(_checkpoint_folder(path))
        elif path.is_file():
            trunk = load_encoder_state(path, encoder_name, spatial_dims=3, **encoder_kwargs)
        else:
            raise ConfigError(f"--encoder {encoder}: expected 'random', a pretrain run folder, a checkpoint folder "
                              "or a weights file")
    if trunk.spatial_dims != 3:
        raise ConfigError(f"--encoder {encoder}: the encoder has spatial_dims={trunk.spatial_dims}; 3D segmentation "
                          "needs a 3D encoder (pretrain on 3D tasks only, or start from 'random')")
    return trunk


def _checkpoint_folder(path: Path) -> Path:
    """``path`` itself when it holds ``config.json``, else a pretrain run's ``model/``."""
    from ..models.checkpoint import CONFIG_NAME
    from ..training.checkpoint import latest_checkpoint

    if (path / CONFIG_NAME).is_file():
        return path
    if (path / MODEL_DIR / CONFIG_NAME).is_file():
        return path / MODEL_DIR
    if latest_checkpoint(path) is not None:
        raise ConfigError(f"--encoder {path}: the pretrain run has checkpoints but no {MODEL_DIR}/{CONFIG_NAME} yet; "
                          "let `medfoundry pretrain` finish (run it again to resume) first")
    raise ConfigError(f"--encoder {path}: expected a pretrain run folder (with {MODEL_DIR}/{CONFIG_NAME}) or a "
                      f"checkpoint folder (with {CONFIG_NAME})")


def build_network(trunk, modality: str, channels: int, out_channels: int, norm: str = "instance"):
    """:class:`~medfoundry.models.unet.SegmentationUNet` with one dedicated input adapter (any
    other adapter of a pretrained trunk is dropped: this network sees one modality)."""
    from ..models.stems import adapter_key
    from ..models.unet import SegmentationUNet

    trunk.ensure_adapter(modality, channels, dedicated=True)
    keep = adapter_key(modality, channels)
    for key in trunk.adapters.keys():
        if key != keep:
            del trunk.adapters.adapters[key]
    return SegmentationUNet(trunk, modality, channels, out_channels, norm=norm)


def save_network(run: str | Path, net, info: dict[str, Any]) -> Path:
    """Write ``RUN/model/{config.json, model.safetensors}`` (weights first, both atomic)."""
    from safetensors.torch import save_file

    folder = Path(run) / MODEL_DIR
    enc = net.trunk.encoder
    config = {"format": FORMAT, "format_version": 1,
              "encoder": {"name": enc.name, "kwargs": _jsonable(enc.build_kwargs), "in_channels": enc.in_channels,
                          "adapter_standardize": bool(net.trunk.adapters.standardize)},
              "modality": net.modality, "channels": net.channels, "out_channels": net.out_channels,
              "decoder_norm": net.norm, **info}
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    atomic_write_json(folder / "config.json", config)
    return folder


def load_network(run: str | Path, device: torch.device | str = "cpu"):
    """``(network in eval mode, config dict)`` of a run folder (or its ``model/`` folder)."""
    from safetensors.torch import load_file

    from ..models import EncoderWithAdapters

    folder = Path(run)
    if not (folder / "config.json").is_file():
        folder = folder / MODEL_DIR
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{Path(run)}: no trained model (expected {path}); has `segment train` finished?")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        if config.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a 3D segmentation model (format {config.get('format')!r})")
        enc = config["encoder"]
        trunk = EncoderWithAdapters(enc["name"], 3, int(enc["in_channels"]), bool(enc["adapter_standardize"]),
                                    **enc["kwargs"])
        net = build_network(trunk, config["modality"], int(config["channels"]), int(config["out_channels"]),
                            config.get("decoder_norm", "instance"))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot rebuild the network: {err}") from err
    try:
        state = load_file(str(folder / "model.safetensors"))
    except Exception as err:  # a missing or corrupt file: say which
        raise CheckpointError(f"{folder / 'model.safetensors'}: cannot read weights: {err}") from err
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{folder / 'model.safetensors'}: weights do not match the architecture "
                              f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    return net.to(device).eval(), config


def set_cpu_threads(threads: int = 0) -> int:
    """Set torch's CPU threads: ``threads``, or with 0 the cores not already busy (cores minus
    the 1-minute load average, at least 1). Returns the number set.

    Measured on 2 shared cores: at load average 12, two torch threads took 17 s per training
    step (each parallel region waits for the thread that lost its core), one thread about 1 s;
    on an idle machine two threads are 1.6 times faster than one.
    """
    cores = os.cpu_count() or 1
    n = threads if threads > 0 else max(1, min(cores, int(cores - os.getloadavg()[0] + 0.5)))
    torch.set_num_threads(n)
    return n


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    return obj
