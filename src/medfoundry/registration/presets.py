"""Registration configuration as data: one dataclass, named presets, overrides from YAML or ``key=value``.

Distances are in voxels of the fixed image unless a name says otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..utils import look_up_option

__all__ = ["RegistrationConfig", "PRESETS", "list_presets", "get_preset", "parse_overrides"]


@dataclass
class RegistrationConfig:
    """Every parameter of the hybrid convex + Adam registration.

    Attributes:
        features: ``mind`` (MIND-SSC of the intensities) or ``labels`` (one-hot segmentations of
            both images: the label-driven mode).
        mind_radius: MIND patch half-width, voxels.
        mind_dilation: MIND neighbour distance, voxels.
        affine: run the affine pre-alignment first.
        affine_iterations: Adam steps per affine pyramid level (levels: 1/4 then 1/2 resolution).
        affine_lr: Adam step of the affine parameters (matrix entries, translation in units of
            the half image size).
        grid_spacing: spacing of the coarse control grid of the discrete search, voxels.
        search_step: quantisation of the displacement candidates, voxels; must divide
            ``grid_spacing``.
        search_radius: candidates per axis on each side, in steps (``(2r+1)^3`` candidates;
            the capture range is ``search_radius * search_step`` voxels).
        coupling_weights: coupling weights of the coupled convex optimisation, applied in order
            (increasing). The cost is normalised to mean 1 and displacements are measured in
            steps, so the weights are unitless.
        coupling_sigma: Gaussian smoothing of the coarse field between discrete steps, in
            coarse-grid voxels.
        inverse_consistency: also estimate the moving -> fixed field and symmetrise both.
        ic_iterations: symmetrisation iterations.
        adam_iterations: instance-optimisation steps (0 skips the fine stage).
        adam_factor: resolution divisor of the fine stage (2 = half resolution).
        adam_lr: Adam step size, voxels.
        adam_smooth_radius: half-width of the box filter that smooths the parameters into the
            displacement (B-spline-like with ``adam_smooth_passes`` = 3), fine-grid voxels.
        adam_smooth_passes: box filter passes.
        adam_sample_fraction: fraction of fine-grid voxels drawn (seeded) at each Adam step to
            evaluate the similarity; 1 uses all of them.
        adam_channels: project the descriptors onto this many principal components for the
            fine stage (0 keeps all; fewer is faster).
        regularisation: weight of the diffusion penalty (mean squared forward difference of the
            displacement, voxels^2 per fine-grid step) against the feature MSE.
        seed: seed of torch's generators (the method itself draws no random numbers).
    """

    features: str = "mind"
    mind_radius: int = 1
    mind_dilation: int = 2
    affine: bool = False
    affine_iterations: int = 60
    affine_lr: float = 0.01
    grid_spacing: int = 6
    search_step: int = 3
    search_radius: int = 5
    coupling_weights: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
    coupling_sigma: float = 1.0
    inverse_consistency: bool = True
    ic_iterations: int = 10
    adam_iterations: int = 35
    adam_factor: int = 2
    adam_lr: float = 1.0
    adam_smooth_radius: int = 1
    adam_smooth_passes: int = 2
    adam_sample_fraction: float = 1.0
    adam_channels: int = 0
    regularisation: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first parameter that cannot work."""
        look_up_option(self.features, ("mind", "labels"), "features")
        positive = ["mind_dilation", "grid_spacing", "search_step", "adam_factor"]
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"registration config: {name} must be >= 1, found {getattr(self, name)}")
        for name in ["mind_radius", "search_radius", "adam_iterations", "affine_iterations", "ic_iterations",
                     "adam_smooth_radius", "adam_smooth_passes", "adam_channels"]:
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"registration config: {name} must be >= 0, found {getattr(self, name)}")
        if self.grid_spacing % self.search_step:
            raise ConfigError(
                f"registration config: search_step ({self.search_step}) must divide grid_spacing "
                f"({self.grid_spacing})"
            )
        if not 0 < self.adam_sample_fraction <= 1:
            raise ConfigError(f"registration config: adam_sample_fraction must be in (0, 1], "
                              f"found {self.adam_sample_fraction}")
        if self.regularisation < 0 or self.adam_lr <= 0:
            raise ConfigError("registration config: regularisation must be >= 0 and adam_lr > 0")
        self.coupling_weights = tuple(float(w) for w in self.coupling_weights)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["coupling_weights"] = list(self.coupling_weights)
        return out

    def replace(self, **overrides: Any) -> "RegistrationConfig":
        """A copy with ``overrides`` applied; unknown names raise with close matches."""
        names = [f.name for f in fields(self)]
        for key in overrides:
            look_up_option(key, names, "registration parameter")
        values = self.to_dict()
        values.update({k: _coerce(self, k, v) for k, v in overrides.items()})
        return RegistrationConfig(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, base: "RegistrationConfig | None" = None) -> "RegistrationConfig":
        """Load a YAML mapping of parameters (optionally ``preset: NAME`` as the base)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: cannot read the registration config ({err})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of parameter: value, found {type(data).__name__}")
        preset = data.pop("preset", None)
        start = get_preset(preset) if preset else (base or cls())
        return start.replace(**data)


def _coerce(config: RegistrationConfig, key: str, value: Any) -> Any:
    """Convert a string (from the CLI or YAML) to the type of the field ``key``."""
    current = getattr(config, key)
    if not isinstance(value, str):
        if isinstance(current, tuple) and not isinstance(value, (list, tuple)):
            return (float(value),)
        return value
    text = value.strip()
    try:
        if isinstance(current, bool):
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, tuple):
            return tuple(float(x) for x in text.strip("()[]").split(",") if x.strip())
    except ValueError as err:
        raise ConfigError(
            f"registration parameter {key}: cannot read {value!r} as {type(current).__name__}"
        ) from err
    return text


PRESETS: dict[str, RegistrationConfig] = {
    # Inter-subject brain MR at 1-2 mm (e.g. Learn2Reg OASIS, affinely pre-aligned): capture
    # range +-15 voxels on a 6-voxel grid; tuned on the synthetic MNI152 pairs of
    # benchmarks/registration_peers.py.
    "brain_mr": RegistrationConfig(),
    # Abdomen CT around 2 mm (Learn2Reg AbdomenCTCT): large inter-subject displacements and
    # sliding organs; wider search, stronger smoothing, affine on.
    "abdomen_ct": RegistrationConfig(affine=True, grid_spacing=6, search_step=3, search_radius=6,
                                     coupling_sigma=1.5, regularisation=1.0, adam_iterations=60),
    # Lung CT inhale/exhale around 1.5 mm (Learn2Reg NLST): large motion of small vessels;
    # wide search, less smoothing so the vessel tree can follow. Lung masks help a lot.
    "lung_ct": RegistrationConfig(grid_spacing=4, search_step=2, search_radius=7, coupling_sigma=0.8,
                                  regularisation=0.25, adam_iterations=60),
}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> RegistrationConfig:
    """A fresh copy of the preset ``name`` (``brain_mr``, ``abdomen_ct``, ``lung_ct``)."""
    look_up_option(name, PRESETS, "preset")
    return PRESETS[name].replace()


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """``["key=value", ...]`` (from ``--set``) -> ``{key: value}``; values stay strings."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set regularisation=2")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out

