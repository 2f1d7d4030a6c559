"""Tiny ``auto_map`` modules shipped inside every compressed checkpoint.

Without optimum-spd installed, a checkpoint with ``model_type: spd_bert`` fails to load with "transformers does not
recognize this architecture"; with ``trust_remote_code=True`` transformers reads these modules, finds that they
import ``optimum_spd`` and says "pip install optimum_spd". Either way nothing loads random weights. The modules
only re-export our classes: no logic travels with a checkpoint.
"""

from __future__ import annotations

import os

_HEADER = '"""Shim written by optimum-spd: this checkpoint is a compressed sparse model. Install it with `pip install optimum-spd`."""\n\n'


def write_shims(directory: str, config_class_name: str, model_class_names: list[str]) -> None:
    """Write ``configuration_spd.py`` and ``modeling_spd.py`` into ``directory`` (names of registry classes)."""
    with open(os.path.join(directory, "configuration_spd.py"), "w", encoding="utf-8") as handle:
        handle.write(_HEADER + f"from optimum_spd.modeling.registry import {config_class_name}  # noqa: F401\n")
    names = sorted(model_class_names)
    with open(os.path.join(directory, "modeling_spd.py"), "w", encoding="utf-8") as handle:
        handle.write(_HEADER + f"from optimum_spd.modeling.registry import {', '.join(names)}  # noqa: F401\n")
