"""The ``affine`` and ``rigid`` methods: one linear transform, no deformation (a baseline, and the
alignment of sequences of one patient, e.g. T1 and FLAIR or T2 and ADC)."""

from __future__ import annotations

import time

from .affine import affine_align
from .configs import LinearConfig
from .fields import affine_to_field
from .methods import MethodInput, MethodOutput, register_method

__all__ = ["run_linear"]


def run_linear(pair: MethodInput, config: LinearConfig) -> MethodOutput:
    """Linear registration on the fixed grid; the dense field is that of the voxel matrix."""
    start = time.perf_counter()
    matrix = affine_align(pair.fixed, pair.moving, config.iterations, config.lr, pair.fixed_mask, pair.moving_mask,
                          config.mind_radius, config.mind_dilation, model=config.model,
                          similarity=config.similarity, spacing=pair.spacing,
                          center_of_mass_init=config.center_of_mass, refinements=config.refinements)
    if pair.times is not None:
        start = pair.times.add(config.model, start, pair.fixed.device)
    return MethodOutput(affine_to_field(matrix, pair.shape), matrix)


register_method("affine", LinearConfig, description="affine only (12 parameters), MIND or NCC similarity")(run_linear)
register_method("rigid", LinearConfig, fixed={"model": "rigid"},
                description="rigid only (rotation + translation in mm), MIND or NCC similarity")(run_linear)
