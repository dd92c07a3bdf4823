"""Tests for utils/soft_prompts.py: prompt tuning from scratch, its checker, its equality with peft,
and the chapter's claim that a trained soft prompt beats the 0-shot prompt on held-out queries."""

from __future__ import annotations

import warnings

import einops
import pytest
import torch

from utils.checkers.prompting import check_logits_with_soft_prompt
from utils.checks import assert_accepts, assert_rejects
from utils.course_model.evaluate import greedy_matches
from utils.models import COURSE_MODEL_DIR, load_model, tiny_random_model
from utils.soft_prompts import (
    DEFAULT_TASK, IGNORE, SoftPrompt, answer_batch, answer_loss, compare_prompts, few_shot_prompts, frozen,
    logits_with_soft_prompt, nearest_tokens, soft_prompt_accuracy, soft_prompt_from_peft, soft_prompt_step,
    split_queries, train_soft_prompt, zero_shot_examples,
)
from utils.world import FEW_SHOT_TASKS

ONE_SHOT_TEXT = "France -> FRANCE\n"  # 8 tokens with v11's tokenizer


def random_ids(model, batch: int, seq: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(model.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed))


# The soft prompt ------------------------------------------------------------------------------

def test_soft_prompt_holds_trainable_vectors_of_the_model_width(course_model):
    soft_prompt = SoftPrompt.from_vocabulary(course_model, 5, seed=1)
    assert soft_prompt.embeddings.shape == (5, 128)
    assert (soft_prompt.n_tokens, soft_prompt.d_model) == (5, 128)
    assert [p.shape for p in soft_prompt.parameters() if p.requires_grad] == [(5, 128)]


def test_from_vocabulary_takes_rows_of_the_embedding_matrix_and_is_seeded(course_model):
    embedding = course_model.get_input_embeddings().weight
    first = SoftPrompt.from_vocabulary(course_model, 6, seed=3).embeddings
    assert torch.equal(first, SoftPrompt.from_vocabulary(course_model, 6, seed=3).embeddings)
    assert not torch.equal(first, SoftPrompt.from_vocabulary(course_model, 6, seed=4).embeddings)
    for row in first:
        assert (embedding == row).all(dim=-1).any(), "every initial vector is some token's embedding"


def test_from_text_is_the_embeddings_of_the_text_tokens(course_model, course_tokenizer):
    ids = course_tokenizer(ONE_SHOT_TEXT, add_special_tokens=False)["input_ids"]
    embedding = course_model.get_input_embeddings().weight
    soft_prompt = SoftPrompt.from_text(course_model, course_tokenizer, ONE_SHOT_TEXT)
    assert soft_prompt.n_tokens == len(ids) > 3
    assert torch.equal(soft_prompt.embeddings, embedding[ids])
    # Fewer tokens than asked: repeated (peft's rule); more: cut.
    assert torch.equal(SoftPrompt.from_text(course_model, course_tokenizer, ONE_SHOT_TEXT, len(ids) + 2).embeddings,
                       embedding[ids + ids[:2]])
    assert torch.equal(SoftPrompt.from_text(course_model, course_tokenizer, ONE_SHOT_TEXT, 3).embeddings, embedding[ids[:3]])


def test_forward_puts_the_soft_prompt_before_every_sequence(course_model):
    soft_prompt = SoftPrompt.from_vocabulary(course_model, 3)
    input_embeds = torch.randn(2, 7, 128)
    out = soft_prompt(input_embeds)
    assert out.shape == (2, 10, 128)
    for row in out:
        assert torch.equal(row[:3], soft_prompt.embeddings)
    assert torch.equal(out[:, 3:], input_embeds)


def test_forward_then_the_model_gives_the_reference_logits(course_model):
    soft_prompt = SoftPrompt.from_vocabulary(course_model, 4)
    input_ids = random_ids(course_model, 2, 6)
    with torch.no_grad():
        embeds = soft_prompt(course_model.get_input_embeddings()(input_ids))
        logits = course_model(inputs_embeds=embeds).logits[:, 4:]
        torch.testing.assert_close(logits, logits_with_soft_prompt(course_model, soft_prompt.embeddings, input_ids))


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_logits_with_soft_prompt_on_other_architectures(family):
    model = tiny_random_model(family)
    soft_prompt = SoftPrompt.from_vocabulary(model, 3).embeddings.detach()
    input_ids = random_ids(model, 2, 5)
    with torch.no_grad():
        logits = logits_with_soft_prompt(model, soft_prompt, input_ids)
        plain = model(input_ids=input_ids).logits
    assert logits.shape == plain.shape
    assert not torch.allclose(logits, plain), "the soft prompt must change the logits"


def test_logits_of_the_real_tokens_do_not_depend_on_the_batch(course_model):
    soft_prompt = SoftPrompt.from_vocabulary(course_model, 4).embeddings.detach()
    input_ids = random_ids(course_model, 3, 6)
    with torch.no_grad():
        together = logits_with_soft_prompt(course_model, soft_prompt, input_ids)
        alone = logits_with_soft_prompt(course_model, soft_prompt, input_ids[1:2])
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-5)


# The checker ----------------------------------------------------------------------------------

def keeps_the_soft_prompt_positions(model, soft_prompt, input_ids):
    embeds = model.get_input_embeddings()(input_ids)
    prompt = einops.repeat(soft_prompt, "n d -> b n d", b=input_ids.shape[0])
    return model(inputs_embeds=torch.cat([prompt, embeds], dim=1)).logits


def appends_the_soft_prompt(model, soft_prompt, input_ids):
    embeds = model.get_input_embeddings()(input_ids)
    prompt = einops.repeat(soft_prompt, "n d -> b n d", b=input_ids.shape[0])
    return model(inputs_embeds=torch.cat([embeds, prompt], dim=1)).logits[:, : input_ids.shape[1]]


def drops_the_last_positions(model, soft_prompt, input_ids):
    logits = keeps_the_soft_prompt_positions(model, soft_prompt, input_ids)
    return logits[:, : input_ids.shape[1]]


def adds_to_the_first_tokens(model, soft_prompt, input_ids):
    embeds = model.get_input_embeddings()(input_ids).clone()
    embeds[:, : soft_prompt.shape[0]] += soft_prompt
    return model(inputs_embeds=embeds).logits


def adds_position_embeddings_itself(model, soft_prompt, input_ids):
    embeds = model.get_input_embeddings()(input_ids)
    prompt = einops.repeat(soft_prompt, "n d -> b n d", b=input_ids.shape[0])
    embeds = torch.cat([prompt, embeds], dim=1)
    embeds = embeds + model.transformer.wpe(torch.arange(embeds.shape[1]))
    return model(inputs_embeds=embeds).logits[:, soft_prompt.shape[0]:]


def forgets_the_batch(model, soft_prompt, input_ids):
    embeds = model.get_input_embeddings()(input_ids)
    prompt = soft_prompt.unsqueeze(0)  # [1, n, d]: works for a batch of 1 only
    return model(inputs_embeds=torch.cat([prompt, embeds], dim=1)).logits[:, soft_prompt.shape[0]:]


def uses_gpt2_paths(model, soft_prompt, input_ids):
    embeds = model.transformer.wte(input_ids)
    prompt = einops.repeat(soft_prompt, "n d -> b n d", b=input_ids.shape[0])
    return model(inputs_embeds=torch.cat([prompt, embeds], dim=1)).logits[:, soft_prompt.shape[0]:]


def test_checker_accepts_the_reference(course_model):
    assert_accepts(check_logits_with_soft_prompt(logits_with_soft_prompt, course_model))


def test_checker_accepts_the_soft_prompt_module_and_expand(course_model):
    def with_the_module(model, soft_prompt, input_ids):
        embeds = SoftPrompt(soft_prompt)(model.get_input_embeddings()(input_ids))
        return model(inputs_embeds=embeds).logits[:, soft_prompt.shape[0]:]

    def with_expand(model, soft_prompt, input_ids):
        embeds = model.get_input_embeddings()(input_ids)
        prompt = soft_prompt.expand(input_ids.shape[0], -1, -1)
        return model(inputs_embeds=torch.cat([prompt, embeds], dim=1)).logits[:, -input_ids.shape[1]:]

    assert_accepts(check_logits_with_soft_prompt(with_the_module, course_model))
    assert_accepts(check_logits_with_soft_prompt(with_expand, course_model))


@pytest.mark.parametrize(("wrong", "message"), [
    (keeps_the_soft_prompt_positions, r"input 'your model, batch of 2.*expected shape \(2, 6, 2048\), got \(2, 10, 2048\)"),
    (appends_the_soft_prompt, r"input 'your model, batch of 2.*first difference"),
    (drops_the_last_positions, r"input 'your model, batch of 2.*first difference"),
    (adds_to_the_first_tokens, r"input 'your model, batch of 2.*first difference"),
    (adds_position_embeddings_itself, r"input 'your model, batch of 2.*first difference"),
    (forgets_the_batch, r"input 'your model, batch of 2.*raised RuntimeError"),
    (uses_gpt2_paths, r"input 'tiny random Pythia \(GPT-NeoX\).*AttributeError"),
])
def test_checker_rejects(course_model, wrong, message):
    assert_rejects(check_logits_with_soft_prompt(wrong, course_model), match=message)


def test_checker_message_gives_the_hint(course_model):
    result = check_logits_with_soft_prompt(appends_the_soft_prompt, course_model)
    assert "Hint:" in result.message and "before" in result.message


# Equality with peft ---------------------------------------------------------------------------

@pytest.fixture
def peft_model():
    """peft's prompt tuning on a fresh copy of the course model (get_peft_model wraps and freezes it),
    new for each test: the tests below change its virtual tokens."""
    peft = pytest.importorskip("peft")
    config = peft.PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=6, prompt_tuning_init="TEXT",
        prompt_tuning_init_text=ONE_SHOT_TEXT, tokenizer_name_or_path=str(COURSE_MODEL_DIR))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.get_peft_model(load_model("course"), config)


def peft_virtual_tokens(peft_model) -> torch.nn.Parameter:
    return peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight


def test_peft_text_init_equals_from_text(course_model, course_tokenizer, peft_model):
    ours = SoftPrompt.from_text(course_model, course_tokenizer, ONE_SHOT_TEXT, n_tokens=6)
    assert torch.equal(soft_prompt_from_peft(peft_model).embeddings, ours.embeddings)


def test_peft_logits_equal_ours_for_the_real_tokens(course_model, course_tokenizer, peft_model):
    """peft puts the virtual tokens before everything (BOS included), returns their logits too,
    prepends ones to the attention mask and IGNORE to the labels: the loss is the same."""
    virtual = peft_virtual_tokens(peft_model)
    with torch.no_grad():
        virtual.copy_(torch.randn(virtual.shape, generator=torch.Generator().manual_seed(0)))
    soft_prompt = soft_prompt_from_peft(peft_model)
    assert torch.equal(soft_prompt.embeddings, virtual)
    input_ids, labels = answer_batch(course_tokenizer, *zero_shot_examples("uppercase", ["August", "box", "Denmark"]))
    with torch.no_grad():
        theirs = peft_model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)
        ours = logits_with_soft_prompt(course_model, soft_prompt.embeddings, input_ids)
    assert theirs.logits.shape == (3, 6 + input_ids.shape[1], course_model.config.vocab_size)
    difference = (theirs.logits[:, 6:] - ours).abs().max().item()
    print(f"\npeft vs ours: max abs logit difference {difference:.2e}")
    assert difference <= 1e-5
    torch.testing.assert_close(theirs.loss, answer_loss(ours, labels), atol=1e-6, rtol=1e-6)


def test_peft_gradient_equals_ours(course_model, course_tokenizer, peft_model):
    soft_prompt = soft_prompt_from_peft(peft_model)
    input_ids, labels = answer_batch(course_tokenizer, *zero_shot_examples("uppercase", ["April", "fox"]))
    virtual = peft_virtual_tokens(peft_model)
    virtual.grad = None
    peft_model(input_ids=input_ids, labels=labels).loss.backward()
    with frozen(course_model):
        answer_loss(logits_with_soft_prompt(course_model, soft_prompt.embeddings, input_ids), labels).backward()
    torch.testing.assert_close(soft_prompt.embeddings.grad, virtual.grad, atol=1e-6, rtol=1e-5)
    virtual.grad = None


def test_soft_prompt_from_peft_rejects_other_models(course_model):
    with pytest.raises(ValueError, match="prompt tuning.*PromptTuningConfig"):
        soft_prompt_from_peft(course_model)


# Training -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(course_model, course_tokenizer):
    """The soft prompt the chapter trains (default settings), and the model's weights around it."""
    before = {name: p.detach().clone() for name, p in course_model.named_parameters()}
    flags = {name: p.requires_grad for name, p in course_model.named_parameters()}
    soft_prompt, losses = train_soft_prompt(course_model, course_tokenizer, DEFAULT_TASK)
    return soft_prompt, losses, before, flags


def test_training_leaves_the_model_bit_identical(course_model, trained):
    _, _, before, flags = trained
    for name, parameter in course_model.named_parameters():
        assert torch.equal(parameter, before[name]), f"{name} changed"
        assert parameter.grad is None, f"{name} got a gradient"
        assert parameter.requires_grad == flags[name]


def test_training_changes_the_soft_prompt_and_lowers_the_loss(course_model, trained):
    soft_prompt, losses, _, _ = trained
    assert len(losses) == 100
    assert not torch.equal(soft_prompt.embeddings, SoftPrompt.from_vocabulary(course_model, 8, seed=0).embeddings)
    late = sum(losses[-10:]) / 10
    print(f"\nanswer loss: first step {losses[0]:.3f}, mean of the last 10 steps {late:.4f}")
    assert losses[0] > 2.0 and late < 0.1 * losses[0]


def test_training_is_deterministic_with_the_seed(course_model, course_tokenizer):
    first = train_soft_prompt(course_model, course_tokenizer, "capital", n_tokens=2, steps=3, seed=5)
    again = train_soft_prompt(course_model, course_tokenizer, "capital", n_tokens=2, steps=3, seed=5)
    other = train_soft_prompt(course_model, course_tokenizer, "capital", n_tokens=2, steps=3, seed=6)
    assert first[1] == again[1] and torch.equal(first[0].embeddings, again[0].embeddings)
    assert first[1] != other[1]


def test_training_runs_the_step_it_is_given(course_model, course_tokenizer):
    """The lab trains with the learner's step: train_soft_prompt calls it once per step, on the same batches."""
    batch_sizes = []

    def counting_step(model, soft_prompt, optimizer, input_ids, labels):
        batch_sizes.append(len(input_ids))
        return soft_prompt_step(model, soft_prompt, optimizer, input_ids, labels)

    ours = train_soft_prompt(course_model, course_tokenizer, "capital", n_tokens=2, steps=3, seed=5, step=counting_step)
    default = train_soft_prompt(course_model, course_tokenizer, "capital", n_tokens=2, steps=3, seed=5)
    assert batch_sizes == [16] * 3
    assert ours[1] == default[1] and torch.equal(ours[0].embeddings, default[0].embeddings)


def test_training_from_text_starts_from_the_text(course_model, course_tokenizer):
    start = SoftPrompt.from_text(course_model, course_tokenizer, ONE_SHOT_TEXT).embeddings
    soft_prompt, losses = train_soft_prompt(course_model, course_tokenizer, "uppercase", n_tokens=len(start), steps=1, lr=1e-3,
                                            init_text=ONE_SHOT_TEXT)
    assert len(losses) == 1
    assert (soft_prompt.embeddings - start).abs().max() <= 1.1e-3  # one Adam step moves each value by <= lr


def test_frozen_catches_a_model_that_got_a_gradient():
    model = tiny_random_model("gpt2")
    parameter = next(model.parameters())
    with pytest.raises(AssertionError, match="only what is being trained may get gradients"):
        with frozen(model):
            parameter.grad = torch.zeros_like(parameter)
    assert parameter.requires_grad


# Evaluation and the chapter's claim -----------------------------------------------------------

def test_split_is_disjoint_and_covers_the_task():
    for task, table in FEW_SHOT_TASKS.items():
        train, held_out = split_queries(task)
        assert not set(train) & set(held_out)
        assert sorted(train + held_out) == sorted(table)
        assert held_out == sorted(table)[::3]
    assert [len(part) for part in split_queries("uppercase")] == [68, 35]


def test_examples_come_from_the_generator():
    prompts, answers = zero_shot_examples("uppercase", ["France", "box"])
    assert prompts == ["France ->", "box ->"] and answers == [" FRANCE\n", " BOX\n"]
    one_shot = few_shot_prompts("uppercase", ["France"], 1)[0]
    assert one_shot.endswith("\nFrance ->") and one_shot.count("\n") == 1


def test_answer_batch_labels_only_the_answer(course_tokenizer):
    input_ids, labels = answer_batch(course_tokenizer, ["France ->", "United Kingdom ->"], [" FRANCE\n", " UK\n"])
    for ids, row in zip(input_ids, labels):
        kept = row[row != IGNORE]
        assert course_tokenizer.decode(kept) in (" FRANCE\n", " UK\n")
        assert torch.equal(ids[row != IGNORE], kept)
    assert input_ids[0, 0] == course_tokenizer.bos_token_id


def test_accuracy_without_soft_prompt_matches_the_model_card_metric(course_model, course_tokenizer):
    _, held_out = split_queries("capital")
    prompts, answers = zero_shot_examples("capital", held_out)
    expected = greedy_matches(course_model, course_tokenizer, prompts, answers).float().mean().item()
    assert soft_prompt_accuracy(course_model, course_tokenizer, None, "capital", held_out) == pytest.approx(expected)


def test_an_untrained_soft_prompt_does_not_solve_the_task(course_model, course_tokenizer):
    _, held_out = split_queries(DEFAULT_TASK)
    untrained = SoftPrompt.from_vocabulary(course_model, 8, seed=0)
    assert soft_prompt_accuracy(course_model, course_tokenizer, untrained, DEFAULT_TASK, held_out) <= 0.2


def test_trained_soft_prompt_beats_zero_shot_on_held_out_queries(course_model, course_tokenizer, trained):
    """The chapter's claim. Measured: 0-shot 0.09, 1-shot 1.00, 5-shot 1.00, soft prompt 1.00 (35 queries)."""
    soft_prompt = trained[0]
    _, held_out = split_queries(DEFAULT_TASK)
    table = compare_prompts(course_model, course_tokenizer, soft_prompt, DEFAULT_TASK, held_out)
    print(f"\n{DEFAULT_TASK}, {len(held_out)} held-out queries: "
          + ", ".join(f"{name} {accuracy:.2f}" for name, accuracy in table.items()))
    soft = table["soft prompt (8 tokens)"]
    assert table["0-shot"] <= 0.2
    assert soft >= 0.9 and soft >= table["0-shot"] + 0.6
    assert soft >= table["5-shot"] - 0.1 and soft >= table["1-shot"] - 0.1  # as good as hand-written shots


def test_nearest_tokens_reads_the_soft_prompt(course_model, course_tokenizer):
    text_prompt = SoftPrompt.from_text(course_model, course_tokenizer, ONE_SHOT_TEXT)
    neighbours = nearest_tokens(course_model, course_tokenizer, text_prompt, k=2)
    ids = course_tokenizer(ONE_SHOT_TEXT, add_special_tokens=False)["input_ids"]
    assert [row[0] for row in neighbours] == [course_tokenizer.decode([i]) for i in ids]   # each embedding is its token
    assert all(len(row) == 2 for row in neighbours)


# Bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_tokens", [0, -1])
def test_n_tokens_below_one_is_rejected(course_model, course_tokenizer, n_tokens):
    with pytest.raises(ValueError, match=r"n_tokens must be an integer >= 1"):
        SoftPrompt.from_vocabulary(course_model, n_tokens)
    with pytest.raises(ValueError, match=r"n_tokens must be an integer >= 1"):
        train_soft_prompt(course_model, course_tokenizer, "uppercase", n_tokens=n_tokens)
    with pytest.raises(ValueError, match=r"n_tokens must be an integer >= 1"):
        logits_with_soft_prompt(course_model, torch.zeros(0, 128), torch.zeros(1, 3, dtype=torch.long))


def test_soft_prompt_of_another_width_names_both_sizes(course_model):
    with pytest.raises(ValueError, match=r"64 dimensions.*d_model is 128"):
        logits_with_soft_prompt(course_model, torch.zeros(4, 64), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"d_model=128.*\(2, 3, 64\)"):
        SoftPrompt.from_vocabulary(course_model, 2)(torch.zeros(2, 3, 64))


def test_unknown_task_lists_the_valid_ones(course_model, course_tokenizer):
    with pytest.raises(ValueError, match=r"unknown task 'lowercase'.*'uppercase'"):
        train_soft_prompt(course_model, course_tokenizer, "lowercase")
    with pytest.raises(ValueError, match=r"unknown task 'lowercase'.*'capital'"):
        split_queries("lowercase")


def test_query_outside_the_task_is_rejected(course_model, course_tokenizer):
    with pytest.raises(ValueError, match=r"'Paris' is not a query of task 'uppercase'"):
        soft_prompt_accuracy(course_model, course_tokenizer, None, "uppercase", ["Paris"])


@pytest.mark.parametrize("shape", [(5,), (1, 2, 5)])
def test_input_ids_must_be_2d(course_model, shape):
    soft_prompt = SoftPrompt.from_vocabulary(course_model, 2).embeddings
    with pytest.raises(ValueError, match=r"input_ids must be 2-D \[batch, seq\].*unsqueeze\(0\)"):
        logits_with_soft_prompt(course_model, soft_prompt, torch.zeros(shape, dtype=torch.long))


def test_soft_prompt_must_be_2d(course_model):
    with pytest.raises(ValueError, match=r"\[n_tokens, d_model\]"):
        SoftPrompt(torch.zeros(128))
    with pytest.raises(ValueError, match=r"soft_prompt must be 2-D"):
        logits_with_soft_prompt(course_model, torch.zeros(1, 2, 128), torch.zeros(1, 3, dtype=torch.long))


def test_too_many_positions_is_rejected(course_model):
    with pytest.raises(ValueError, match=r"exceed the model's 256 positions"):
        logits_with_soft_prompt(course_model, torch.zeros(200, 128), torch.zeros(1, 100, dtype=torch.long))
