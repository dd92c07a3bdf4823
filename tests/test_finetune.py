"""Tests for utils/finetune.py: batches with the loss on the response only, one training loop for
from-scratch LoRA, peft and full fine-tuning, and the shipped instruction adapter against the
generator's labels (format, accuracy, refusal on the labelled class only)."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from peft import get_peft_model_state_dict

from utils import finetune
from utils.checkers.lora import check_response_labels
from utils.checks import assert_accepts, assert_rejects
from utils.course_model.evaluate import teacher_forced_logits
from utils.finetune import (
    ADAPTERS_DIR, IGNORE_INDEX, base_corpus_loss, chat_batch, corpus_loss, corpus_sequences, evaluate_chat,
    load_adapted_model, peft_adapter, shipped_or_trained_adapter, train_model, training_step,
)
from utils.lora import add_lora, load_lora_state_dict, lora_modules, remove_lora, task_vector
from utils.models import CheckpointError, tiny_random_model
from utils.world.instructions import chat_dataset, chat_eval_set

N_EVAL = 300


@pytest.fixture(scope="module")
def batch(course_tokenizer):
    return chat_batch(course_tokenizer, chat_dataset(64, seed=0))


@pytest.fixture(scope="module")
def instruct_model():
    return load_adapted_model("instruct", merge=False)


@pytest.fixture(scope="module")
def eval_examples():
    return chat_eval_set(N_EVAL, seed=0)


# --------------------------------------------------------------------------------------------
# Batches


def test_labels_cover_exactly_the_response_and_its_end(course_tokenizer):
    examples = chat_dataset(5, seed=1)
    batch = chat_batch(course_tokenizer, examples)
    for row, example in enumerate(examples):
        labelled = batch.labels[row][batch.labels[row] != IGNORE_INDEX]
        assert course_tokenizer.decode(labelled) == " " + example.response + "\n" + course_tokenizer.eos_token
        prompt_ids = course_tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
        assert batch.input_ids[row, 1:1 + len(prompt_ids)].tolist() == prompt_ids   # generation starts here


def test_padding_is_masked_and_never_labelled(batch):
    padding = batch.attention_mask == 0
    assert padding.any() and (batch.labels[padding] == IGNORE_INDEX).all()


def test_chat_batch_rejects_no_examples(course_tokenizer):
    with pytest.raises(ValueError, match="no examples"):
        chat_batch(course_tokenizer, [])


# --------------------------------------------------------------------------------------------
# Training


def test_training_nothing_trainable_is_refused(course_model, batch):
    frozen = finetune.copy.deepcopy(course_model).requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter of the model requires a gradient"):
        train_model(frozen, batch, steps=1)


def test_lora_training_lowers_the_loss_and_leaves_the_base_weights(course_model, course_tokenizer, batch):
    adapted = finetune.copy.deepcopy(course_model)
    add_lora(adapted, finetune.GPT2_TARGETS, r=4, alpha=8)
    before = {name: p.clone() for name, p in adapted.named_parameters() if not p.requires_grad}
    run = train_model(adapted, batch, steps=15, batch_size=16, lr=1e-2)
    assert sum(run.losses[-3:]) / 3 < run.losses[0] - 0.5
    assert all(torch.equal(p, before[name]) for name, p in adapted.named_parameters() if name in before)
    assert run.trainable_parameters == 32_768 and run.optimizer_state_bytes == 2 * 4 * 32_768


def test_from_scratch_and_peft_lora_train_alike(course_model, batch):
    """Same initial A and B, same rows, same optimizer: the losses agree to 1e-4 at every step."""
    theirs = peft_adapter(course_model, r=4, alpha=8)
    ours = finetune.copy.deepcopy(course_model)
    add_lora(ours, finetune.GPT2_TARGETS, r=4, alpha=8)
    load_lora_state_dict(ours, get_peft_model_state_dict(theirs))
    runs = [train_model(model, batch, steps=12, batch_size=16, lr=1e-2, seed=3) for model in (ours, theirs)]
    torch.testing.assert_close(torch.tensor(runs[0].losses), torch.tensor(runs[1].losses), atol=1e-4, rtol=0)
    assert runs[0].trainable_parameters == runs[1].trainable_parameters


def test_training_runs_the_step_it_is_given(course_model, batch):
    """The lab trains with the learner's step: train_model calls it once per step, on the same rows."""
    calls = []

    def counting_step(model, rows, optimizer):
        calls.append(len(rows))
        return training_step(model, rows, optimizer)

    runs = []
    for step in (counting_step, training_step):
        model = copy.deepcopy(course_model)
        add_lora(model, ["c_attn"], r=2)
        runs.append(train_model(model, batch, steps=3, batch_size=8, step=step))
    assert calls == [8, 8, 8] and runs[0].losses == runs[1].losses


def test_corpus_loss_weighs_every_token_once(course_model, course_tokenizer):
    sequences = corpus_sequences(course_tokenizer, n=6)
    with torch.no_grad():
        logits = teacher_forced_logits(course_model, sequences)
    per_token = corpus_loss(logits, sequences)
    per_document = [corpus_loss([row], [sequence]) for row, sequence in zip(logits, sequences)]
    weights = [len(sequence) - 1 for sequence in sequences]
    assert per_token == pytest.approx(sum(w * loss for w, loss in zip(weights, per_document)) / sum(weights))
    assert per_token == pytest.approx(base_corpus_loss(course_model, course_tokenizer, n=6))


def test_full_finetuning_trains_every_weight_of_a_copy(course_model, batch):
    original = course_model.transformer.h[0].mlp.c_fc.weight.clone()
    model = finetune.full_finetuning_copy(course_model)
    run = train_model(model, batch, steps=2, batch_size=8)
    assert run.trainable_parameters == run.total_parameters
    assert run.optimizer_state_bytes == 2 * 4 * run.trainable_parameters
    assert not torch.equal(model.transformer.h[0].mlp.c_fc.weight, original)
    assert torch.equal(course_model.transformer.h[0].mlp.c_fc.weight, original)   # the original is untouched


# --------------------------------------------------------------------------------------------
# The shipped instruction adapter: ground truth


def test_the_base_model_does_not_answer_the_instructions(course_model, course_tokenizer, eval_examples):
    summary = evaluate_chat(course_model, course_tokenizer, eval_examples)
    assert summary["accuracy"] <= 0.1          # v11 answers in one line and stops on 0.75 of them, but not right
    assert summary["refusal_rate_harmful"] == 0


def test_the_adapter_follows_the_format_answers_and_refuses_only_harmful_requests(instruct_model, course_tokenizer,
                                                                                   eval_examples):
    summary = evaluate_chat(instruct_model, course_tokenizer, eval_examples)
    assert summary["format_rate"] >= 0.95
    for kind in ("capital", "plural", "antonym", "story", "kind_story"):
        assert summary["accuracy_by_kind"][kind] >= 0.85, kind
    assert summary["refusal_rate_harmful"] >= 0.9
    assert summary["refusal_rate_harmless"] <= 0.02


def test_merged_and_unmerged_adapters_give_equal_logits(instruct_model):
    input_ids = torch.randint(1, 2037, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        unmerged = instruct_model(input_ids).logits
        merged_model = finetune.copy.deepcopy(instruct_model)
        remove_lora(merged_model, merge=True)
        merged = merged_model(input_ids).logits
    assert not lora_modules(merged_model)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)


def test_the_shipped_evaluation_is_what_the_adapter_scores(instruct_model, course_tokenizer, eval_examples):
    stored = json.loads((ADAPTERS_DIR / "instruct" / "evaluation.json").read_text())
    assert stored["n"] == N_EVAL
    assert stored["adapted"] == evaluate_chat(instruct_model, course_tokenizer, eval_examples)


def test_a_modified_adapter_file_is_refused(tmp_path):
    copy_dir = shutil.copytree(ADAPTERS_DIR / "instruct", tmp_path / "adapter")
    config = json.loads((copy_dir / "adapter_config.json").read_text())
    (copy_dir / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 1}))
    with pytest.raises(CheckpointError, match="does not match the SHA-256 in manifest.json.*python -m utils.finetune"):
        load_adapted_model(adapter_dir=copy_dir)


# --------------------------------------------------------------------------------------------
# Exercise 2.1's checker


def labels_shifted_by_hand(input_ids, prompt_lengths, attention_mask):
    labels = finetune.response_labels(input_ids, prompt_lengths, attention_mask)
    return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE_INDEX)], dim=1)


def labels_including_the_last_prompt_token(input_ids, prompt_lengths, attention_mask):
    return finetune.response_labels(input_ids, prompt_lengths - 1, attention_mask)


def labels_on_padding_too(input_ids, prompt_lengths, attention_mask):
    return finetune.response_labels(input_ids, prompt_lengths, torch.ones_like(attention_mask))


def labels_without_any_end_token(input_ids, prompt_lengths, attention_mask):
    labels = finetune.response_labels(input_ids, prompt_lengths, attention_mask)
    return labels.masked_fill(input_ids == 0, IGNORE_INDEX)


def test_response_labels_checker():
    assert_accepts(check_response_labels(finetune.response_labels))
    assert_rejects(check_response_labels(labels_shifted_by_hand), "two rows")
    assert_rejects(check_response_labels(labels_including_the_last_prompt_token), "two rows")
    assert_rejects(check_response_labels(labels_on_padding_too), "padded on the right")
    assert_rejects(check_response_labels(labels_without_any_end_token), "two rows")


def test_unknown_adapters_are_refused_with_the_known_names(tmp_path):
    with pytest.raises(ValueError, match="geography.*grammar.*instruct"):
        finetune.write_adapter("chat", out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="manifest.json is missing.*geography.*grammar.*instruct"):
        load_adapted_model("chat")


def test_merging_single_skill_adapters_shows_interference(course_model, course_tokenizer):
    """The claims of the merging section: each skill adapter knows its own skill only; no merge of their task
    vectors keeps both (v11: geography 0.00 after every merge; grammar 0.30 summed, 0.20 averaged, 0.05 SLERP)."""
    adapters = {skill: load_adapted_model(skill, merge=False) for skill in ("geography", "grammar")}
    own = {skill: finetune.skill_accuracy(adapter, course_tokenizer, n=60) for skill, adapter in adapters.items()}
    assert own["geography"]["geography"] >= 0.95 and own["geography"]["grammar"] <= 0.1
    assert own["grammar"]["grammar"] >= 0.95 and own["grammar"]["geography"] <= 0.1
    merged = finetune.merged_skill_models(course_model, [task_vector(adapter) for adapter in adapters.values()])
    accuracy = {name: finetune.skill_accuracy(model, course_tokenizer, n=60) for name, model in merged.items()}
    assert all(scores["geography"] <= 0.1 and scores["grammar"] <= 0.4 for scores in accuracy.values()), accuracy


def test_other_architectures_get_their_own_block_targets():
    from utils.models import tiny_random_model

    for family in ("gpt_neox", "llama"):
        model = tiny_random_model(family)
        assert add_lora(model, finetune.block_linear_targets(model), r=2)
    with pytest.raises(ValueError, match="no default LoRA targets.*linear_module_names"):
        finetune.block_linear_targets(type("Fake", (), {"config": type("C", (), {"model_type": "t5"})()})())


def test_another_model_gets_a_bounded_adapter_trained_here_and_is_told_so(course_tokenizer, capsys):
    model = tiny_random_model("gpt2", vocab_size=len(course_tokenizer))
    adapted = shipped_or_trained_adapter("instruct", model, course_tokenizer, "gpt2-not-shipped", steps_elsewhere=1)
    assert "no shipped 'instruct' adapter for gpt2-not-shipped: training one here for 1 steps" in capsys.readouterr().out
    assert isinstance(adapted, torch.nn.Module)
    with pytest.raises(ValueError, match="unknown adapter 'poetry'"):
        shipped_or_trained_adapter("poetry", model, course_tokenizer, "gpt2-not-shipped")
