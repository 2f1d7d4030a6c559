"""The SPD sparse checkpoint format: per-tensor encodings, the config block, and atomic file I/O."""

from .checkpoint import CompressedCheckpointError, atomic_directory, replace_pickled_training_arguments
from .encoding import CompressedTensorError, decode, encode, encoded_sizes
from .format import FORMAT_NAME, FORMAT_VERSION, SparsityConfigError, validate_sparsity_config

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CompressedCheckpointError",
    "CompressedTensorError",
    "SparsityConfigError",
    "atomic_directory",
    "decode",
    "encode",
    "encoded_sizes",
    "replace_pickled_training_arguments",
    "validate_sparsity_config",
]
