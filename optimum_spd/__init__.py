"""optimum-spd: Sparse Progressive Distillation for transformers models."""

from .architectures import UnsupportedArchitectureError, find_layer_list, prunable_parameters
from .configuration import PRESETS, SparseDistillConfig
from .report import SparsityReport, sparsity_report
from .trainer import SparsityInvariantError, SPDCallback, SPDTrainer

__version__ = "0.1.0.dev0"

__all__ = [
    "PRESETS",
    "SPDCallback",
    "SPDTrainer",
    "SparseDistillConfig",
    "SparsityInvariantError",
    "SparsityReport",
    "UnsupportedArchitectureError",
    "find_layer_list",
    "prunable_parameters",
    "sparsity_report",
]
