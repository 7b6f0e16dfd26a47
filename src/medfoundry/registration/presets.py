"""Named presets as (method, overrides), and the resolution of method + preset + overrides to one config.

Distances are in voxels of the fixed image unless a name says otherwise. No torch import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..utils import look_up_option
from .configs import MethodConfig, RegistrationConfig

__all__ = ["Preset", "PRESETS", "RegistrationConfig", "list_presets", "get_preset", "resolve_config",
           "parse_overrides"]

@dataclass(frozen=True)
class Preset:
    """A method name and the parameters that differ from its defaults."""

    method: str
    overrides: dict[str, Any] = field(default_factory=dict)
    note: str = ""


PRESETS: dict[str, Preset] = {
    "brain_mr": Preset("hybrid", {}, "Inter-subject brain MR at 1-2 mm (Learn2Reg OASIS, affinely pre-aligned): "
                                     "capture range +-15 voxels on a 6-voxel grid; tuned on the synthetic MNI152 "
                                     "pairs of benchmarks/registration_peers.py."),
    # Speed over accuracy (issue 10's CPU goal against ANTs SyN): single-voxel MIND patches, a
    # smaller search, three coupling steps, no backward problem, 10 Adam steps on 6 PCA channels
    # with one smoothing pass. Measured on the synthetic MNI152 pairs at 2 mm in
    # docs/registration.md ("A fast preset").
    "brain_mr_fast": Preset("hybrid", dict(mind_radius=0, search_radius=3, coupling_weights=(0.1, 0.4, 1.6),
                                           inverse_consistency=False, adam_iterations=10, adam_channels=6,
                                           adam_smooth_passes=1),
                            "brain_mr for speed: under a third of its registration CPU time at ~0.04 lower "
                            "Dice (still above ANTs SyN's on the benchmark pairs); capture range +-9 voxels."),
    "abdomen_ct": Preset("hybrid", dict(affine=True, grid_spacing=6, search_step=3, search_radius=6,
                                        coupling_sigma=1.5, regularisation=1.0, adam_iterations=60),
                         "Abdomen CT around 2 mm (Learn2Reg AbdomenCTCT): large inter-subject displacements "
                         "and sliding organs; wider search, stronger smoothing, affine on."),
    # regularisation 2.0 (was 0.25): on CT-like pairs moved by the real LungCT_val keypoint motion
    # (docs/registration.md, "Presets") it cut the field error in the lungs from 8.5-9.2 to 3.4-4.7 mm.
    "lung_ct": Preset("hybrid", dict(grid_spacing=4, search_step=2, search_radius=7, coupling_sigma=0.8,
                                     regularisation=2.0, adam_iterations=60),
                      "Lung CT inhale/exhale around 1.5 mm (Learn2Reg NLST, LungCT): large motion of small "
                      "vessels; wide search, little smoothing between discrete steps. Lung masks help a lot."),
    "multiseq_rigid": Preset("rigid", {}, "Sequences of one patient on different grids (T1/FLAIR, T2/ADC): rigid, "
                                          "MIND similarity."),
}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> MethodConfig:
    """A fresh config of the preset ``name`` (its method's config with the preset's overrides)."""
    from .methods import get_method

    look_up_option(name, PRESETS, "preset")
    preset = PRESETS[name]
    return get_method(preset.method).default_config().replace(**preset.overrides)


def resolve_config(method: str | None = None, preset: str | None = None, config: MethodConfig | None = None,
                   config_file: str | Path | None = None, **overrides: Any) -> tuple[str, MethodConfig]:
    """Method name and its validated config from, in increasing priority: the method's defaults
    or a preset (or an explicit ``config``), a YAML file, then keyword overrides.

    Raises:
        ConfigError: unknown method, preset or parameter; a preset of another method; a
            ``config`` of the wrong class.
    """
    if preset is not None:
        look_up_option(preset, PRESETS, "preset")
        if method is not None and PRESETS[preset].method != method:
            raise ConfigError(f"preset {preset!r} is for method {PRESETS[preset].method!r}, not {method!r}; "
                              "drop --preset or --method")
        method = PRESETS[preset].method
    from .methods import get_method

    method = method or "hybrid"
    spec = get_method(method)
    cls = spec.config_class
    if config is not None:
        if not isinstance(config, cls):
            raise ConfigError(f"method {method!r} takes a {cls.__name__}, found {type(config).__name__}")
        base = config
    elif preset is not None:
        base = get_preset(preset)
    else:
        base = spec.default_config()
    if config_file is not None:
        base = base.from_yaml(config_file, base=base)
    forced = spec.fixed
    clash = [k for k, v in forced.items() if k in overrides and overrides[k] not in (v, str(v))]
    if clash:
        raise ConfigError(f"registration method {method!r} fixes {clash[0]}={forced[clash[0]]!r}; "
                          "choose another method to change it")
    merged = {**overrides, **forced}
    return method, (base.replace(**merged) if merged else base)


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """``["key=value", ...]`` (from ``--set``) -> ``{key: value}``; values stay strings."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set regularisation=2")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out
