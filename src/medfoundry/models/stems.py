"""Input stems (``InputAdapter``): images of any channel count and modality enter one shared encoder.

(Named ``stems`` so it is not confused with :mod:`medfoundry.data.adapters`, the importers.)

Every image enters the encoder through the adapter of its key ``f"{modality}:{channels}"``
(e.g. ``"x-ray:1"``, ``"microscopic:3"``). An adapter standardises each channel of each
sample (z-score over space, so CT in HU, MRI in arbitrary units and 8-bit RGB all arrive on
one scale), applies a learned per-channel scale and shift (the per-modality normalisation),
and maps the ``C`` channels to the encoder's ``in_channels`` with a 3x3(x3) conv, GroupNorm
and SiLU.

Fallback rule for a key without an adapter (:meth:`AdapterBank.resolve`), so that a trained
encoder still accepts an image of an unseen modality or channel count:

1. the adapter of the exact key;
2. else the first adapter (in insertion order, which checkpoints keep) with the **same
   channel count**, whatever its modality, e.g. a grey ultrasound image enters through the
   grey X-ray adapter;
3. else a **new** adapter, initialised from an adapter of the **same modality** (else the
   first adapter) with its first conv adapted to the new channel count: weights are tiled
   over the new input channels and rescaled by ``C_old / C_new`` (summed, with the learned
   per-channel scales folded in, for one channel), so an image whose channels are copies of
   one plane gives the source adapter's output (exactly when tiling to a multiple of
   ``C_old``; up to the per-channel shifts when summing to one channel);
4. with no adapter at all, a freshly initialised one.

How the rule is applied:

* **Borrowing** (``AdapterBank.ensure(..., dedicated=False)``, used by every forward pass,
  ``features`` and ``embed``): steps 1-2 run the existing adapter and change nothing; steps
  3-4 add the new adapter.
* **Dedicated** (``dedicated=True``, used by ``FoundationModel.add_task``): every new key gets
  its own adapter (its own per-modality normalisation), initialised by the same rule: a copy
  of the step-2 adapter, the adapted step-3 copy, or a fresh one. A new task of an
  out-of-domain modality thus starts from trained adapter weights and can still specialise.

A new adapter adds parameters: create it (``add_task`` or ``ensure``) *before* building an
optimizer so they are included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data.tasks import Modality, parse_modality
from ..errors import ConfigError
from .encoders import group_norm

__all__ = ["InputAdapter", "AdapterBank", "AdapterResolution", "adapter_key", "parse_adapter_key", "adapt_input_weight"]


def adapter_key(modality: Modality | str, channels: int) -> str:
    """``"<modality>:<channels>"``, e.g. ``adapter_key("x-ray", 1) == "x-ray:1"``."""
    if int(channels) < 1:
        raise ConfigError(f"adapter_key: channels must be >= 1, got {channels!r}")
    return f"{parse_modality(modality).value}:{int(channels)}"


def parse_adapter_key(key: str) -> tuple[str, int]:
    """Inverse of :func:`adapter_key`: ``"x-ray:1" -> ("x-ray", 1)``."""
    modality, sep, channels = key.rpartition(":")
    if not sep or not channels.isdigit():
        raise ConfigError(f"adapter key {key!r} is not '<modality>:<channels>'")
    return parse_modality(modality).value, int(channels)


def adapt_input_weight(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """Adapt a conv weight ``(out, C_old, *k)`` to ``channels`` input channels.

    One channel: sum over the old channels (grey = the sum of identical colour planes).
    Otherwise: tile the old channels cyclically and rescale by ``C_old / channels``, so an
    image whose channels are all equal gives the same response as before.
    """
    c_old = weight.shape[1]
    if channels == c_old:
        return weight.clone()
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-channels // c_old)
    tiled = weight.repeat(1, reps, *([1] * (weight.ndim - 2)))[:, :channels]
    return tiled * (c_old / channels)


class InputAdapter(nn.Module):
    """Per-modality input adapter mapping ``channels`` to the encoder's ``out_channels``.

    Args:
        spatial_dims: 2 or 3.
        channels: image channels C.
        out_channels: the encoder's ``in_channels``.
        standardize: z-score each channel of each sample over space before the learned affine
            (``True``, recommended: intensity units differ between modalities).
        eps: added to the standard deviation.

    Shapes:
        ``(B, C, *spatial) -> (B, out_channels, *spatial)`` (resolution unchanged).
    """

    def __init__(self, spatial_dims: int, channels: int, out_channels: int, standardize: bool = True,
                 eps: float = 1e-5):
        super().__init__()
        self.spatial_dims, self.channels, self.out_channels = spatial_dims, channels, out_channels
        self.standardize, self.eps = standardize, eps
        shape = (1, channels) + (1,) * spatial_dims
        self.scale = nn.Parameter(torch.ones(shape))
        self.shift = nn.Parameter(torch.zeros(shape))
        from monai.networks.layers.factories import Conv  # MONAI costs ~2 s to import: only when a model is built

        self.conv = Conv[Conv.CONV, spatial_dims](channels, out_channels, 3, padding=1, bias=False)
        self.norm = group_norm(out_channels)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 + self.spatial_dims or x.shape[1] != self.channels:
            raise ValueError(f"InputAdapter: expected (B, {self.channels}, *spatial) with {self.spatial_dims} "
                             f"spatial dims, got {tuple(x.shape)}")
        if self.standardize:
            dims = tuple(range(2, x.ndim))
            mean = x.mean(dim=dims, keepdim=True)
            std = x.std(dim=dims, keepdim=True, unbiased=False)
            x = (x - mean) / (std + self.eps)
        x = x * self.scale + self.shift
        return self.act(self.norm(self.conv(x)))

    def adapted_copy(self, channels: int) -> "InputAdapter":
        """A new adapter for ``channels`` channels initialised from this one (see
        :func:`adapt_input_weight`; per-channel scale/shift are tiled the same way)."""
        new = InputAdapter(self.spatial_dims, channels, self.out_channels, self.standardize, self.eps)
        new = new.to(self.conv.weight.device)
        with torch.no_grad():
            new.norm.load_state_dict(self.norm.state_dict())
            if channels == 1 and self.channels > 1:
                # fold the learned per-channel scales into the summed weight
                scale = self.scale.reshape(1, self.channels, *([1] * self.spatial_dims))
                new.conv.weight.copy_((self.conv.weight * scale).sum(dim=1, keepdim=True))
            else:
                new.conv.weight.copy_(adapt_input_weight(self.conv.weight, channels))
                idx = torch.arange(channels, device=self.scale.device) % self.channels
                new.scale.copy_(self.scale[:, idx])
                new.shift.copy_(self.shift[:, idx])
        return new


@dataclass(frozen=True)
class AdapterResolution:
    """Which adapter serves a key: ``used`` is the key whose adapter runs; ``rule`` is
    ``exact``, ``same_channels`` (borrowed), ``new_from:<key>`` (created from that adapter) or
    ``new`` (created fresh)."""

    key: str
    used: str
    rule: str


class AdapterBank(nn.Module):
    """The input adapters of one encoder, by key ``"<modality>:<channels>"``.

    Args:
        spatial_dims: 2 or 3.
        out_channels: the encoder's ``in_channels``.
        standardize: passed to every :class:`InputAdapter`.
    """

    def __init__(self, spatial_dims: int, out_channels: int, standardize: bool = True):
        super().__init__()
        self.spatial_dims, self.out_channels, self.standardize = spatial_dims, out_channels, standardize
        self.adapters = nn.ModuleDict()

    def keys(self) -> list[str]:
        return list(self.adapters.keys())

    def __contains__(self, key: object) -> bool:
        return key in self.adapters

    def add(self, modality: Modality | str, channels: int, init_from: str | None = None,
            device: torch.device | str | None = None) -> str:
        """Create the adapter of ``(modality, channels)`` (a no-op if it exists), optionally
        initialised from the adapter ``init_from``, on ``device`` (default: where the other
        adapters are, else the CPU). Returns the key."""
        key = adapter_key(modality, channels)
        if key in self.adapters:
            return key
        if init_from is not None:
            adapter = self.adapters[init_from].adapted_copy(int(channels))
        else:
            adapter = InputAdapter(self.spatial_dims, int(channels), self.out_channels, self.standardize)
        if device is None:
            ref = next(iter(self.parameters()), None)
            device = None if ref is None else ref.device
        self.adapters[key] = adapter if device is None else adapter.to(device)
        return key

    def resolve(self, modality: Modality | str, channels: int) -> AdapterResolution:
        """Apply the fallback rule (module docstring) without changing anything.

        Returns:
            ``rule`` is ``exact`` or ``same_channels`` (``used`` = the adapter that would run),
            ``new_from:<key>`` (an adapter would be created from ``<key>``) or ``new``.
        """
        key = adapter_key(modality, channels)
        mod = key.rpartition(":")[0]
        if key in self.adapters:
            return AdapterResolution(key, key, "exact")
        parsed = [(k, *parse_adapter_key(k)) for k in self.adapters]
        same_ch = [k for k, m, c in parsed if c == int(channels)]
        if same_ch:
            return AdapterResolution(key, same_ch[0], "same_channels")
        if parsed:
            same_mod = [k for k, m, c in parsed if m == mod]
            return AdapterResolution(key, key, f"new_from:{(same_mod or [parsed[0][0]])[0]}")
        return AdapterResolution(key, key, "new")

    def ensure(self, modality: Modality | str, channels: int, dedicated: bool = False,
               device: torch.device | str | None = None) -> AdapterResolution:
        """Resolve and create the adapter where the rule says so (always for a new key when
        ``dedicated``), on ``device`` (see :meth:`add`). Returns the resolution; ``used`` is the
        adapter that runs."""
        res = self.resolve(modality, channels)
        if res.rule == "exact" or (res.rule == "same_channels" and not dedicated):
            return res
        source = res.used if res.rule == "same_channels" else res.rule.partition(":")[2] or None
        self.add(modality, channels, init_from=source, device=device)
        return AdapterResolution(res.key, res.key, res.rule if res.rule != "same_channels" else f"new_from:{source}")

    def forward(self, x: torch.Tensor, modality: Modality | str) -> torch.Tensor:
        """Adapt ``x`` (B, C, *spatial) of ``modality``; C is read from ``x``."""
        res = self.ensure(modality, x.shape[1], device=x.device)
        return self.adapters[res.used](x)

    def config(self) -> list[dict[str, Any]]:
        """JSON-able list of adapters (key, modality, channels), in insertion order."""
        return [{"key": k, "modality": parse_adapter_key(k)[0], "channels": parse_adapter_key(k)[1]}
                for k in self.adapters]
