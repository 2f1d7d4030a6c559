"""Task support for the examples and benchmarks: GLUE reading, tokenisation and metrics, and the dense teacher fine-tune.

Not part of the method: ``import optimum_spd`` never imports this package (SPD itself needs a fine-tuned model and
tokenised datasets, whatever their task). It needs the ``examples`` extra (scikit-learn, scipy for the metrics).
"""

from .glue import (
    GLUE_TASKS,
    GlueTask,
    glue_compute_metrics,
    load_glue,
    load_glue_metric,
    tokenize_glue,
    tokenize_pairs,
)
from .teacher import DEFAULT_BASE_MODEL_ID, default_base_model_path, fine_tune_teacher, teacher_training_arguments

__all__ = [
    "DEFAULT_BASE_MODEL_ID",
    "GLUE_TASKS",
    "GlueTask",
    "default_base_model_path",
    "fine_tune_teacher",
    "glue_compute_metrics",
    "load_glue",
    "load_glue_metric",
    "teacher_training_arguments",
    "tokenize_glue",
    "tokenize_pairs",
]
