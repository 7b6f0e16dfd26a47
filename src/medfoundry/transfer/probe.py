"""Frozen-encoder transfer: features computed once, only a head trains.

* kinds predicted from the pooled embedding (``Kind.pooled``: classification, multilabel): a linear (or one-hidden-layer MLP) probe on the pooled
  embedding ``model.embed(image, modality)`` (global average of the last encoder stage),
  standardised with the training subset's mean and standard deviation;
* dense kinds (segmentation, detection): the shared decoder and the task head train on the cached
  multi-scale encoder features ``model.features(image, modality)``.

The input adapters and the encoder are frozen. Features of every train/val/test sample of a
task are extracted once per encoder (:class:`FeatureCache`) and reused by every fraction,
seed and epoch, which makes a frozen sweep cost about one forward pass over the task plus the
head's training.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable

import numpy as np
import torch
from torch import nn

from ..inference import embed, features as encoder_features
from ..tasks import get_kind
from .config import TransferConfig
from .loop import RunOutput, TaskData, train_and_score

__all__ = ["FeatureCache", "extract_features", "Probe", "run_frozen"]


@torch.no_grad()
def extract_features(model: nn.Module, data: TaskData, batch_size: int, device: torch.device,
                     multiscale: bool = False) -> torch.Tensor | list[torch.Tensor]:
    """Frozen features of every row of ``data`` (on the CPU, float32).

    Returns:
        ``(N, D)`` pooled embeddings for the kinds that predict from the pooled embedding
        (``Kind.pooled``: classification, multilabel; every stage pooled and concatenated
        with ``multiscale``), else the list of multi-scale maps ``[(N, C_i, *S_i), ...]``
        (finest first).
    """
    spec = data.spec
    model.eval()
    if get_kind(spec.kind).pooled:
        return embed(model, data.images, spec.modality, batch_size, device, multiscale=multiscale)
    return encoder_features(model, data.images, spec.modality, batch_size, device)


class FeatureCache:
    """In-memory cache of frozen features, keyed by (encoder, encoder seed, task).

    Attributes:
        extractions: how many times features were computed (one per key, by design).
    """

    def __init__(self) -> None:
        self._store: dict[Hashable, Any] = {}
        self.extractions = 0

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        if key not in self._store:
            self._store[key] = compute()
            self.extractions += 1
        return self._store[key]

    def drop(self, predicate: Callable[[Hashable], bool]) -> None:
        """Free the entries whose key matches (e.g. a finished task)."""
        for k in [k for k in self._store if predicate(k)]:
            del self._store[k]


class Probe(nn.Module):
    """Standardise -> linear (or MLP with one GELU hidden layer) on pooled features.

    Args:
        mean, std: (D,) statistics of the training subset's features.
        out: number of outputs (classes or labels).
        kind: ``linear`` or ``mlp``.
        hidden: hidden width of the MLP.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, out: int, kind: str = "linear", hidden: int = 256):
        super().__init__()
        d = mean.numel()
        self.register_buffer("mean", mean.reshape(1, d).clone())
        self.register_buffer("std", std.reshape(1, d).clamp(min=1e-6).clone())
        if kind == "linear":
            self.net: nn.Module = nn.Linear(d, out)
        else:
            self.net = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def run_frozen(model: nn.Module, data: TaskData, features: torch.Tensor | list[torch.Tensor],
               train_pos: np.ndarray, val_pos: np.ndarray, test_pos: np.ndarray, cfg: TransferConfig,
               seed: int, device: torch.device) -> RunOutput:
    """Train a head on frozen features of ``model`` and predict the test rows.

    Args:
        model: a :class:`~medfoundry.models.FoundationModel` holding a head for ``data.task``
            (its decoder and head are trained in place for dense tasks).
        data: the task's rows (targets; images are not touched).
        features: output of :func:`extract_features` for ``model`` and ``data``.
        train_pos, val_pos, test_pos: rows of ``data`` (and of ``features``).
        cfg: budgets.
        seed: seeds the head init and the batch order.
        device: where the head trains.
    """
    spec = data.spec
    head = model.heads[spec.name]
    torch.manual_seed(seed)
    if get_kind(spec.kind).pooled:
        x = features if isinstance(features, torch.Tensor) else torch.as_tensor(features)
        train_x = x[torch.as_tensor(train_pos)]
        probe = Probe(train_x.mean(0), train_x.std(0, unbiased=False) if len(train_x) > 1 else torch.ones(x.shape[1]),
                      get_kind(spec.kind).outputs(spec), cfg.probe).to(device)
        x_dev = x.to(device)
        modules: list[nn.Module] = [probe]
        params = list(probe.parameters())
        lr = cfg.probe_lr

        def forward(pos: np.ndarray) -> Any:
            return probe(x_dev[torch.as_tensor(pos, device=device)])
    else:
        levels = [f.to(device) for f in features]
        decoder = model.decoder.to(device)
        head = head.to(device)
        modules = [decoder, head]
        params = list(decoder.parameters()) + list(head.parameters())
        lr = cfg.lr
        size = tuple(spec.image_size)

        def forward(pos: np.ndarray) -> Any:
            idx = torch.as_tensor(pos, device=device)
            return head(decoder([f[idx] for f in levels]), image_size=size)

    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return train_and_score(modules, optimizer, forward, head.loss, head.decode, data, train_pos, val_pos,
                           test_pos, cfg, seed, device)
