"""optimum-spd: Sparse Progressive Distillation for transformers models."""

from .architectures import UnsupportedArchitectureError, find_layer_list, prunable_parameters
from .configuration import PRESETS, SparseDistillConfig
from .inference import CSRLinear, NativeCSRLinear, to_sparse_inference
from .lora import AdapterError, load_lora_model, masked_lora, merge_dense, merge_sparse
from .modeling import compress, decompress, register
from .report import SparsityReport, sparsity_report
from .trainer import SparsityInvariantError, SPDCallback, SPDTrainer, last_resumable_checkpoint

__version__ = "0.1.0.dev0"

# `import optimum_spd` makes `AutoModel*.from_pretrained` understand spd_bert, spd_roberta, ... checkpoints.
register()

__all__ = [
    "AdapterError",
    "CSRLinear",
    "NativeCSRLinear",
    "PRESETS",
    "SPDCallback",
    "SPDTrainer",
    "SparseDistillConfig",
    "SparsityInvariantError",
    "SparsityReport",
    "UnsupportedArchitectureError",
    "compress",
    "decompress",
    "find_layer_list",
    "last_resumable_checkpoint",
    "load_lora_model",
    "masked_lora",
    "merge_dense",
    "merge_sparse",
    "prunable_parameters",
    "register",
    "sparsity_report",
    "to_sparse_inference",
]
