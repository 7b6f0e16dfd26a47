"""Full fine-tuning: adapters, encoder, decoder (dense tasks) and head all train.

The encoder and its input adapters learn at ``lr * encoder_lr_ratio`` (0.1 by default), the
decoder and the head at ``lr``: pretrained features move slowly while the new head catches
up. The decoder is left out of the optimizer for classification/multilabel heads, which read
the encoder directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.augment import make_augmenter
from .config import TransferConfig
from .loop import RunOutput, TaskData, train_and_score

__all__ = ["run_finetune"]


def run_finetune(model: nn.Module, data: TaskData, train_pos: np.ndarray, val_pos: np.ndarray,
                 test_pos: np.ndarray, cfg: TransferConfig, seed: int, device: torch.device) -> RunOutput:
    """Fine-tune ``model`` on rows ``train_pos`` of ``data`` and predict ``test_pos``.

    Args:
        model: a :class:`~medfoundry.models.FoundationModel` with a head for ``data.task``;
            it is trained in place.
        data: the task's rows (images in memory).
        train_pos, val_pos, test_pos: rows of ``data``.
        cfg: budgets and learning rates.
        seed: seeds the batch order (the head was initialised by the caller).
        device: where to train.
    """
    spec = data.spec
    model.to(device)
    head = model.heads[spec.name]
    groups = [
        {"params": list(model.trunk.parameters()), "lr": cfg.lr * cfg.encoder_lr_ratio},
        {"params": list(head.parameters()), "lr": cfg.lr},
    ]
    modules: list[nn.Module] = [model.trunk, head]
    if head.uses_decoder:
        groups.append({"params": list(model.decoder.parameters()), "lr": cfg.lr})
        modules.append(model.decoder)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    images = data.images
    augmenter = make_augmenter(spec, cfg.augment)

    def forward(pos: np.ndarray) -> Any:
        return model(images[torch.as_tensor(pos)].to(device), spec.name)

    def train_forward(pos: np.ndarray, step: int) -> tuple[Any, list[Any]]:
        assert augmenter is not None
        batch, targets = [], []
        for p in pos:
            image, target = augmenter(images[int(p)].numpy(), data.targets[int(p)],
                                      np.random.default_rng([seed, step, int(p)]))
            batch.append(image)
            targets.append(target)
        return model(torch.from_numpy(np.stack(batch)).to(device), spec.name), targets

    return train_and_score(modules, optimizer, forward, head.loss, head.decode, data, train_pos, val_pos,
                           test_pos, cfg, seed, device, train_forward=train_forward if augmenter else None)
