"""One small SPD run, launched by the tests under torchrun / accelerate launch (or as a plain process).

Usage: spd_run.py OUTPUT_DIR [--resume CHECKPOINT] [--max_steps N] [--kill_at_step N] [--bf16] [--transfer]

Every rank records, after every optimizer step, the grafting decisions its compute_loss actually used and digests
of its masks and weights; rank 0 gathers all ranks' records into OUTPUT_DIR/records.json and saves the final
model. ``--transfer`` adds unlabelled transfer rows (each rank draws its own). ``--kill_at_step`` SIGKILLs the
process right after that step's checkpoint (a crash, for resume tests).
"""

import argparse
import hashlib
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from helpers import tiny_dataset, tiny_model  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from optimum_spd import SparseDistillConfig, SPDTrainer  # noqa: E402
from optimum_spd.pruning import pack_bits  # noqa: E402


def digest(tensors) -> str:
    hasher = hashlib.sha256()
    for tensor in tensors:
        hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()[:16]


class Recorder(TrainerCallback):
    def __init__(self, trainer, kill_at_step):
        self.trainer, self.kill_at_step, self.records = trainer, kill_at_step, []

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        masks = [pack_bits(keep) for keep in trainer.masks.keep.values()]
        weights = [param for param in trainer.accelerator.unwrap_model(trainer.model).parameters()]
        self.records.append(
            {
                "step": state.global_step,
                "decisions": list(trainer.grafting_decisions),
                "transfer_rows": trainer.transfer_rows_drawn,
                "masks": digest(masks),
                "weights": digest(weights),
            }
        )

    def on_save(self, args, state, control, **kwargs):
        if self.kill_at_step is not None and state.global_step == self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--resume", default=None)
    parser.add_argument("--max_steps", type=int, default=16)
    parser.add_argument("--kill_at_step", type=int, default=None)
    parser.add_argument("--save_steps", type=int, default=4)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 master weights)")
    parser.add_argument("--transfer", action="store_true", help="with unlabelled transfer rows (transfer_dataset)")
    options = parser.parse_args()
    torch.set_num_threads(1)
    args = SparseDistillConfig(
        output_dir=options.output_dir,
        max_steps=options.max_steps,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        weight_decay=0.01,
        logging_steps=1,
        save_strategy="steps",
        save_steps=options.save_steps,
        report_to=[],
        use_cpu=True,
        seed=0,
        target_sparsity=0.8,
        check_sparsity_invariant=True,
        disable_tqdm=True,
        num_pruning_events=4,
        preset="paper",  # the preset with all three stages: the resume test kills a run in each of them
        dataloader_num_workers=0,
        bf16=options.bf16,
    )
    transfer = tiny_dataset(40, seed=1).remove_columns("labels") if options.transfer else None
    trainer = SPDTrainer(
        model=tiny_model(num_layers=4), args=args, train_dataset=tiny_dataset(96), transfer_dataset=transfer
    )
    recorder = Recorder(trainer, options.kill_at_step)
    trainer.add_callback(recorder)
    trainer.train(resume_from_checkpoint=options.resume)
    world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    gathered = [None] * world_size
    if world_size > 1:
        dist.all_gather_object(gathered, recorder.records)
    else:
        gathered = [recorder.records]
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if trainer.is_world_process_zero():
        final = trainer.accelerator.unwrap_model(trainer.model)
        with open(os.path.join(options.output_dir, "records.json"), "w") as handle:
            json.dump(
                {
                    "world_size": world_size,
                    "ranks": gathered,
                    "losses": losses,
                    "final_weights": digest(list(final.parameters())),
                },
                handle,
            )
    trainer.save_model(os.path.join(options.output_dir, "final"))
    if world_size > 1:
        # Leave together: a rank that exits while another is still saving tears gloo's connections down under it
        # (seen as an occasional SIGABRT at exit).
        dist.barrier()
        dist.destroy_process_group()
        # Everything the parent test checks is on disk now. Under CPU load, 2 runs in 8 aborted at exit with
        # "terminate called without an active exception" (a C++ thread of torch's process group), after
        # records.json and the final save were complete and identical across ranks. Skipping the interpreter's
        # teardown avoids that exit-time abort; it masks nothing before it: any error up to here (barrier and
        # destroy_process_group included) still exits non-zero.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
