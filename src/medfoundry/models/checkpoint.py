"""The model checkpoint folder: write and read ``config.json`` + ``model.safetensors``.

Folder written by ``FoundationModel.save_pretrained`` (and ``EncoderWithAdapters.save_pretrained``,
which leaves out decoder and heads)::

    DIR/
      config.json          {"format": "medfoundry.foundation", "format_version": 1,
                            "medfoundry_version", "encoder": {"name", "spatial_dims",
                            "in_channels", "kwargs", "defaults"}, "decoder_channels",
                            "decoder_full_resolution",
                            "adapters": [{"key", "modality", "channels"}, ...],
                            "adapter_standardize", "tasks": [TaskSpec.to_dict(), ...],
                            "head_kwargs": {task: {...}}, "save_id"}
      model.safetensors    every weight; keys "trunk.encoder.*", "trunk.adapters.adapters.<key>.*",
                           "decoder.*", "heads.<task>.*"

Both files are written atomically, weights first; ``save_id`` (also in the weights' metadata)
pairs them, so weights and config of two different saves are never loaded together. Nothing
here unpickles: weights are safetensors, and plain ``torch.save`` state dicts load with
``weights_only=True``. Rebuilding modules from a config stays in :mod:`.foundation`.
"""

from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import CheckpointError
from ..utils import atomic_path, atomic_write_json

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "FORMAT_VERSION", "FORMAT", "write_checkpoint", "read_config",
           "read_weights", "load_state", "read_state_dict"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
FORMAT = "medfoundry.foundation"


def write_checkpoint(directory: Path, state: Mapping[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Write ``state`` as ``model.safetensors`` and ``config`` (plus a fresh ``save_id``) as ``config.json``."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared or non-contiguous storage; saved tensors are independent copies
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    # Each file is replaced atomically, but a crash between the two renames would pair new
    # weights with an old config: a shared id in both lets the loader detect that.
    save_id = uuid.uuid4().hex
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION),
                                               "save_id": save_id})
    atomic_write_json(directory / CONFIG_NAME, {**config, "save_id": save_id})


def read_config(directory: Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint folder, its format and version checked."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {CONFIG_NAME} (not a medfoundry checkpoint folder, or an "
                              "interrupted save)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: [format] expected {FORMAT!r}, found {config.get('format')!r}"
                              if isinstance(config, dict) else f"{path}: expected a JSON object")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: [format_version] expected {FORMAT_VERSION}, found "
                              f"{config.get('format_version')!r}")
    return config


def read_weights(directory: Path, map_location: str | torch.device, save_id: str | None = None
                 ) -> dict[str, torch.Tensor]:
    """``model.safetensors`` of a checkpoint folder; with ``save_id``, refuse weights of another save."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = directory / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file missing")
    try:
        if save_id is not None:
            with safe_open(str(path), framework="pt") as fh:
                found = (fh.metadata() or {}).get("save_id")
            if found != save_id:
                raise CheckpointError(f"{path}: [save_id] the weights ({found}) do not belong to {CONFIG_NAME} "
                                      f"({save_id}); a save was interrupted, save again")
        return load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(f"{path}: cannot read weights: {err}") from err


def load_state(module: nn.Module, state: Mapping[str, torch.Tensor], strict: bool, path: Path) -> None:
    """``module.load_state_dict`` with a mismatch reported as a CheckpointError naming ``path``."""
    try:
        result = module.load_state_dict(state, strict=strict)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not match the config: {err}") from err
    if not strict and (result.missing_keys or result.unexpected_keys):
        warnings.warn(f"{path}: missing {len(result.missing_keys)} keys, unexpected {len(result.unexpected_keys)}",
                      stacklevel=3)


def read_state_dict(path: Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A plain state dict from ``.safetensors`` or a ``torch.save`` file (``.pt``/``.pth``/``.bin``).

    A dict nested under ``"state_dict"``/``"model"`` is unwrapped and a DDP ``module.`` prefix
    dropped. ``torch.save`` files load with ``weights_only=True``: a file that would need the
    full unpickler (and could run code) is refused.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device=str(map_location))
        else:
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure means an unusable file
        raise CheckpointError(f"{path}: cannot read a state dict: {err}") from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors")
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state
