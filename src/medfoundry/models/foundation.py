"""The multi-task foundation model: input adapters -> shared encoder -> shared decoder -> heads.

A forward pass runs one task: ``model(image, task)`` goes through the task's modality adapter,
the encoder, the shared decoder (only for heads with ``uses_decoder``) and that task's head,
so only that path's parameters receive gradients (the memory-decoupled multi-task loop
relies on this).

The checkpoint folder format (``config.json`` + ``model.safetensors``) and its reading and
writing live in :mod:`medfoundry.models.checkpoint`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from .. import __version__
from ..data.tasks import Modality, TaskSpec, parse_modality
from ..errors import CheckpointError, ConfigError
from ..utils import look_up_option
from .checkpoint import CONFIG_NAME, FORMAT, FORMAT_VERSION, WEIGHTS_NAME
from .checkpoint import load_state, read_config, read_state_dict, read_weights, write_checkpoint
from .decoders import SharedDecoder
from .encoders import Encoder
from .heads import Head, create_head
from .registry import create_encoder
from .stems import AdapterBank, AdapterResolution, parse_adapter_key

__all__ = [
    "FoundationModel",
    "EncoderWithAdapters",
    "load_encoder",
    "load_encoder_state",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "FORMAT_VERSION",
]



def _pool(features: Sequence[torch.Tensor], multiscale: bool) -> torch.Tensor:
    maps = features if multiscale else features[-1:]
    return torch.cat([f.flatten(2).mean(dim=2) for f in maps], dim=1)


class EncoderWithAdapters(nn.Module):
    """Input adapters plus a registered encoder: a plain multi-scale feature extractor.

    Args:
        encoder: registry name (see ``list_encoders``).
        spatial_dims: 2 or 3.
        adapter_channels: the encoder's ``in_channels`` (output channels of every adapter).
        adapter_standardize: z-score each image channel inside the adapters.
        **encoder_kw: architecture options passed to ``create_encoder``.

    Example:
        >>> trunk = load_encoder("runs/pretrain/final")
        >>> maps = trunk(image, "x-ray")          # list of (B, C_i, H / r_i, W / r_i)
        >>> vec = trunk.embed(image, "x-ray")      # (B, trunk.embed_dim)
    """

    def __init__(self, encoder: str = "resnet_small", spatial_dims: int = 2, adapter_channels: int = 16,
                 adapter_standardize: bool = True, **encoder_kw: Any):
        super().__init__()
        self.encoder: Encoder = create_encoder(encoder, spatial_dims=spatial_dims, in_channels=adapter_channels,
                                               **encoder_kw)
        self.adapters = AdapterBank(spatial_dims, adapter_channels, adapter_standardize)
        self.spatial_dims = spatial_dims

    @property
    def encoder_name(self) -> str:
        return self.encoder.name

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        return self.encoder.feature_info

    @property
    def embed_dim(self) -> int:
        """Size of :meth:`embed` with ``multiscale=False`` (the last stage's channels)."""
        return self.encoder.out_channels

    @property
    def embed_dim_multiscale(self) -> int:
        return sum(int(f["num_chs"]) for f in self.encoder.feature_info)

    def ensure_adapter(self, modality: Modality | str, channels: int, dedicated: bool = False
                       ) -> AdapterResolution:
        """Make sure images of ``(modality, channels)`` can enter, following the fallback rule
        of :mod:`medfoundry.models.stems` (``dedicated=True``: give the key its own adapter,
        initialised by that rule). Call before building an optimizer for a new modality so a
        new adapter's parameters are included."""
        return self.adapters.ensure(modality, channels, dedicated, device=next(self.encoder.parameters()).device)

    def _check_image(self, image: torch.Tensor, where: str) -> None:
        if not isinstance(image, torch.Tensor) or image.ndim != 2 + self.spatial_dims:
            axes = "(B, C, H, W)" if self.spatial_dims == 2 else "(B, C, D, H, W)"
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"{where}: expected an image batch {axes}, got {got}")

    def forward(self, image: torch.Tensor, modality: Modality | str) -> list[torch.Tensor]:
        """Multi-scale features (finest first) of ``image`` (B, C, *spatial) of ``modality``."""
        return self.forward_with_input(image, modality)[1]

    def forward_with_input(self, image: torch.Tensor, modality: Modality | str
                           ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(adapted image (B, in_channels, *spatial), multi-scale features)``; the adapted
        image is the full-resolution skip of a ``SharedDecoder`` built with
        ``full_resolution_channels``."""
        self._check_image(image, "EncoderWithAdapters.forward")
        adapted = self.adapters(image, parse_modality(modality).value)
        return adapted, self.encoder.forward_intermediates(adapted)

    def embed(self, image: torch.Tensor, modality: Modality | str, multiscale: bool = False) -> torch.Tensor:
        """Global-average-pooled features ``(B, D)``: the last stage (``D = embed_dim``) or,
        with ``multiscale``, every stage concatenated (``D = embed_dim_multiscale``)."""
        return _pool(self(image, modality), multiscale)

    def config(self) -> dict[str, Any]:
        return {
            "encoder": {"name": self.encoder.name, "spatial_dims": self.spatial_dims,
                        "in_channels": self.encoder.in_channels, "kwargs": _jsonable(self.encoder.build_kwargs),
                        "defaults": self.encoder.defaults.to_dict() if self.encoder.defaults else None},
            "adapters": self.adapters.config(),
            "adapter_standardize": self.adapters.standardize,
        }

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write this extractor as a foundation checkpoint with no decoder and no tasks."""
        directory = Path(directory)
        state = {f"trunk.{k}": v for k, v in self.state_dict().items()}
        config = {"format": FORMAT, "format_version": FORMAT_VERSION, "medfoundry_version": __version__,
                  **self.config(), "decoder_channels": None, "tasks": [], "head_kwargs": {}}
        write_checkpoint(directory, state, config)
        return directory


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


class FoundationModel(nn.Module):
    """Shared encoder + shared decoder + one head per task.

    Args:
        encoder: registry name of the encoder (``list_encoders()``), or an already built
            :class:`EncoderWithAdapters` (e.g. from :func:`load_encoder`) to put new decoder
            and heads on; then ``spatial_dims`` and ``adapter_*`` come from it.
        tasks: task specs to add heads for (see :meth:`add_task`).
        spatial_dims: 2 or 3; every task must match.
        decoder_channels: channels of the shared decoder map.
        adapter_channels: output channels of the input adapters = the encoder's ``in_channels``.
        adapter_standardize: z-score each image channel per sample inside the adapters.
        head_kwargs: per-task head options, ``{task: {...}}`` (e.g. detection ``score_threshold``).
        decoder_full_resolution: decode to full resolution with the adapters' output as a
            skip connection (finer segmentation; dense heads then work at stride 1; more
            memory). Default: the decoder map is at the encoder's finest reduction (4).
        **encoder_kw: architecture options for ``create_encoder`` (``widths``, ``depths``,
            ``drop_path_rate``, ...).

    Attributes:
        trunk: :class:`EncoderWithAdapters` (``trunk.adapters``, ``trunk.encoder``).
        decoder: :class:`~medfoundry.models.decoders.SharedDecoder`.
        heads: ``nn.ModuleDict`` task -> :class:`~medfoundry.models.heads.Head`.
        task_specs: ``dict`` task -> :class:`TaskSpec`.

    Example:
        >>> model = FoundationModel("resnet_small", tasks=db.tasks.values())
        >>> out = model(batch["image"], batch["task"])
        >>> loss = model.heads[batch["task"]].loss(out, batch["target"])
    """

    def __init__(self, encoder: str | EncoderWithAdapters = "resnet_small", tasks: Sequence[TaskSpec] = (),
                 spatial_dims: int = 2, decoder_channels: int = 64, adapter_channels: int = 16,
                 adapter_standardize: bool = True, head_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                 decoder_full_resolution: bool = False, **encoder_kw: Any):
        super().__init__()
        if isinstance(encoder, EncoderWithAdapters):
            if encoder_kw:
                raise ConfigError(f"FoundationModel: encoder options {sorted(encoder_kw)} cannot apply to an "
                                  "already built encoder")
            # a loaded trunk (load_encoder / load_encoder_state) decides dimensions and channels
            self.trunk = encoder
            spatial_dims = encoder.spatial_dims
        else:
            self.trunk = EncoderWithAdapters(encoder, spatial_dims, adapter_channels, adapter_standardize,
                                             **encoder_kw)
        self.spatial_dims = spatial_dims
        self.decoder = SharedDecoder(self.trunk.feature_info, decoder_channels, spatial_dims,
                                     self.trunk.encoder.in_channels if decoder_full_resolution else None)
        self.heads = nn.ModuleDict()
        self.task_specs: dict[str, TaskSpec] = {}
        self.head_kwargs: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (head_kwargs or {}).items()}
        for spec in tasks:
            self.add_task(spec)

    # ------------------------------------------------------------------ structure
    @property
    def encoder(self) -> Encoder:
        return self.trunk.encoder

    @property
    def adapters(self) -> AdapterBank:
        return self.trunk.adapters

    @property
    def encoder_name(self) -> str:
        return self.trunk.encoder_name

    def add_task(self, spec: TaskSpec, **head_kw: Any) -> Head:
        """Add the head of ``spec`` and, for a new ``"<modality>:<channels>"`` key, a dedicated
        input adapter initialised by the fallback rule of :mod:`medfoundry.models.stems`
        (a copy of a same-channel adapter, a channel-adapted copy, or fresh). Adding the same spec
        again returns the existing head; a different spec under an existing name is an error.
        New parameters live on the device of the trunk.

        Raises:
            ConfigError: the spec's ``spatial_dims`` differs from the model's, or the name is
                taken by a different spec.
        """
        if not isinstance(spec, TaskSpec):
            raise ConfigError(f"FoundationModel.add_task: expected a TaskSpec, got {type(spec).__name__}")
        if spec.spatial_dims != self.spatial_dims:
            raise ConfigError(f"FoundationModel.add_task: task {spec.name!r} has spatial_dims={spec.spatial_dims} "
                              f"but the model was built with spatial_dims={self.spatial_dims}")
        if spec.name in self.task_specs:
            if self.task_specs[spec.name] != spec:
                raise ConfigError(f"FoundationModel.add_task: a different task named {spec.name!r} exists "
                                  f"(existing {self.task_specs[spec.name].kind.value}, "
                                  f"{self.task_specs[spec.name].num_classes} classes)")
            return self.heads[spec.name]
        kw = {**self.head_kwargs.get(spec.name, {}), **head_kw}
        head = create_head(spec, [f["num_chs"] for f in self.trunk.feature_info], self.decoder.out_channels,
                           stride=self.decoder.reduction_per_axis, **kw)
        ref = next(self.trunk.parameters())
        self.heads[spec.name] = head.to(ref.device)
        self.task_specs[spec.name] = spec
        if kw:
            self.head_kwargs[spec.name] = kw
        self.trunk.ensure_adapter(spec.modality, spec.channels, dedicated=True)
        return head

    def remove_task(self, name: str) -> None:
        """Drop a task's head (adapters stay: other tasks may share them)."""
        look_up_option(name, self.task_specs, what="task")
        del self.heads[name]
        del self.task_specs[name]
        self.head_kwargs.pop(name, None)

    @classmethod
    def from_encoder(cls, trunk: EncoderWithAdapters, tasks: Sequence[TaskSpec] = (), decoder_channels: int = 64,
                     head_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                     decoder_full_resolution: bool = False) -> "FoundationModel":
        """A model around a loaded encoder with a fresh decoder and fresh heads (transfer).
        The trunk module is shared, not copied."""
        return cls(trunk, tasks, decoder_channels=decoder_channels, head_kwargs=head_kwargs,
                   decoder_full_resolution=decoder_full_resolution)

    def set_trunk_trainable(self, trainable: bool, include_decoder: bool = True) -> None:
        """Freeze (``False``) or unfreeze the adapters and encoder, and the decoder unless
        ``include_decoder=False`` (linear probing freezes the trunk, fine-tuning does not)."""
        for p in self.trunk.parameters():
            p.requires_grad_(trainable)
        if include_decoder:
            for p in self.decoder.parameters():
                p.requires_grad_(trainable)

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts of ``adapters``, ``encoder``, ``decoder`` and ``head/<task>``."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        out = {"adapters": count(self.trunk.adapters), "encoder": count(self.trunk.encoder),
               "decoder": count(self.decoder)}
        out.update({f"head/{t}": count(h) for t, h in self.heads.items()})
        return out

    def trunk_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters shared by all tasks: adapters, encoder and decoder (not the heads)."""
        yield from self.trunk.parameters()
        yield from self.decoder.parameters()

    def head_parameters(self, task: str) -> Iterator[nn.Parameter]:
        return self.heads[self._task(task)].parameters()

    def place(self, device: torch.device | str, active: Sequence[str] | None = None,
              idle_device: torch.device | str = "cpu") -> "FoundationModel":
        """Move adapters, encoder and decoder to ``device``; the heads named in ``active`` to
        ``device`` and every other head to ``idle_device`` (keeps accelerator memory to the
        trunk plus the active heads). ``active=None`` moves every head."""
        self.trunk.to(device)
        self.decoder.to(device)
        for name, head in self.heads.items():
            head.to(device if active is None or name in active else idle_device)
        return self

    def _task(self, task: str) -> str:
        if task not in self.task_specs:
            look_up_option(task, self.task_specs, what="task")
        return task

    # -------------------------------------------------------------------- forward
    def features(self, image: torch.Tensor, modality: Modality | str, channels: int | None = None
                 ) -> list[torch.Tensor]:
        """Multi-scale encoder features (adapter + encoder), finest first.

        Args:
            image: ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
            modality: modality group of the image (picks the input adapter).
            channels: optional check that ``image`` has this many channels.
        """
        if channels is not None and image.shape[1] != channels:
            raise ValueError(f"FoundationModel.features: image has {image.shape[1]} channels, expected {channels}")
        return self.trunk(image, modality)

    def embed(self, image: torch.Tensor, modality: Modality | str, multiscale: bool = False) -> torch.Tensor:
        """Global-average-pooled features ``(B, D)`` for linear probes (see
        :meth:`EncoderWithAdapters.embed`)."""
        return self.trunk.embed(image, modality, multiscale)

    def forward(self, image: torch.Tensor, task: str) -> Any:
        """Raw output of ``task``'s head for ``image`` (see that head's ``forward``)."""
        spec = self.task_specs[self._task(task)]
        head = self.heads[task]
        adapted, feats = self.trunk.forward_with_input(image, spec.modality)
        x = self.decoder(feats, adapted if self.decoder.needs_skip else None) if head.uses_decoder else feats
        return head(x, image_size=tuple(image.shape[2:]))

    def loss(self, output: Any, target: Any, task: str) -> torch.Tensor:
        return self.heads[self._task(task)].loss(output, target)

    def decode(self, output: Any, task: str) -> list[Any]:
        return self.heads[self._task(task)].decode(output)

    @torch.no_grad()
    def predict(self, image: torch.Tensor, task: str) -> list[Any]:
        """Decoded per-sample numpy predictions (eval mode is the caller's business)."""
        return self.decode(self(image, task), task)

    # ------------------------------------------------------------------ save/load
    def config(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "medfoundry_version": __version__,
                **self.trunk.config(), "decoder_channels": self.decoder.out_channels,
                "decoder_full_resolution": self.decoder.needs_skip,
                "tasks": [s.to_dict() for s in self.task_specs.values()],
                "head_kwargs": _jsonable(self.head_kwargs)}

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically)."""
        directory = Path(directory)
        write_checkpoint(directory, self.state_dict(), self.config())
        return directory

    @classmethod
    def from_config(cls, config: Mapping[str, Any], source: str = CONFIG_NAME) -> "FoundationModel":
        enc = _config_field(config, "encoder", dict, source)
        if config.get("decoder_channels") is None:
            raise CheckpointError(f"{source}: [decoder_channels] this checkpoint holds an encoder only; "
                                  "open it with load_encoder(dir)")
        try:
            tasks = [TaskSpec.from_dict(t, source=source) for t in config.get("tasks", [])]
            model = cls(enc["name"], spatial_dims=int(enc["spatial_dims"]),
                        decoder_channels=int(config["decoder_channels"]), adapter_channels=int(enc["in_channels"]),
                        adapter_standardize=bool(config.get("adapter_standardize", True)),
                        head_kwargs=config.get("head_kwargs") or {},
                        decoder_full_resolution=bool(config.get("decoder_full_resolution", False)),
                        **(enc.get("kwargs") or {}))
            _add_adapters(model.trunk, config, source)
            for spec in tasks:
                model.add_task(spec)
        except (KeyError, TypeError, ValueError, ConfigError) as err:
            raise CheckpointError(f"{source}: cannot rebuild the model: {err}") from err
        return model

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu",
                        strict: bool = True) -> "FoundationModel":
        """Rebuild a model saved with :meth:`save_pretrained`.

        Raises:
            CheckpointError: missing/corrupt files, unknown format version, or weights that do
                not match the config.
        """
        directory = Path(directory)
        config = read_config(directory)
        model = cls.from_config(config, source=str(directory / CONFIG_NAME))
        state = read_weights(directory, map_location, config.get("save_id"))
        load_state(model, state, strict, directory / WEIGHTS_NAME)
        return model.to(map_location)


# ------------------------------------------------------------------------- rebuilding from a checkpoint
def _config_field(config: Mapping[str, Any], key: str, typ: type, source: str) -> Any:
    value = config.get(key)
    if not isinstance(value, typ):
        raise CheckpointError(f"{source}: [{key}] expected a {typ.__name__}, found {type(value).__name__}")
    return value


def _add_adapters(trunk: EncoderWithAdapters, config: Mapping[str, Any], source: str) -> None:
    # adapters are re-created in their saved order: the fallback rule depends on it
    for entry in config.get("adapters", []):
        modality, channels = parse_adapter_key(entry["key"])
        trunk.adapters.add(modality, channels)


def load_encoder(directory: str | Path, map_location: str | torch.device = "cpu") -> EncoderWithAdapters:
    """Load only the adapters and the encoder of a checkpoint folder (a
    ``FoundationModel.save_pretrained`` or ``EncoderWithAdapters.save_pretrained`` output)."""
    directory = Path(directory)
    config = read_config(directory)
    source = str(directory / CONFIG_NAME)
    enc = _config_field(config, "encoder", dict, source)
    try:
        trunk = EncoderWithAdapters(enc["name"], int(enc["spatial_dims"]), int(enc["in_channels"]),
                                    bool(config.get("adapter_standardize", True)), **(enc.get("kwargs") or {}))
        _add_adapters(trunk, config, source)
    except (KeyError, TypeError, ValueError, ConfigError) as err:
        raise CheckpointError(f"{source}: cannot rebuild the encoder: {err}") from err
    weights = read_weights(directory, map_location, config.get("save_id"))
    state = {k[len("trunk."):]: v for k, v in weights.items() if k.startswith("trunk.")}
    load_state(trunk, state, True, directory / WEIGHTS_NAME)
    return trunk.to(map_location)


def load_encoder_state(path: str | Path, name: str, spatial_dims: int = 2, map_location: str | torch.device = "cpu",
                       strict: bool = True, **encoder_kw: Any) -> EncoderWithAdapters:
    """Wrap a plain state dict of a registered encoder (your own weights) with input adapters.

    Args:
        path: ``.safetensors``, or a ``torch.save`` file (``.pt``/``.pth``/``.bin``) of a state
            dict, optionally nested under ``"state_dict"``/``"model"``, prefixed with
            ``module.`` (DDP); from a larger model only the ``trunk.encoder.*`` (else
            ``encoder.*``) entries are used, so ``model.safetensors`` of a checkpoint works too.
        name: registry name of the architecture the weights belong to.
        spatial_dims: 2 or 3.
        strict: every encoder weight must be present.
        **encoder_kw: architecture options used when the weights were trained.

    Returns:
        An :class:`EncoderWithAdapters` whose ``in_channels`` is read from the stem weight;
        adapters are created on first use (no adapter weights come with a plain state dict).
    """
    path = Path(path)
    state = read_state_dict(path, map_location)
    for prefix in ("trunk.encoder.", "encoder."):  # the encoder part of a larger model
        subset = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if subset:
            state = subset
            break
    # the input channels are those of the first conv weight of the stem
    stem_key = next((k for k, v in state.items() if k.startswith("stem.") and v.ndim >= 3), None)
    stem = None if stem_key is None else state[stem_key]
    if stem is None or stem.ndim != 2 + spatial_dims:
        raise CheckpointError(f"{path}: [{stem_key or 'stem.*.weight'}] expected a {2 + spatial_dims}-D conv weight "
                              f"of a {name!r} encoder with spatial_dims={spatial_dims}, found "
                              f"{None if stem is None else tuple(stem.shape)}")
    trunk = EncoderWithAdapters(name, spatial_dims, int(stem.shape[1]), **encoder_kw)
    load_state(trunk.encoder, state, strict, path)
    return trunk.to(map_location)
