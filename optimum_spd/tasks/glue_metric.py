"""GLUE metrics as a local ``evaluate`` module: ``evaluate.load(path_to_this_file, "mrpc")``.

The Hub's ``glue`` metric script cannot be downloaded offline, so the same definitions live here: accuracy,
F1 (positive class 1) for MRPC/QQP, Matthews correlation for CoLA, Pearson/Spearman for STS-B.
"""

import datasets
import evaluate
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

_CONFIGS = ("cola", "sst2", "mrpc", "stsb", "rte", "qnli", "wnli", "qqp", "mnli")

_DESCRIPTION = "GLUE metrics (accuracy, F1, Matthews correlation, Pearson/Spearman) computed with sklearn and scipy."

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted labels (class ids), or scores for stsb.
    references: gold labels, or gold scores for stsb.
Returns: a dict with `accuracy`, `f1`, `matthews_correlation`, `pearson`, `spearmanr` as the task uses them.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GlueMetric(evaluate.Metric):
    def _info(self):
        if self.config_name not in _CONFIGS:
            raise KeyError(f"unknown GLUE task {self.config_name!r}; use one of {_CONFIGS}.")
        value_type = "float32" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Wang et al., GLUE: A Multi-Task Benchmark and Analysis Platform for NLU, ICLR 2019.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value(value_type), "references": datasets.Value(value_type)}
            ),
        )

    def _compute(self, predictions, references):
        if self.config_name == "stsb":
            return {
                "pearson": float(pearsonr(predictions, references)[0]),
                "spearmanr": float(spearmanr(predictions, references)[0]),
            }
        accuracy = float(sum(int(p == r) for p, r in zip(predictions, references)) / len(references))
        if self.config_name == "cola":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        if self.config_name in ("mrpc", "qqp"):
            return {"accuracy": accuracy, "f1": float(f1_score(references, predictions))}
        return {"accuracy": accuracy}
