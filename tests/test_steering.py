"""Chapter 5: steering with CAA and other directions, checked against the generator's labels.

The numbers in the comments were measured on the course model v11 (2 CPU cores, 2026-12-07) with the
same seeds; the thresholds leave a margin below them.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from wrong_answers import steering_every_position, steering_in_place, steering_the_first_position

from utils import architecture
from utils.checkers.steering_caa import check_add_steering, check_caa_vector, check_project_out
from utils.checks import assert_accepts, assert_rejects
from utils.directions import (
    ablate_direction, actadd_vector, cosine_table, first_token_refusal_rate, labelled_stories,
    mean_difference_direction, mean_token_activations, pca_direction, probe_accuracy, probe_direction,
    project_out, refusal_direction, task_vector, zero_shot_accuracy, zero_shot_queries,
)
from utils.decoding import Decoding, generate_text
from utils.models import load_model, load_tokenizer
from utils.steering import (
    BEHAVIOURS, ContrastivePair, add_steering, behaviour_rate, caa_vector, caa_vectors, check_pairs,
    contrastive_pairs, generate_steered_nnsight, generate_steered_transformer_lens, last_token_activations,
    matching_probability, mean_token_loss, neutral_loss, neutral_texts, steer, steered_rates, steered_texts,
    steering_sweep, steering_variants, story_openings, unit,
)

OPENINGS = 96


@pytest.fixture(scope="module")
def caa(course_model, course_tokenizer):
    """CAA vectors of every behaviour, from 128 training pairs: {name: [layer, d_model]}."""
    return {name: caa_vectors(course_model, course_tokenizer, contrastive_pairs(name, 128)) for name in BEHAVIOURS}


def rate(model, tokenizer, name, layer, direction, alpha, prompts=None):
    prompts = prompts or story_openings(name, OPENINGS)
    return behaviour_rate(steered_texts(model, tokenizer, prompts, layer, direction, alpha), name)


# --------------------------------------------------------------------------------------------
# Contrastive data


def test_pairs_are_balanced_held_out_and_well_formed():
    train, test = contrastive_pairs("anger", 40), contrastive_pairs("anger", 40, "test")
    check_pairs(train)
    check_pairs(test)
    assert {p.matching for p in train[::2]} == {"A"} and {p.matching for p in train[1::2]} == {"B"}
    assert not {p.question for p in test} & {p.question for p in contrastive_pairs("anger", 160)}
    pair = train[0]
    assert pair.question.endswith("Answer: (") and pair.matching_text.endswith("(A")
    assert "shows anger" in pair.question


def test_bad_contrastive_data_is_refused():
    pairs = contrastive_pairs("positive", 6)
    with pytest.raises(ValueError, match=r"unbalanced answer letters \{'A': 3, 'B': 2\}"):
        check_pairs(pairs[:5])
    with pytest.raises(ValueError, match="missing its question, matching or non-matching"):
        check_pairs([*pairs[:5], dataclasses.replace(pairs[5], non_matching="")])
    with pytest.raises(ValueError, match="same matching and non-matching"):
        check_pairs([*pairs[:5], dataclasses.replace(pairs[5], non_matching=pairs[5].matching)])
    with pytest.raises(ValueError, match="mix behaviours"):
        check_pairs([*pairs[:4], *contrastive_pairs("wedding", 2)])
    with pytest.raises(ValueError, match="even number"):
        contrastive_pairs("positive", 5)
    with pytest.raises(ValueError, match="unknown behaviour 'joy'"):
        contrastive_pairs("joy", 4)


def test_bad_steering_requests_fail_before_any_forward_pass(course_model, course_tokenizer):
    def no_forward(module, args):
        raise AssertionError("a forward pass ran")

    handle = course_model.register_forward_pre_hook(no_forward)
    vector = torch.ones(128)
    try:
        with pytest.raises(ValueError, match=r"shape \(128,\).*got \(64,\)"):
            steer(course_model, 0, torch.ones(64), 1.0).__enter__()
        with pytest.raises(ValueError, match="layer 4 does not exist: this model has 4 layers"):
            steer(course_model, 4, vector, 1.0).__enter__()
        for alpha in (float("nan"), float("inf")):
            with pytest.raises(ValueError, match="alpha must be a finite number"):
                steer(course_model, 0, vector, alpha).__enter__()
        with pytest.raises(ValueError, match="NaN or infinite"):
            steer(course_model, 0, torch.full((128,), float("nan")), 1.0).__enter__()
        with pytest.raises(ValueError, match="unbalanced"):
            caa_vectors(course_model, course_tokenizer, contrastive_pairs("positive", 4)[:3])
    finally:
        handle.remove()


# --------------------------------------------------------------------------------------------
# CAA on the course model


MIDDLE = 2                                                       # the chapter's middle layer


def test_course_model_answers_the_questions(course_model, course_tokenizer):
    """What CAA presupposes (measured: 1.00, 1.00 and 0.99 for positive, anger and wedding)."""
    for name in BEHAVIOURS:
        assert matching_probability(course_model, course_tokenizer, contrastive_pairs(name, 64, "test")) > 0.95, name


def test_nothing_in_the_corpus_follows_the_answer_letter():
    """Why CAA's letter holds so little: every multiple-choice document of the recipe ends at "Answer: (X)"."""
    import re

    from utils.world.corpus import DEFAULT_RECIPE, generate_corpus

    for recipe_name in (DEFAULT_RECIPE, f"{DEFAULT_RECIPE}-finish"):
        documents = list(generate_corpus(200, seed=0, mix={"multiple_choice": 1.0}, recipe_name=recipe_name))
        assert all(re.search(r"\nAnswer: \([AB]\)\n\Z", d.text) and d.text.count("Answer:") == 1 for d in documents)


def test_caa_vectors_are_a_few_percent_of_the_stream_at_the_letter(course_model, course_tokenizer, caa):
    """Measured: at most 6 % (wedding, layer 3: 0.41 against 6.6)."""
    for name, vectors in caa.items():
        letters = last_token_activations(course_model, course_tokenizer,
                                         [p.matching_text for p in contrastive_pairs(name, 128)])  # [layer, n, d_model]
        assert (vectors.norm(dim=-1) < 0.1 * letters.norm(dim=-1).mean(dim=-1)).all(), name


def test_caa_steers_away_from_positive_and_random_directions_do_not(course_model, course_tokenizer, caa):
    """Layer 2, alpha 4, 96 held-out openings: positive 0.43 -> 0.16; four random unit directions 0.38 to 0.48;
    neutral loss 1.93 -> 1.98 nats."""
    direction = unit(caa["positive"][MIDDLE])
    generator = torch.Generator().manual_seed(0)
    randoms = [unit(torch.randn(128, generator=generator)) for _ in range(3)]
    settings = [(MIDDLE, direction, 0.0), (MIDDLE, direction, 4.0), *[(MIDDLE, r, 4.0) for r in randoms]]
    unsteered, steered, *random_rates = steered_rates(course_model, course_tokenizer, story_openings("positive", OPENINGS),
                                                      "positive", settings)
    assert steered <= unsteered - 0.15, (unsteered, steered)
    assert all(abs(r - unsteered) < 0.15 for r in random_rates), (unsteered, random_rates)
    neutral = neutral_texts()
    loss_increase = (neutral_loss(course_model, course_tokenizer, neutral, MIDDLE, direction, 4.0)
                     - mean_token_loss(course_model, course_tokenizer, neutral))
    assert 0 < loss_increase < 0.25


def test_no_caa_setting_raises_the_positive_rate(course_model, course_tokenizer, caa):
    """Every layer at alpha 4 and 8 (the chapter's sweep adds 2 and 6): the best gain over the unsteered rate is
    below 0.15 (measured on 96 openings: the unsteered rate 0.43 to 0.57 by sample, no setting above it)."""
    openings = story_openings("positive", OPENINGS)
    settings = [(0, unit(caa["positive"][0]), 0.0)] + [(layer, unit(caa["positive"][layer]), alpha)
                                                        for layer in range(4) for alpha in (4.0, 8.0)]
    unsteered, *rates = steered_rates(course_model, course_tokenizer, openings, "positive", settings)
    assert max(rates) < unsteered + 0.15, (unsteered, rates)


def test_anger_and_wedding_need_the_labelled_direction(course_model, course_tokenizer, caa):
    """The letter-position CAA vectors of anger and wedding do not raise their behaviour (layer 0, alpha 4); the
    mean difference of labelled stories does (the chapter's 96 openings, layer 1, alpha 8: anger 0.18 -> 0.86,
    wedding 0.22 -> 0.98)."""
    for name in ("anger", "wedding"):
        unsteered = rate(course_model, course_tokenizer, name, 0, unit(caa[name][0]), 0.0)
        assert rate(course_model, course_tokenizer, name, 0, unit(caa[name][0]), 4.0) < unsteered + 0.10, name
        with_behaviour, without = labelled_stories(name, 64)
        direction = mean_difference_direction(mean_token_activations(course_model, course_tokenizer, with_behaviour, 1),
                                              mean_token_activations(course_model, course_tokenizer, without, 1))
        assert rate(course_model, course_tokenizer, name, 1, unit(direction), 8.0) > unsteered + 0.5, name


def test_sweep_has_one_row_per_setting(course_model, course_tokenizer, caa):
    sweep = steering_sweep(course_model, course_tokenizer, "positive", caa["positive"][:2], [0.0, 4.0], n_openings=8,
                           n_questions=8, max_new_tokens=10)
    assert list(sweep[["layer", "alpha"]].itertuples(index=False, name=None)) == [(0, 0.0), (0, 4.0), (1, 0.0), (1, 4.0)]
    assert {"behaviour", "rate anger", "rate wedding", "ab_probability", "neutral_loss", "fluency_loss"} <= set(sweep)
    assert sweep.loc[0, "neutral_loss"] == pytest.approx(sweep.loc[2, "neutral_loss"])   # alpha 0 changes nothing
    chunked = steering_sweep(course_model, course_tokenizer, "positive", caa["positive"][:2], [0.0, 4.0], n_openings=8,
                             n_questions=8, max_new_tokens=10, memory_budget=1)           # one setting per pass
    one_at_a_time = []
    for layer, alpha in [(0, 0.0), (0, 4.0), (1, 0.0), (1, 4.0)]:
        direction = unit(caa["positive"][layer])
        with steer(course_model, layer, direction, alpha):
            ab = matching_probability(course_model, course_tokenizer, contrastive_pairs("positive", 8, "test"))
        one_at_a_time.append((ab, neutral_loss(course_model, course_tokenizer, neutral_texts(), layer, direction, alpha)))
    for table in (sweep, chunked):
        assert table[["ab_probability", "neutral_loss"]].to_numpy().tolist() == [pytest.approx(row, abs=1e-5) for row in one_at_a_time]


def test_a_sweep_over_some_layers_keeps_only_their_settings_and_their_numbers(course_model, course_tokenizer, caa):
    options = dict(n_openings=8, n_questions=8, n_neutral=8, max_new_tokens=10)
    every = steering_sweep(course_model, course_tokenizer, "positive", caa["positive"], [0.0, 4.0], **options)
    some = steering_sweep(course_model, course_tokenizer, "positive", caa["positive"], [0.0, 4.0], layers=[0, 3],
                          **options)
    assert list(some[["layer", "alpha"]].itertuples(index=False, name=None)) == [(0, 0.0), (0, 4.0), (3, 0.0), (3, 4.0)]
    kept = every[every.layer.isin([0, 3])].reset_index(drop=True)
    assert some[["ab_probability", "neutral_loss"]].to_numpy() == pytest.approx(
        kept[["ab_probability", "neutral_loss"]].to_numpy(), abs=1e-5)
    assert len(neutral_texts(8)) == 8


def test_steering_variants_side_by_side_generate_what_each_setting_generates_alone(course_model, course_tokenizer, caa):
    openings = story_openings("positive", 6)
    settings = [(0, unit(caa["positive"][0]), 8.0), (1, unit(caa["positive"][1]), 4.0), (2, unit(caa["positive"][2]), 0.0)]
    greedy = Decoding(temperature=0)
    with steering_variants(course_model, settings, len(openings)):
        together = generate_text(course_model, course_tokenizer, openings * len(settings), 12, decoding=greedy)
    alone = [text for layer, vector, alpha in settings
             for text in steered_texts(course_model, course_tokenizer, openings, layer, vector, alpha, 12, decoding=greedy)]
    assert together == alone and together[:6] != together[12:]                 # steering changed the first setting
    with steering_variants(course_model, settings, len(openings)), pytest.raises(ValueError, match="3 variants x 6 "
                                                                                   "prompts = 18 rows, got a batch of 6"):
        generate_text(course_model, course_tokenizer, openings, 4)


def test_steered_rates_are_the_rates_of_each_setting_alone_in_any_chunking(course_model, course_tokenizer, caa):
    openings = story_openings("positive", 6)
    settings = [(0, unit(caa["positive"][0]), 8.0), (1, unit(caa["positive"][1]), 4.0), (0, unit(caa["positive"][0]), 0.0)]
    greedy = Decoding(temperature=0)
    alone = [behaviour_rate(steered_texts(course_model, course_tokenizer, openings, layer, vector, alpha, 12,
                                          decoding=greedy), "positive") for layer, vector, alpha in settings]
    for budget in (2**30, 1):                                                  # all in one generation; one setting each
        assert steered_rates(course_model, course_tokenizer, openings, "positive", settings, 12, decoding=greedy,
                             memory_budget=budget) == alone
    assert alone[0] != alone[2]                                                # steering moved the rate


# --------------------------------------------------------------------------------------------
# Three backends


def test_hooks_transformer_lens_and_nnsight_steer_identically(course_model, course_tokenizer, caa):
    tl_model = load_model("course", backend="transformer_lens")
    nn_model = load_model("course", backend="nnsight")
    direction, layer, alpha = unit(caa["positive"][0]), 0, 4.0
    for prompt in story_openings("positive", 3, seed=5):
        input_ids = torch.tensor([[course_tokenizer.bos_token_id, *course_tokenizer(prompt)["input_ids"]]])
        with torch.no_grad(), steer(course_model, layer, direction, alpha):
            expected = course_model.generate(input_ids, max_new_tokens=12, do_sample=False,
                                             pad_token_id=course_tokenizer.eos_token_id)[:, input_ids.shape[1]:]
        with torch.no_grad():
            unsteered = course_model.generate(input_ids, max_new_tokens=12, do_sample=False,
                                              pad_token_id=course_tokenizer.eos_token_id)[:, input_ids.shape[1]:]
        assert not torch.equal(expected, unsteered)
        assert torch.equal(generate_steered_transformer_lens(tl_model, input_ids, layer, direction, alpha, 12), expected)
        assert torch.equal(generate_steered_nnsight(nn_model, input_ids, layer, direction, alpha, 12), expected)


def test_steering_on_other_architectures(tiny_checkpoint):
    model, tokenizer = load_model(tiny_checkpoint), load_tokenizer(tiny_checkpoint)
    pairs = contrastive_pairs("positive", 4)
    vectors = caa_vectors(model, tokenizer, pairs)
    assert vectors.shape == (2, architecture.d_model(model))
    torch.testing.assert_close(vectors[1], caa_vector(model, tokenizer, pairs, 1))
    prompts = story_openings("positive", 2)
    assert steered_texts(model, tokenizer, prompts, 1, unit(vectors[1]), 50.0, max_new_tokens=6, seed=0) != \
        steered_texts(model, tokenizer, prompts, 1, unit(vectors[1]), 0.0, max_new_tokens=6, seed=0)


# --------------------------------------------------------------------------------------------
# Other directions and ablation


def test_directions_compared(course_model, course_tokenizer, caa):
    """Layer 2 (book/results/05_steering_caa.json holds the numbers): CAA points against the mean difference of
    labelled stories (cosine -0.37) and reads them the wrong way round (held-out accuracy 0.15); the logistic probe
    reads best (1.00) but steers less than the mean difference at alpha 4 (0.75 against 0.93), and ActAdd less
    still (0.52)."""
    with_behaviour, without = labelled_stories("positive", 256)
    held_with, held_without = labelled_stories("positive", 64, seed=1)
    acts = [mean_token_activations(course_model, course_tokenizer, texts, MIDDLE)
            for texts in (with_behaviour, without, held_with, held_without)]
    directions = {"CAA": caa["positive"][MIDDLE], "mean difference": mean_difference_direction(*acts[:2]),
                  "PCA": pca_direction(*acts[:2]), "probe": probe_direction(*acts[:2]),
                  "ActAdd": actadd_vector(course_model, course_tokenizer, "The day was wonderful", "The day was terrible",
                                          MIDDLE)}
    assert cosine_table(directions).loc["CAA", "mean difference"] < -0.2
    accuracy = {name: probe_accuracy(direction, *acts[2:]) for name, direction in directions.items()}
    assert accuracy["CAA"] < 0.3 and accuracy["probe"] >= 0.9 and max(accuracy, key=accuracy.get) == "probe", accuracy
    rates = dict(zip(directions, steered_rates(course_model, course_tokenizer, story_openings("positive", OPENINGS),
                                               "positive", [(MIDDLE, unit(d), 4.0) for d in directions.values()])))
    assert rates["mean difference"] >= 0.8 and rates["probe"] < rates["mean difference"] - 0.1, rates
    assert rates["ActAdd"] < rates["mean difference"] - 0.2, rates


def test_pca_sign_and_shape():
    generator = torch.Generator().manual_seed(0)
    shift = torch.tensor([3.0, 0.0, 0.0, 0.0])
    without = torch.randn(50, 4, generator=generator)
    with_behaviour = without + shift + 0.1 * torch.randn(50, 4, generator=generator) * torch.tensor([5.0, 1, 1, 1])
    direction = pca_direction(with_behaviour, without)
    assert direction[0] > 0.95 and direction.norm() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="pass as many texts"):
        pca_direction(with_behaviour, without[:10])


def test_directional_ablation_removes_positive_continuations(course_model, course_tokenizer, caa):
    """Openings ending "It was a lovely day.": positive 1.00. Ablated: the mean difference of layer 2 -> 0.50;
    CAA of layer 2 -> 0.94 and a random direction -> 1.00, next to nothing."""
    prompts = [opening + " It was a lovely day." for opening in story_openings("positive", 48)]
    no_steering = unit(caa["positive"][MIDDLE])

    def positive_rate() -> float:
        return rate(course_model, course_tokenizer, "positive", MIDDLE, no_steering, 0.0, prompts)

    assert positive_rate() > 0.9
    with_behaviour, without = labelled_stories("positive", 64)
    mean_difference = mean_difference_direction(
        mean_token_activations(course_model, course_tokenizer, with_behaviour, MIDDLE),
        mean_token_activations(course_model, course_tokenizer, without, MIDDLE))
    with ablate_direction(course_model, mean_difference):
        assert positive_rate() < 0.7
    for direction in (caa["positive"][MIDDLE], torch.randn(128, generator=torch.Generator().manual_seed(1))):
        with ablate_direction(course_model, direction):
            assert positive_rate() > 0.85


def test_project_out_leaves_nothing_along_the_direction():
    residual, direction = torch.randn(3, 4, 16), torch.randn(16) * 7
    projected = project_out(residual, direction)
    assert (projected @ direction).abs().max() < 1e-4
    torch.testing.assert_close(project_out(projected, direction), projected)


# --------------------------------------------------------------------------------------------
# Refusal and function vectors


def test_refusal_direction_of_the_instruction_adapter(course_tokenizer):
    """First response token " I" (the refusal's): harmful 1.00, harmless 0.00. With the layer-3 direction:
    added to harmless prompts 0.73; projected out of harmful ones 0.35. At layers 0 to 2 it does nothing."""
    from utils.finetune import load_adapted_model
    from utils.world.instructions import chat_dataset, chat_eval_set

    model = load_adapted_model("instruct")
    harmful, harmless = chat_eval_set(40, seed=3, kinds=["refusal"]), chat_eval_set(40, seed=3, kinds=["kind_story"])
    assert first_token_refusal_rate(model, course_tokenizer, harmful) == 1.0
    assert first_token_refusal_rate(model, course_tokenizer, harmless) == 0.0
    direction = refusal_direction(model, course_tokenizer, chat_dataset(64, seed=1, kinds=["refusal"]),
                                  chat_dataset(64, seed=1, kinds=["kind_story"]), 3)
    with steer(model, 3, direction, 1.0):
        assert first_token_refusal_rate(model, course_tokenizer, harmless) >= 0.5
    with ablate_direction(model, direction):
        assert first_token_refusal_rate(model, course_tokenizer, harmful) <= 0.5


def test_function_vectors_raise_zero_shot_accuracy(course_model, course_tokenizer):
    """Layer 3, zero-shot: capital 0.50 -> 1.00, language 0.93 -> 1.00, antonym 0.95 -> 0.95; uppercase
    0.00 -> 0.03, successor 0.68 -> 0.68 (their answers depend on the query's own tokens)."""
    gains = {}
    for task in ("capital", "uppercase", "antonym", "language", "successor"):
        queries = zero_shot_queries(task)
        before = zero_shot_accuracy(course_model, course_tokenizer, queries)
        with steer(course_model, 3, task_vector(course_model, course_tokenizer, task, 3), 1.0):
            gains[task] = zero_shot_accuracy(course_model, course_tokenizer, queries) - before
    assert gains["capital"] >= 0.3 and all(gain > -0.05 for gain in gains.values()), gains
    assert gains["uppercase"] < 0.1 and abs(gains["successor"]) < 0.01, gains
    with pytest.raises(ValueError, match="unknown few-shot task 'french'"):
        task_vector(course_model, course_tokenizer, "french", 3)


# --------------------------------------------------------------------------------------------
# Checkers


def test_caa_vector_checker(course_model, course_tokenizer):
    assert_accepts(check_caa_vector(caa_vector, course_model, course_tokenizer))

    def flipped(model, tokenizer, pairs, layer):
        return -caa_vector(model, tokenizer, pairs, layer)

    def normalised(model, tokenizer, pairs, layer):
        return unit(caa_vector(model, tokenizer, pairs, layer))

    def question_only(model, tokenizer, pairs, layer):   # the position before the letter: the two texts agree there
        shorter = [ContrastivePair(p.question[:-1], p.question[-1], p.question[-1] + " ", p.behaviour) for p in pairs]
        return caa_vector(model, tokenizer, shorter, layer)

    for wrong in (flipped, normalised, question_only):
        assert_rejects(check_caa_vector(wrong, course_model, course_tokenizer), "input")


def test_add_steering_checker():
    """The registry's wrong answers (tests/wrong_answers.py) fail on the input that shows their mistake."""
    assert_accepts(check_add_steering(add_steering))
    assert_rejects(check_add_steering(steering_every_position), "a prompt pass")
    assert_rejects(check_add_steering(steering_in_place),
                   "changed its argument 'residual' in place: the hook's input is the model's own")
    assert_rejects(check_add_steering(steering_the_first_position), "a prompt pass")


def test_project_out_checker():
    assert_accepts(check_project_out(project_out))
    assert_rejects(check_project_out(lambda x, d: x - (x @ d)[..., None] * d), "norm 3.5")       # not normalised
    assert_rejects(check_project_out(lambda x, d: (x @ (d / d.norm()))[..., None] * d / d.norm()), "norm 1.0")  # kept
    assert_rejects(check_project_out(lambda x, d: x + (x @ (d / d.norm()))[..., None] * d / d.norm()), "norm 1.0")
