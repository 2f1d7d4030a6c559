"""GLUE readers and metrics used by the examples and benchmarks (transformers 5 dropped its GLUE helpers)."""

from .glue import GLUE_TASKS, GlueTask, glue_compute_metrics, load_glue, load_glue_metric, tokenize_glue, tokenize_pairs

__all__ = ["GLUE_TASKS", "GlueTask", "glue_compute_metrics", "load_glue", "load_glue_metric", "tokenize_glue", "tokenize_pairs"]
