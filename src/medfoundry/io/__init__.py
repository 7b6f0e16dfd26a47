"""Readers that keep geometry: 2D images with pixel spacing, volumes with spacing and affine;
the one NIfTI writer (:func:`write_nifti`)."""

from .images import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from .images import NORMALIZE_MODES as NORMALIZE_MODES
from .images import ImageRead as ImageRead
from .images import file_suffix as file_suffix
from .images import normalize_intensity as normalize_intensity
from .images import read_image as read_image
from .volumes import VOLUME_SUFFIXES as VOLUME_SUFFIXES
from .volumes import VolumeRead as VolumeRead
from .volumes import read_nifti as read_nifti
from .volumes import read_nifti_header as read_nifti_header
from .volumes import read_volume as read_volume
from .volumes import write_nifti as write_nifti

__all__ = ["IMAGE_SUFFIXES", "NORMALIZE_MODES", "ImageRead", "file_suffix", "normalize_intensity", "read_image",
           "VOLUME_SUFFIXES", "VolumeRead", "read_nifti", "read_nifti_header", "read_volume",
           "write_nifti"]
