"""Registration: one interface over registered methods, world-space grids, Learn2Reg files, fields.

``register(fixed, moving, method=..., preset=...)`` takes paths, nibabel images, ``(array,
affine)`` pairs or arrays on any two grids. Fields follow Learn2Reg: (H, W, D, 3) float32 in
voxels of the fixed grid, fixed -> moving (a fixed voxel x maps to x + u(x) in the moving image
resampled onto the fixed grid). Methods: :mod:`.methods` (``register_method``, ``list_methods``).
"""

from .api import RegistrationResult as RegistrationResult
from .api import register as register
from .api import register_images as register_images
from .api import warp_volume as warp_volume
from .configs import HybridConfig as HybridConfig
from .configs import LinearConfig as LinearConfig
from .configs import MethodConfig as MethodConfig
from .configs import RegistrationConfig as RegistrationConfig
from .methods import get_method as get_method
from .methods import list_methods as list_methods
from .methods import register_method as register_method
from .presets import get_preset as get_preset
from .presets import list_presets as list_presets

__all__ = ["RegistrationResult", "register", "register_images", "warp_volume", "HybridConfig", "LinearConfig",
           "MethodConfig", "RegistrationConfig", "get_method", "list_methods", "register_method", "get_preset",
           "list_presets"]
