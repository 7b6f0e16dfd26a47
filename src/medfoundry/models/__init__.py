"""Models: encoder registry, input adapters, shared decoder, task heads, foundation model."""

from .stems import AdapterBank as AdapterBank
from .stems import AdapterResolution as AdapterResolution
from .stems import InputAdapter as InputAdapter
from .stems import adapter_key as adapter_key
from .boxes import batched_nms as batched_nms
from .boxes import box_iou as box_iou
from .boxes import generalized_box_iou as generalized_box_iou
from .boxes import nms as nms
from .boxes import paired_generalized_box_iou as paired_generalized_box_iou
from .decoders import SharedDecoder as SharedDecoder
from .encoders import ConvNeXtEncoder as ConvNeXtEncoder
from .encoders import Encoder as Encoder
from .encoders import ResNetEncoder as ResNetEncoder
from .foundation import EncoderWithAdapters as EncoderWithAdapters
from .foundation import FoundationModel as FoundationModel
from .foundation import load_encoder as load_encoder
from .foundation import load_encoder_state as load_encoder_state
from .heads import ClassificationHead as ClassificationHead
from .heads import DetectionHead as DetectionHead
from .heads import Head as Head
from .heads import MultilabelHead as MultilabelHead
from .heads import SegmentationHead as SegmentationHead
from .heads import create_head as create_head
from .heads import head_class as head_class
from .registry import EncoderDefaults as EncoderDefaults
from .registry import create_encoder as create_encoder
from .registry import encoder_defaults as encoder_defaults
from .registry import list_encoders as list_encoders
from .registry import register_encoder as register_encoder

__all__ = [
    "AdapterBank",
    "AdapterResolution",
    "InputAdapter",
    "adapter_key",
    "batched_nms",
    "box_iou",
    "generalized_box_iou",
    "nms",
    "paired_generalized_box_iou",
    "SharedDecoder",
    "ConvNeXtEncoder",
    "Encoder",
    "ResNetEncoder",
    "EncoderWithAdapters",
    "FoundationModel",
    "load_encoder",
    "load_encoder_state",
    "ClassificationHead",
    "DetectionHead",
    "Head",
    "MultilabelHead",
    "SegmentationHead",
    "create_head",
    "head_class",
    "EncoderDefaults",
    "create_encoder",
    "encoder_defaults",
    "list_encoders",
    "register_encoder",
]
