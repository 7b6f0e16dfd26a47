"""Registration: Learn2Reg files, displacement fields, MIND features, hybrid convex + Adam method.

Fields follow Learn2Reg: (H, W, D, 3) float32 in voxels, fixed -> moving (a fixed voxel x maps
to x + u(x) in the moving image).
"""

from .api import RegistrationResult as RegistrationResult
from .api import register_images as register_images
from .api import warp_volume as warp_volume
from .presets import RegistrationConfig as RegistrationConfig
from .presets import get_preset as get_preset
from .presets import list_presets as list_presets

__all__ = ["RegistrationResult", "register_images", "warp_volume", "RegistrationConfig", "get_preset",
           "list_presets"]
