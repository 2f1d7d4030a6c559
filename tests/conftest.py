import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))

from fake_hub import FakeHub  # noqa: E402  (stdlib + yaml: safe to import before huggingface_hub)

# The whole suite talks to a local Hub on 127.0.0.1 and nothing else: huggingface_hub reads these variables once,
# at import, so they are set here, before anything imports it. The token is a recognisable secret so tests can
# prove it never reaches a card, a log or an uploaded file.
HUB = FakeHub(token="hf_TEST_SECRET_do_not_leak_7f3a9").start()
HF_HOME = tempfile.mkdtemp(prefix="spd-hf-home-")  # the suite's own Hub and datasets caches, removed at the end
os.environ.update(
    HF_ENDPOINT=HUB.endpoint,
    HF_TOKEN=HUB.token,
    HF_HOME=HF_HOME,
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_XET="1",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
    TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
    WANDB_DISABLED="true",
)
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.pop("TRANSFORMERS_OFFLINE", None)
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


def pytest_unconfigure(config):
    """Remove the session's HF_HOME, so each run of the suite does not leave a cache behind in the temp folder."""
    shutil.rmtree(HF_HOME, ignore_errors=True)


@pytest.fixture
def spd_args(tmp_path):
    """Factory for a small SparseDistillConfig writing under tmp_path.

    CPU-only unless ``SPD_TEST_DEVICE=cuda``: then the trainer tests run on the GPU (Trainer's own device choice),
    which is how the suite checks that SPD's state (masks, grafting, losses) follows the model to an accelerator.
    """
    from optimum_spd import SparseDistillConfig

    def make(**overrides):
        options = dict(
            output_dir=str(tmp_path / "out"),
            max_steps=20,
            per_device_train_batch_size=8,
            learning_rate=1e-3,
            logging_steps=1,
            report_to=[],
            save_strategy="no",
            use_cpu=os.environ.get("SPD_TEST_DEVICE", "cpu") == "cpu",
            seed=0,
            target_sparsity=0.8,
            check_sparsity_invariant=True,
            disable_tqdm=True,
            num_pruning_events=2,
        )
        options.update(overrides)
        return SparseDistillConfig(**options)

    return make


@pytest.fixture
def hub():
    """The session's local Hub, with failure injection reset and protocol surprises checked after each test."""
    HUB.fail_next.clear()
    yield HUB
    assert HUB.unexpected == [], f"the client used Hub routes the fake does not know: {HUB.unexpected}"
