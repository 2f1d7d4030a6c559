import os
import sys

# Nothing in the suite may reach the network; everything is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("WANDB_DISABLED", "true")
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def spd_args(tmp_path):
    """Factory for a small, CPU-only SparseDistillConfig writing under tmp_path."""
    from optimum_spd import SparseDistillConfig

    def make(**overrides):
        options = dict(
            output_dir=str(tmp_path / "out"), max_steps=20, per_device_train_batch_size=8, learning_rate=1e-3,
            logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, seed=0, target_sparsity=0.8,
            check_sparsity_invariant=True, disable_tqdm=True,
        )
        options.update(overrides)
        return SparseDistillConfig(**options)

    return make
