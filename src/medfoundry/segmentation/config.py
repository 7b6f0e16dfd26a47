"""Typed configuration of ``medfoundry segment train`` (saved as ``RUN/config.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigBase

__all__ = ["SegmentConfig"]


@dataclass
class SegmentConfig(ConfigBase):
    """Patch-based 3D segmentation training.

    Attributes:
        database: database folder holding the 3D task.
        task: name of the stored 3D segmentation task.
        encoder: ``random`` (``encoder_name`` with ``encoder_kwargs``, from scratch), a
            checkpoint folder (``config.json`` + ``model.safetensors`` of ``medfoundry
            pretrain`` or ``save_pretrained``) or a ``.safetensors``/``.pt`` state dict of
            ``encoder_name``; a pretrained encoder must have ``spatial_dims=3``.
        encoder_name: registered encoder architecture.
        encoder_kwargs: architecture options of a random encoder.
        adapter_channels: channels of the input adapter (= the encoder's input channels).
        decoder_norm: ``instance`` (needs patches >= 32 voxels per axis) or ``group``
            (:mod:`medfoundry.models.unet`).
        regions: ``"NAME=v,v;..."``: sigmoid region outputs and losses (BraTS
            ``WT=1,2,3;TC=1,3;ET=3``); ``None``: one softmax class per label.
        patch: training patch (voxels, NIfTI axis order).
        batch_size: patches per step.
        steps: optimizer steps (exclusive with ``minutes``).
        minutes: wall-clock budget of the whole command (training, validation, saving);
            4 when neither ``steps`` nor ``minutes`` is given.
        lr: peak AdamW learning rate (linear warm-up, then polynomial decay to 0 over the
            steps or the time budget).
        weight_decay: AdamW weight decay.
        warmup_steps: steps of linear warm-up.
        foreground_fraction: share of patches centred on a foreground voxel (a random class
            present in the case, then a random voxel of it), the rest uniformly placed.
        augment: MONAI spatial (flips, small rotation/scaling) and intensity (scale, shift,
            noise) augmentation.
        checkpoint_every: steps between checkpoints; 0 = only at the end.
        val_every: steps between validations (sliding window over the validation cases,
            Dice per label or region into metrics.jsonl); 0 = only at the end. Each costs
            seconds on a CPU, taken from a ``minutes`` budget.
        val_patch: sliding-window size for validation and prediction (default: ``patch``).
        seed: seed of initialisation, patch sampling and augmentation.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        threads: torch CPU threads; 0 = the cores not already busy (cores minus the load
            average, at least 1: on shared cores, threads that wait for each other are slower
            than one thread).
    """

    database: str = ""
    task: str = ""
    encoder: str = "random"
    encoder_name: str = "resnet_small"
    encoder_kwargs: dict[str, Any] = field(default_factory=lambda: {"depths": [1, 1, 1, 1]})
    adapter_channels: int = 16
    decoder_norm: str = "instance"
    regions: str | None = None
    patch: tuple[int, int, int] = (32, 32, 32)
    batch_size: int = 4
    steps: int | None = None
    minutes: float | None = None
    lr: float = 1e-2
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    foreground_fraction: float = 0.5
    augment: bool = True
    checkpoint_every: int = 100
    val_every: int = 0
    val_patch: tuple[int, int, int] | None = None
    seed: int = 0
    device: str = "auto"
    threads: int = 0

    def validate(self) -> None:
        self.patch = tuple(int(p) for p in self.patch)  # type: ignore[assignment]
        if len(self.patch) != 3 or min(self.patch) < 8:
            raise self.bad("patch", "3 sizes >= 8 voxels")
        if self.val_patch is not None:
            self.val_patch = tuple(int(p) for p in self.val_patch)  # type: ignore[assignment]
            if len(self.val_patch) != 3 or min(self.val_patch) < 8:
                raise self.bad("val_patch", "3 sizes >= 8 voxels")
        if self.steps is not None and self.minutes is not None:
            raise self.bad("steps", "either steps or minutes, not both")
        if self.steps is None and self.minutes is None:
            self.minutes = 4.0
        if self.steps is not None and int(self.steps) < 1:
            raise self.bad("steps", "a positive number of steps")
        if self.minutes is not None and float(self.minutes) <= 0:
            raise self.bad("minutes", "a positive number of minutes")
        if self.batch_size < 1:
            raise self.bad("batch_size", "a positive int")
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise self.bad("foreground_fraction", "a share in [0, 1]")
        if self.lr <= 0:
            raise self.bad("lr", "a positive learning rate")
        if self.checkpoint_every < 0:
            raise self.bad("checkpoint_every", "0 or a positive number of steps")
        if self.val_every < 0:
            raise self.bad("val_every", "0 or a positive number of steps")
        self.encoder_kwargs = dict(self.encoder_kwargs or {})
        if self.decoder_norm not in ("instance", "group"):
            raise self.bad("decoder_norm", "instance or group")
        if self.decoder_norm == "instance" and min(self.patch) < 32:
            raise self.bad("patch", "at least 32 voxels per axis with decoder_norm 'instance' (or use 'group')")
