"""SPD model classes, their registration with the Auto classes, and conversion to and from the sparse format."""

from .compressed import load_compressed_state_dict, save_compressed
from .conversion import compress, decompress
from .mixin import SPDModelMixin
from .registry import CONFIG_CLASSES, MODEL_CLASSES, register, spd_classes_for, spd_model_type

__all__ = [
    "CONFIG_CLASSES",
    "MODEL_CLASSES",
    "SPDModelMixin",
    "compress",
    "decompress",
    "load_compressed_state_dict",
    "register",
    "save_compressed",
    "spd_classes_for",
    "spd_model_type",
]
