"""The run's picture for its model card: schedules, and training vs evaluation loss (the overfitting gap)."""

from __future__ import annotations


def plot_training_curves(log_history: list[dict], path: str, peak_learning_rate: float | None = None) -> None:
    """Write a PNG with three panels: sparsity / grafting rate / learning rate, task loss, distillation terms.

    The learning rate is drawn as a fraction of ``peak_learning_rate`` (the configured one) when given, so a run
    whose logged rates never reach the peak (warm-up, a logging step after the first decay) is not rescaled.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    train = [entry for entry in log_history if "loss" in entry and "spd_stage" in entry]
    evaluations = [entry for entry in log_history if "eval_loss" in entry]
    steps = [entry["step"] for entry in train]
    figure, (schedule, task, distillation) = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)

    schedule.plot(steps, [e["prunable_sparsity"] for e in train], label="prunable sparsity")
    schedule.plot(steps, [e["replacing_rate"] for e in train], label="grafting rate p")
    peak = peak_learning_rate or max((e.get("learning_rate", 0.0) for e in train), default=0.0) or 1.0
    schedule.plot(
        steps, [e.get("learning_rate", 0.0) / peak for e in train], label=f"learning rate / {peak:.1e}", linestyle="--"
    )
    schedule.set(title="Schedules", xlabel="optimizer step", ylim=(-0.02, 1.05))

    task.plot(steps, [e.get("loss_hard_label") for e in train], label="train task loss (grafted student)")
    task.plot(
        [e["step"] for e in evaluations],
        [e["eval_loss"] for e in evaluations],
        "o-",
        label="eval task loss (sparse student)",
    )
    task.set(title="Training vs evaluation loss", xlabel="optimizer step")

    for term in ("loss_hidden", "loss_attention", "loss_logit"):
        if any(term in e for e in train):
            distillation.plot(steps, [e.get(term) for e in train], label=term.removeprefix("loss_"))
    distillation.set(title="Distillation terms", xlabel="optimizer step", yscale="log")

    boundaries = [b["step"] for a, b in zip(train, train[1:]) if b["spd_stage"] != a["spd_stage"]]
    for axis in (schedule, task, distillation):
        for boundary in boundaries:
            axis.axvline(boundary, color="grey", linewidth=0.8, linestyle=":")
        if axis.get_legend_handles_labels()[0]:  # a short run may have nothing to label in a panel
            axis.legend(fontsize=8)
    figure.savefig(path, dpi=90)
    plt.close(figure)
