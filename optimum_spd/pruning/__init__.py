"""Masks and schedules: which weights are zero, and when."""

from .masks import PruningMasks, num_to_prune, pack_bits, unpack_bits
from .schedules import (
    StageSteps,
    lr_multiplier_at,
    pruning_events_done,
    replacing_rate_at,
    target_sparsity_at,
)

__all__ = [
    "PruningMasks",
    "StageSteps",
    "lr_multiplier_at",
    "num_to_prune",
    "pack_bits",
    "pruning_events_done",
    "replacing_rate_at",
    "target_sparsity_at",
    "unpack_bits",
]
