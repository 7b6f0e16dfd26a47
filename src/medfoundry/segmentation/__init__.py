"""3D segmentation: patch training over the project's encoders, sliding-window prediction to NIfTI.

Storage and import of the volumes live in :mod:`medfoundry.data.volumes3d` and
:mod:`medfoundry.data.adapters.nnunet_folder`; the window predictor in
:mod:`medfoundry.inference.sliding_window`. Importing this package does not import torch.
"""

from .config import SegmentConfig as SegmentConfig
from .predict import VolumePredictor as VolumePredictor
from .predict import decode as decode
from .predict import predict_folder as predict_folder
from .regions import Region as Region
from .regions import decode_regions as decode_regions
from .regions import parse_regions as parse_regions
from .train import train_segmentation as train_segmentation

__all__ = ["SegmentConfig", "VolumePredictor", "decode", "predict_folder", "Region", "decode_regions",
           "parse_regions", "train_segmentation"]
