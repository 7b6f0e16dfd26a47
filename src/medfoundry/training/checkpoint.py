"""Atomic checkpoints and exact resumption.

A checkpoint is one ``torch.save`` file ``RUN/checkpoints/round_NNNNNNN.pt`` holding everything
the next round depends on: model weights, every optimizer's state, the round counter (the
learning-rate schedule is a pure function of it), every task's batch-stream position, the task
sampler's generator, the loss scaler, and the Python, NumPy and torch generators. Written to a
temporary file and renamed, so a crash (even SIGKILL) never leaves a half-written checkpoint
under the final name. Resuming from it gives bit-identical weights to a run never interrupted.
"""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..utils import atomic_path

__all__ = [
    "CHECKPOINT_DIR",
    "checkpoint_path",
    "list_checkpoints",
    "latest_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
]

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^round_(\d{7,})\.pt$")
FORMAT = 1


def checkpoint_path(run_dir: str | Path, round_: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"round_{round_:07d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(round, path)`` of every complete checkpoint of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_checkpoint(run_dir: str | Path, round_: int, state: dict[str, Any], keep: int = 1) -> Path:
    """Write ``state`` atomically as the checkpoint of ``round_``; keep the ``keep`` newest."""
    path = checkpoint_path(run_dir, round_)
    payload = {"format": FORMAT, "round": int(round_), **state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    for _, old in list_checkpoints(run_dir)[:-max(1, keep)]:
        old.unlink(missing_ok=True)
    for stale in path.parent.glob(".round_*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint does not exist")
    try:
        # weights_only: a run folder may come from someone else, and a full unpickler would run
        # whatever code the file names. Checkpoints hold only tensors and plain containers.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than tensors and plain containers "
            f"(loading it could run code). Only checkpoints written by medfoundry can be resumed."
        ) from err
    except Exception as err:  # a truncated or foreign file: say which one
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a medfoundry checkpoint of format {FORMAT}")
    return state


def capture_rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    # NumPy's legacy state as plain values and a tensor, so the checkpoint loads with weights_only.
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
