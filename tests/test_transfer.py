"""Unlabelled transfer data (teacher terms only) and the model-free augmenter that makes it."""

import pytest
import torch
from helpers import tiny_dataset, tiny_model, tiny_tokenizer

import optimum_spd.trainer as trainer_module
from optimum_spd import SPDTrainer
from optimum_spd.augmentation import AugmentationRates, augment_dataset, embedding_neighbours


def transfer_rows(rows=40, seed=5):
    return tiny_dataset(rows, seed=seed).remove_columns(["labels"])


def make(spd_args, transfer=None, **overrides):
    return SPDTrainer(
        model=tiny_model(),
        args=spd_args(**overrides),
        train_dataset=tiny_dataset(),
        transfer_dataset=transfer,
    )


def record_distillation_calls(monkeypatch) -> list[dict]:
    """Every `distillation_loss` call the trainer makes, in order: its rows, labels, weights and returned loss."""
    calls = []
    original = trainer_module.distillation_loss

    def spy(student, teacher, weights, temperature, mask, labels, regression_target="gold"):
        loss, terms = original(student, teacher, weights, temperature, mask, labels, regression_target)
        calls.append({"rows": student.logits.shape[0], "labels": labels, "weights": weights, "loss": loss.detach()})
        return loss, terms

    monkeypatch.setattr(trainer_module, "distillation_loss", spy)
    return calls


def test_transfer_rows_get_the_teacher_terms_and_never_the_gold_label_term(spd_args, monkeypatch):
    calls = record_distillation_calls(monkeypatch)
    trainer = make(spd_args, transfer_rows(), hard_label_weight=1.0, transfer_ratio=0.5, max_steps=4)
    trainer.train()
    labelled = [call for call in calls if call["labels"] is not None]
    transfer = [call for call in calls if call["labels"] is None]
    assert labelled
    assert transfer and all(call["rows"] == 4 for call in transfer)  # 0.5 x batch of 8
    assert all(call["weights"].hard_label == 0 for call in transfer)
    assert all(call["weights"].hard_label == 1.0 for call in labelled)
    assert any("loss_transfer" in entry for entry in trainer.state.log_history)


@pytest.mark.parametrize("transfer_loss_weight", [1.0, 0.25, 0.0])
def test_transfer_loss_is_added_with_its_weight(spd_args, monkeypatch, transfer_loss_weight):
    calls = record_distillation_calls(monkeypatch)
    steps = []  # (the loss compute_loss returned, the distillation_loss calls it made)
    original_compute = SPDTrainer.compute_loss

    def record_step(self, *args, **kwargs):
        first_call = len(calls)
        total = original_compute(self, *args, **kwargs)
        steps.append((total.detach(), calls[first_call:]))
        return total

    monkeypatch.setattr(SPDTrainer, "compute_loss", record_step)
    make(spd_args, transfer_rows(), transfer_loss_weight=transfer_loss_weight, max_steps=4).train()
    # Steps whose layers all drew the teacher have no transfer batch; p starts at 0.8 with 2 layers, so most have one.
    assert any(len(step_calls) == 2 for _, step_calls in steps)
    for total, step_calls in steps:
        (labelled, *transfer) = step_calls
        assert labelled["labels"] is not None and all(call["labels"] is None for call in transfer)
        expected = labelled["loss"] + sum(transfer_loss_weight * call["loss"] for call in transfer)
        torch.testing.assert_close(total, expected)
        assert all(float(call["loss"]) > 0 for call in transfer)


def test_transfer_data_changes_what_the_student_learns(spd_args):
    without = make(spd_args, max_steps=6)
    without.train()
    with_transfer = make(spd_args, transfer_rows(), max_steps=6)
    with_transfer.train()
    first = dict(without.model.named_parameters())
    assert any(not torch.equal(param, first[name]) for name, param in with_transfer.model.named_parameters())


def test_resume_with_a_transfer_set_is_exact(spd_args, tmp_path):
    def run(output, **overrides):
        return make(spd_args, transfer_rows(12), max_steps=10, output_dir=str(tmp_path / output), **overrides)

    uninterrupted = run("a")
    uninterrupted.train()
    run("b", save_strategy="steps", save_steps=4).train()
    resumed = run("b", save_strategy="no")
    resumed.train(resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-4"))
    final = dict(uninterrupted.model.named_parameters())
    for name, param in resumed.model.named_parameters():
        assert torch.equal(param, final[name]), name


def test_bad_transfer_sets_are_refused(spd_args):
    with pytest.raises(ValueError, match="transfer_dataset has a 'labels' column"):
        make(spd_args, tiny_dataset())
    with pytest.raises(ValueError, match="transfer_dataset is empty"):
        make(spd_args, transfer_rows().select([]))
    with pytest.raises(ValueError, match="all 0"):
        make(
            spd_args,
            transfer_rows(),
            hidden_distill_weight=0.0,
            attention_distill_weight=0.0,
            logit_distill_weight=0.0,
            hard_label_weight=1.0,
        )
    with pytest.raises(ValueError, match="transfer_ratio"):
        spd_args(transfer_ratio=-1.0)
    with pytest.raises(ValueError, match="transfer_loss_weight"):
        spd_args(transfer_loss_weight=float("nan"))


def test_augmenter_is_deterministic_and_keeps_rows_valid(tmp_path):
    tokenizer = tiny_tokenizer(str(tmp_path / "tok"))
    from datasets import Dataset

    segments = [([10, 11, 12, 13, 14, 15], [16, 17]), ([18], [19, 20, 21]), ([22, 23], [24])]
    rows = {"input_ids": [], "token_type_ids": [], "attention_mask": [], "label": []}
    for first_words, second_words in segments:  # [CLS] a [SEP] b [SEP], padded to 16
        ids = [2, *first_words, 3, *second_words, 3]
        types = [0] * (len(first_words) + 2) + [1] * (len(second_words) + 1)
        rows["input_ids"].append(ids + [0] * (16 - len(ids)))
        rows["token_type_ids"].append(types + [0] * (16 - len(ids)))
        rows["attention_mask"].append([1] * len(ids) + [0] * (16 - len(ids)))
        rows["label"].append(0)
    dataset = Dataset.from_dict(rows)
    rates = AugmentationRates(delete=0.5, swap=0.5, mask=0.3, replace=0.3)
    first = augment_dataset(dataset, tokenizer, copies=4, seed=0, rates=rates)
    again = augment_dataset(dataset, tokenizer, copies=4, seed=0, rates=rates)
    other = augment_dataset(dataset, tokenizer, copies=4, seed=1, rates=rates)
    assert list(first["input_ids"]) == list(again["input_ids"]) != list(other["input_ids"])
    assert len(first) == 12 and "label" not in first.column_names
    structure = {tokenizer.cls_token_id, tokenizer.sep_token_id}
    for index, row in enumerate(first):
        source = dataset[index // 4]
        length = sum(source["attention_mask"])
        assert 0 < len(row["input_ids"]) <= length  # never longer, never empty
        assert len(row["token_type_ids"]) == len(row["input_ids"]) == len(row["attention_mask"])
        # [CLS] and [SEP] stay where the structure needs them: [CLS] a [SEP] b [SEP], each segment non-empty.
        positions = [i for i, token in enumerate(row["input_ids"]) if token in structure]
        assert [row["input_ids"][i] for i in positions] == [2, 3, 3] and positions[0] == 0
        assert positions[1] > 1 and positions[2] > positions[1] + 1
        assert row["token_type_ids"][positions[1] + 1] == 1 and row["token_type_ids"][positions[1]] == 0


def test_augmentation_rates_parse_from_a_command_line_and_name_the_bad_field():
    assert AugmentationRates.parse("0.05") == AugmentationRates(0.05, 0.05, 0.05, 0.05)
    assert AugmentationRates.parse("delete=0, swap=0") == AugmentationRates(
        delete=0.0, swap=0.0, mask=0.1, replace=0.1
    )
    # One number sets the four random rates only; the embedding-neighbour rate is opt-in by name.
    assert AugmentationRates.parse("0.05").neighbour == 0.0
    neighbour_only = AugmentationRates.parse("delete=0,swap=0,mask=0,replace=0,neighbour=0.2")
    assert neighbour_only == AugmentationRates(0.0, 0.0, 0.0, 0.0, neighbour=0.2)
    assert neighbour_only.label() == "delete=0,swap=0,mask=0,replace=0,neighbour=0.2"
    assert AugmentationRates(0.05, 0.05, 0.05, 0.05, neighbour=0.05).label().endswith(",neighbour=0.05")
    for rates in (
        AugmentationRates(),
        AugmentationRates(0.05, 0.05, 0.05, 0.05),
        AugmentationRates(0.0, 0.2, 0.1, 0),
        neighbour_only,
        AugmentationRates(neighbour=0.1),
    ):
        assert AugmentationRates.parse(rates.label() or "0.1") == rates  # the label reads back
    assert AugmentationRates().label() == "" and AugmentationRates.parse("0.1").label() == ""
    # Labels of runs made before the neighbour rate existed are unchanged (run names and result groups use them).
    assert AugmentationRates(0.0, 0.0, 0.1, 0.1).label() == "delete=0,swap=0,mask=0.1,replace=0.1"
    for text, field in [
        ("often", "one number"),
        ("delete=x", "delete='x' is not a number"),
        ("insert=0.1", "'insert' is not a rate"),
        ("mask=0.1,mask=0.2", "'mask' is not a rate or is named twice"),
        ("swap=1", r"AugmentationRates.swap=1.0 must be in \[0, 1\)"),
        ("mask=0.5,replace=0.3,neighbour=0.2", "mask \\+ replace \\+ neighbour = 1 must be below 1"),
    ]:
        with pytest.raises(ValueError, match=field):
            AugmentationRates.parse(text)


def neighbour_vocabulary(tmp_path):
    """A WordPiece vocabulary with two word families, two continuation pieces and a placeholder entry, and input
    embeddings that put each family in its own direction; [unused0] and [MASK] sit exactly on top of "walk"."""
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "walk", "walks", "walked", "run", "runs"]
    vocab += ["ran", "##ing", "##ed"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"), do_lower_case=True)
    direction = {"walk": 0, "walks": 0, "walked": 0, "run": 1, "runs": 1, "ran": 1, "##ing": 2, "##ed": 2}
    generator = torch.Generator().manual_seed(0)
    embeddings = 0.05 * torch.randn(len(vocab), 4, generator=generator)
    for piece, axis in direction.items():
        embeddings[vocab.index(piece), axis] += 1.0
    embeddings[vocab.index("[unused0]")] = embeddings[vocab.index("[MASK]")] = embeddings[vocab.index("walk")]
    return tokenizer, vocab, embeddings


def test_embedding_neighbours_stay_within_a_kind_and_skip_special_placeholder_and_self(tmp_path):
    tokenizer, vocab, embeddings = neighbour_vocabulary(tmp_path)
    index = {piece: i for i, piece in enumerate(vocab)}
    used = [index[p] for p in ("[CLS]", "walk", "ran", "##ing", "[unused0]")]
    table = embedding_neighbours(embeddings, tokenizer, used, candidates=2)
    names = {piece: {vocab[i] for i in table[index[piece]]} for piece in ("walk", "ran", "##ing")}
    # The two nearest of the same kind: never itself, [MASK] or [unused0] (both closer than anything), never a
    # continuation piece for a word start or the other way round.
    assert names == {"walk": {"walks", "walked"}, "ran": {"run", "runs"}, "##ing": {"##ed"}}
    # Pieces that are special, placeholders or not asked for map to themselves: substituting them changes nothing.
    for piece in ("[CLS]", "[unused0]", "walks"):
        assert set(table[index[piece]]) == {index[piece]}
    with pytest.raises(ValueError, match="do not cover the tokenizer's 14 pieces"):
        embedding_neighbours(embeddings[:5], tokenizer, used)


def test_neighbour_substitution_puts_a_neighbour_in_place_and_is_deterministic(tmp_path):
    from datasets import Dataset

    tokenizer, vocab, embeddings = neighbour_vocabulary(tmp_path)
    sentences = ["walk runs walked", "ran walking", "walks run ran walk", "running walked"]
    dataset = Dataset.from_dict(dict(tokenizer(sentences)))
    rates = AugmentationRates(delete=0, swap=0, mask=0, replace=0, neighbour=0.6)
    options = {"rates": rates, "embeddings": embeddings, "neighbour_candidates": 2}  # each family's other members
    first = augment_dataset(dataset, tokenizer, copies=3, seed=0, **options)
    again = augment_dataset(dataset, tokenizer, copies=3, seed=0, **options)
    other = augment_dataset(dataset, tokenizer, copies=3, seed=1, **options)
    assert list(first["input_ids"]) == list(again["input_ids"]) != list(other["input_ids"])
    family = [{"walk", "walks", "walked"}, {"run", "runs", "ran"}, {"##ing", "##ed"}]
    changed = 0
    for index, row in enumerate(first):
        source = dataset[index // 3]["input_ids"]
        assert len(row["input_ids"]) == len(source)  # substitution never deletes, inserts or moves a piece
        for before, after in zip(
            tokenizer.convert_ids_to_tokens(source), tokenizer.convert_ids_to_tokens(row["input_ids"])
        ):
            if before in ("[CLS]", "[SEP]"):
                assert after == before
            elif after != before:
                changed += 1
                assert any(before in members and after in members for members in family), (before, after)
    assert changed > 10  # 12 copies of 2-4 pieces at 0.6: the substitution really happens
    with pytest.raises(ValueError, match="pass embeddings=model.get_input_embeddings"):
        augment_dataset(dataset, tokenizer, copies=1, seed=0, rates=rates)
