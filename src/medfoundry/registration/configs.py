"""Typed configurations of the registration methods, one dataclass per method (no torch import).

Each method registered in :mod:`medfoundry.registration.methods` names its config class here.
Distances are in voxels of the fixed image unless a name says otherwise. Overrides may be
strings (from ``--set key=value`` or YAML); :meth:`MethodConfig.replace` converts them to the
field's type.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from ..config import ConfigBase
from ..errors import ConfigError
from ..utils import look_up_option

__all__ = ["MethodConfig", "HybridConfig", "LinearConfig", "RegistrationConfig"]

M = TypeVar("M", bound="MethodConfig")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _coerce(current: Any, key: str, value: Any) -> Any:
    """Convert ``value`` (often a string from the CLI or YAML) to the type of ``current``."""
    if not isinstance(value, str):
        if isinstance(current, tuple) and not isinstance(value, (list, tuple)):
            return (float(value),)
        return value
    text = value.strip()
    try:
        if isinstance(current, bool):
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError(text)
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, tuple):
            return tuple(float(x) for x in text.strip("()[]").split(",") if x.strip())
    except ValueError as err:
        raise ConfigError(f"registration parameter {key}: cannot read {value!r} as {type(current).__name__}") from err
    return text


class MethodConfig(ConfigBase):
    """Base of the method configs: string overrides are typed, unknown names get close matches."""

    def _check(self, condition: bool, message: str) -> None:
        if not condition:
            raise ConfigError(f"registration config: {message}")

    def _at_least(self, minimum: int, *names: str) -> None:
        for name in names:
            self._check(int(getattr(self, name)) >= minimum, f"{name} must be >= {minimum}, found {getattr(self, name)}")

    def replace(self: M, **overrides: Any) -> M:
        """A validated copy with ``overrides`` applied (strings converted to the field types)."""
        names = self.field_names()
        for key in overrides:
            look_up_option(key, names, "registration parameter")
        values = self.to_dict()
        values.update({k: _coerce(getattr(self, k), k, v) for k, v in overrides.items() if v is not None})
        return type(self).from_dict(values, source="registration overrides")

    @classmethod
    def from_dict(cls: type[M], data: Mapping[str, Any], source: str = "config") -> M:
        defaults = cls()
        for key in data:
            look_up_option(str(key), cls.field_names(), f"registration parameter in {source}")
        typed = {k: _coerce(getattr(defaults, k), k, v) for k, v in data.items()}
        try:
            return cls(**typed)
        except TypeError as err:
            raise ConfigError(f"{source}: {err}") from err

    @classmethod
    def from_yaml(cls: type[M], path: str | Path, base: M | None = None) -> M:
        """Parameters from a YAML mapping on top of ``base`` (or ``preset: NAME`` in the file)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: cannot read the registration config ({err})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of parameter: value, found {type(data).__name__}")
        data = dict(data)
        data.pop("method", None)
        preset = data.pop("preset", None)
        if preset:
            from .presets import get_preset  # presets import this module

            start = get_preset(str(preset))
            if not isinstance(start, cls):
                raise ConfigError(f"{path}: preset {preset!r} is not a {cls.__name__} preset")
        else:
            start = base if base is not None else cls()
        return start.replace(**data)


@dataclass
class HybridConfig(MethodConfig):
    """Parameters of the ``hybrid`` method: optional linear pre-alignment, MIND, convex + Adam.

    Attributes:
        features: ``mind`` (MIND-SSC of the intensities) or ``labels`` (one-hot segmentations of
            both images: the label-driven mode).
        mind_radius: MIND patch half-width, voxels.
        mind_dilation: MIND neighbour distance, voxels.
        affine: run the linear pre-alignment first.
        affine_model: ``affine`` (12 parameters) or ``rigid`` (rotation + translation in mm)
            for that pre-alignment.
        affine_iterations: Adam steps per pre-alignment pyramid level (1/4, then 1/2 resolution).
        affine_lr: Adam step of the pre-alignment parameters (unitless: rotations and matrix
            entries, and translations in units of the image's half extent).
        affine_refinements: re-warp and re-estimate rounds of the pre-alignment (see
            :class:`LinearConfig`.refinements).
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
        adam_coarse_iterations: Adam steps at twice ``adam_factor`` (an eighth of the points in
            3D) before the fine stage, whose start they refine; 0 skips this step.
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
        seed: seed of torch's generators.
    """

    features: str = "mind"
    mind_radius: int = 1
    mind_dilation: int = 2
    affine: bool = False
    affine_model: str = "affine"
    affine_iterations: int = 60
    affine_lr: float = 0.01
    affine_refinements: int = 2
    grid_spacing: int = 6
    search_step: int = 3
    search_radius: int = 5
    coupling_weights: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
    coupling_sigma: float = 1.0
    inverse_consistency: bool = True
    ic_iterations: int = 10
    adam_iterations: int = 35
    adam_coarse_iterations: int = 0
    adam_factor: int = 2
    adam_lr: float = 1.0
    adam_smooth_radius: int = 1
    adam_smooth_passes: int = 2
    adam_sample_fraction: float = 1.0
    adam_channels: int = 0
    regularisation: float = 0.25
    seed: int = 0

    def validate(self) -> None:
        look_up_option(self.features, ("mind", "labels"), "features")
        look_up_option(self.affine_model, ("affine", "rigid"), "affine_model")
        self._at_least(1, "mind_dilation", "grid_spacing", "search_step", "adam_factor")
        self._at_least(0, "mind_radius", "search_radius", "adam_iterations", "affine_iterations", "ic_iterations",
                       "adam_coarse_iterations",
                       "affine_refinements",
                       "adam_smooth_radius", "adam_smooth_passes", "adam_channels")
        self._check(self.grid_spacing % self.search_step == 0,
                    f"search_step ({self.search_step}) must divide grid_spacing ({self.grid_spacing})")
        self._check(0 < self.adam_sample_fraction <= 1,
                    f"adam_sample_fraction must be in (0, 1], found {self.adam_sample_fraction}")
        self._check(self.regularisation >= 0 and self.adam_lr > 0, "regularisation must be >= 0 and adam_lr > 0")
        self.coupling_weights = tuple(float(w) for w in self.coupling_weights)


@dataclass
class LinearConfig(MethodConfig):
    """Parameters of the ``affine`` and ``rigid`` methods (one linear transform, no deformation).

    The transform is optimised in the fixed image's physical frame (mm, centred on the fixed
    grid), so ``rigid`` stays rigid on anisotropic voxels.

    Attributes:
        model: ``affine`` (12 parameters) or ``rigid`` (3 rotations + 3 translations); the
            registry's ``rigid`` method forces ``rigid``.
        similarity: ``mind`` (MIND-SSC mean squared difference: works across contrasts, e.g.
            T1 vs FLAIR, T2 vs ADC) or ``ncc`` (global normalised cross-correlation of the
            intensities: same contrast only).
        iterations: Adam steps per pyramid level (1/4, then 1/2 resolution).
        lr: Adam step of the parameters (unitless, see :class:`HybridConfig`.affine_lr).
        center_of_mass: start from the translation between the intensity centres of mass.
        refinements: rounds that re-warp the moving image by the estimate and re-estimate the
            rest (MIND channels follow the grid axes, so one estimate of a rotation is biased).
        mind_radius, mind_dilation: MIND-SSC parameters at half resolution, voxels.
        seed: seed of torch's generators.
    """

    model: str = "affine"
    similarity: str = "mind"
    iterations: int = 60
    lr: float = 0.01
    center_of_mass: bool = True
    refinements: int = 2
    mind_radius: int = 1
    mind_dilation: int = 2
    seed: int = 0

    def validate(self) -> None:
        look_up_option(self.model, ("affine", "rigid"), "model")
        look_up_option(self.similarity, ("mind", "ncc"), "similarity")
        self._at_least(0, "iterations", "mind_radius", "refinements")
        self._at_least(1, "mind_dilation")
        self._check(self.lr > 0, f"lr must be > 0, found {self.lr}")


# The flat config of the hybrid method kept its old name for existing imports and YAML files.
RegistrationConfig = HybridConfig
