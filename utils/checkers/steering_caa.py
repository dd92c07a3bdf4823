"""Checkers for the exercises of chapter 5 (steering with CAA), kept apart from the library code they check.

Each ``check_<exercise>(learner_fn, ...)`` runs the learner's function and the library's reference
on inputs chosen so that every plausible mistake shows (see ``utils.checks``), and prints one line.
``tests/test_mutation.py`` and ``tests/test_wrong_answers.py`` prove that each rejects wrong answers.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils import architecture
from utils.checks import Case, CheckResult, HasCase, Varies, check_function
from utils.directions import (
    ablate_direction, actadd_vector, function_vector, labelled_stories, mean_difference_direction, pca_direction,
    probe_accuracy, project_out, refusal_direction,
)
from utils.models import tiny_random_model
from utils.steering import (
    add_per_variant, add_steering, behaviour_rate, caa_vector, contrastive_pairs, neutral_loss, neutral_texts,
    sweep_settings, unit,
)
from utils.world.families import FEW_SHOT_TASKS, few_shot
from utils.world.instructions import chat_dataset


# ---------------------------------------------------------------------------------------------
# Exercises on utils.steering


def check_caa_vector(learner_fn: Callable[..., Tensor], model: PreTrainedModel,
                     tokenizer: PreTrainedTokenizerBase) -> CheckResult:
    """Exercise 5.1 on the course model (two layers, two behaviours)."""
    positive, wedding = contrastive_pairs("positive", 8, seed=5), contrastive_pairs("wedding", 6, seed=6)
    last = architecture.n_layers(model) - 1
    cases = [Case("8 'positive' pairs, layer 0", model, tokenizer, positive, 0),
             Case(f"6 'wedding' pairs, layer {last}", model, tokenizer, wedding, last)]
    return check_function(
        learner_fn, caa_vector, cases, exercise="5.1 (caa_vector)", atol=1e-4,
        properties=[Varies("layer", lambda layer: layer + 1, "reads another layer")],
        hint="last_token_activations(model, tokenizer, texts, [layer])[0] gives [n, d_model] at each text's last "
             "token (the answer letter); average the matching texts (pair.matching_text) and the non-matching "
             "ones over the pairs, and return matching minus non-matching, not normalised")


def check_add_steering(learner_fn: Callable[[Tensor, Tensor, float], Tensor]) -> CheckResult:
    """Exercise 5.2 on a prompt pass (several positions) and on generation steps (one position)."""
    generator = torch.Generator().manual_seed(0)
    vector = torch.randn(16, generator=generator)

    def case(name: str, batch: int, pos: int, alpha: float) -> Case:
        return Case(name, torch.randn(batch, pos, 16, generator=generator), vector, alpha)

    cases = [case("a prompt pass: batch 2, 7 positions, alpha 4", 2, 7, 4.0),
             case("a generation step: batch 2, 1 position, alpha 4", 2, 1, 4.0),
             case("a prompt pass with alpha -2.5", 1, 3, -2.5)]
    return check_function(
        learner_fn, add_steering, cases, exercise="5.2 (add_steering)", atol=1e-5,
        properties=[Varies("alpha", lambda alpha: 2 * alpha, "ignores alpha"),
                    HasCase("a generation step (one position)", lambda case: case.args[0].shape[1] == 1)],
        in_place_advice={"residual": "the hook's input is the model's own tensor; clone it first and return the copy"},
        hint="a prompt pass has pos > 1: add alpha * vector at the last position only (residual[:, -1]); a "
             "generation step has pos == 1: add it there; work on a copy of the residual, never in place")


# ---------------------------------------------------------------------------------------------
# Exercises on utils.directions


def check_project_out(learner_fn: Callable[[Tensor, Tensor], Tensor]) -> CheckResult:
    """Exercise 5.9 on a batch of residuals and directions of norm 1, 3.5 and 0.2."""
    generator = torch.Generator().manual_seed(0)
    residual = torch.randn(2, 5, 8, generator=generator) * 4
    cases = [Case(f"[2, 5, 8] residuals, a direction of norm {norm}", residual, direction * norm)
             for norm in (1.0, 3.5, 0.2)
             for direction in [F.normalize(torch.randn(8, generator=generator), dim=0)]]
    return check_function(
        learner_fn, project_out, cases, exercise="5.9 (project_out)", atol=1e-5,
        hint="make the direction a unit vector r first (it may have any norm); the component of x along r is "
             "(x · r) r, with the dot products given a trailing dimension to broadcast; subtract it from x (do not "
             "keep only it)")


def _mixed_stories(name: str, with_behaviour: int, without: int, seed: int) -> list[str]:
    """Stories with and without behaviour ``name`` (another value of its trait), shuffled."""
    shown, other = labelled_stories(name, max(with_behaviour, without), seed=seed)
    texts = shown[:with_behaviour] + other[:without]
    random.Random(seed).shuffle(texts)
    return texts


def check_behaviour_rate(learner_fn: Callable[[list[str], str], float]) -> CheckResult:
    """Exercise 5.4 on labelled stories of the three behaviours (a sentiment, an emotion and a topic), mixed."""
    cases = [Case("7 positive stories and 5 negative ones", _mixed_stories("positive", 7, 5, seed=1), "positive"),
             Case("3 angry stories and 9 with other emotions", _mixed_stories("anger", 3, 9, seed=2), "anger"),
             Case("4 wedding stories and 4 on other topics", _mixed_stories("wedding", 4, 4, seed=3), "wedding")]
    return check_function(
        learner_fn, behaviour_rate, cases, exercise="5.4 (behaviour_rate)",
        hint="look the behaviour up in BEHAVIOURS: it names the trait the labeller reads (sentiment, emotion or "
             "topic) and the value it must take; label every text with label_text, compare that trait's value, and "
             "return the share of the texts that match (a float between 0 and 1, not a count)")


def _activation_pairs(n: int, d: int, seed: int) -> tuple[Tensor, Tensor]:
    """Paired activations whose differences share a mean and vary most along another axis."""
    generator = torch.Generator().manual_seed(seed)
    without = torch.randn(n, d, generator=generator) + 2
    spread = torch.randn(n, 1, generator=generator) * 3 * F.normalize(torch.randn(d, generator=generator), dim=0)
    shift = 0.5 * F.normalize(torch.randn(d, generator=generator), dim=0)
    return without + shift + spread + 0.1 * torch.randn(n, d, generator=generator), without


def check_pca_direction(learner_fn: Callable[[Tensor, Tensor], Tensor]) -> CheckResult:
    """Exercise 5.6 on paired activations whose differences have a mean and a larger spread elsewhere."""
    # Seeds whose decomposition returns the component both ways round, its dot product with the mean below 1 in size.
    cases = [Case(f"{n} pairs of width {d}", *_activation_pairs(n, d, seed)) for seed, n, d in
             [(2, 40, 8), (0, 12, 16), (0, 200, 4), (1, 40, 8), (0, 30, 6)]]
    cases.append(Case("the 40 pairs of width 8, each the other way round", *reversed(cases[0].args)))
    return check_function(
        learner_fn, pca_direction, cases, exercise="5.6 (pca_direction)", atol=1e-4, rtol=1e-3,
        hint="take the paired differences (with minus without, row by row), centre them (subtract their mean row), "
             "and take the first right singular vector of the centred differences (the first row of Vh), of unit "
             "norm; then turn it, if needed, so that its dot product with the differences' mean is not negative")


def check_actadd_vector(learner_fn: Callable[..., Tensor], model: PreTrainedModel,
                        tokenizer: PreTrainedTokenizerBase) -> CheckResult:
    """Exercise 5.7 on the course model: prompt pairs of different lengths, at the first and the last layer."""
    last = architecture.n_layers(model) - 1
    cases = [Case("'The day was wonderful' - 'The day was terrible', layer 0", model, tokenizer,
                  "The day was wonderful", "The day was terrible", 0),
             Case(f"'She was angry' - 'She was very calm today', layer {last}", model, tokenizer,
                  "She was angry", "She was very calm today", last)]
    with torch.no_grad():
        return check_function(
            learner_fn, actadd_vector, cases, exercise="5.7 (actadd_vector)", atol=1e-4,
            properties=[Varies("layer", lambda layer: layer - 1 if layer else layer + 1, "reads another layer")],
            hint="run both prompts through last_token_activations(model, tokenizer, [positive, negative], [layer]): "
                 "[1, 2, d_model], the residual after block layer at each prompt's last token; return the first "
                 "row minus the second (the prompts may have different lengths: never average over positions)")


def check_refusal_direction(learner_fn: Callable[..., Tensor], model: PreTrainedModel,
                            tokenizer: PreTrainedTokenizerBase) -> CheckResult:
    """Exercise 5.11 on the course model, with chat requests of the two kinds at two layers."""
    harmful, harmless = chat_dataset(6, seed=11, kinds=["refusal"]), chat_dataset(10, seed=12, kinds=["kind_story"])
    last = architecture.n_layers(model) - 1
    cases = [Case("6 harmful and 10 harmless requests, layer 0", model, tokenizer, harmful, harmless, 0),
             Case(f"the first 3 of each, layer {last}", model, tokenizer, harmful[:3], harmless[:3], last)]
    with torch.no_grad():
        return check_function(
            learner_fn, refusal_direction, cases, exercise="5.11 (refusal_direction)", atol=1e-4,
            hint="read the prompts only (example.prompt, which ends at 'Assistant:'), not prompt + response; take the "
                 "residual after block layer at their last token with last_token_activations, average each kind "
                 "over its requests, and return harmful minus harmless (the kinds may have different sizes)")


def check_sweep_settings(learner_fn: Callable) -> CheckResult:
    """Exercise 5.3 on vectors of several norms and strengths in an unsorted order."""
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(3, 6, generator=generator) * torch.tensor([[0.1], [2.0], [30.0]])
    cases = [Case("3 layers, strengths [0, 4, 8]", vectors, [0.0, 4.0, 8.0]),
             Case("2 layers, strengths [8, -2] (kept in that order)", vectors[:2], [8.0, -2.0]),
             Case("1 layer, one integer strength", vectors[:1], [3])]
    return check_function(
        learner_fn, sweep_settings, cases, exercise="5.3 (sweep_settings)",
        hint="one (layer, vector, alpha) per pair, layer by layer (the outer loop over layers, the inner one over "
             "the strengths in the order given); the vector is that layer's row made a unit vector (unit or "
             "F.normalize), so that alpha alone sets the strength; alpha as a float")


def check_mean_difference_direction(learner_fn: Callable[[Tensor, Tensor], Tensor]) -> CheckResult:
    """Exercise 5.5 on activation sets of different sizes and means."""
    generator = torch.Generator().manual_seed(2)
    cases = [Case("30 with, 20 without, width 8", torch.randn(30, 8, generator=generator) + 1,
                  torch.randn(20, 8, generator=generator) - 1),
             Case("5 with, 11 without, width 3", torch.randn(5, 3, generator=generator) * 4,
                  torch.randn(11, 3, generator=generator))]
    return check_function(
        learner_fn, mean_difference_direction, cases, exercise="5.5 (mean_difference_direction)",
        hint="average each set over its own texts (dimension 0: the sets may have different sizes), and return the "
             "mean with the behaviour minus the mean without, not normalised")


def _output_inside(ablation: Callable) -> Callable:
    """The logits inside ``with ablation(model, direction):``, and whether the model runs as before afterwards."""
    def run(model: PreTrainedModel, direction: Tensor, input_ids: Tensor) -> tuple[Tensor, Tensor]:
        with ablation(model, direction):
            inside = model(input_ids).logits
        return inside, model(input_ids).logits
    return run


def check_ablate_direction(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 5.10 on ``model`` and a tiny random Llama: the logits inside the block, and after it."""
    generator = torch.Generator().manual_seed(3)
    d_model, other = architecture.d_model(model), tiny_random_model("llama")
    ids = torch.randint(model.config.vocab_size, (2, 6), generator=generator)
    other_ids = torch.randint(other.config.vocab_size, (2, 5), generator=generator)
    cases = [Case("your model, a random direction of norm 5", model, 5 * F.normalize(torch.randn(d_model, generator=generator),
                                                                                  dim=0), ids),
             Case("tiny random Llama, a random direction", other, torch.randn(architecture.d_model(other), generator=generator),
                  other_ids)]
    with torch.no_grad():
        return check_function(
            _output_inside(learner_fn), _output_inside(ablate_direction), cases, exercise="5.10 (ablate_direction)",
            atol=1e-4, rtol=1e-4,
            hint="register one hook per site: resid_pre.0 (before the first block) and resid_post.N after every block, "
                 "each replacing the residual with project_out(residual, direction); hooks(model, {site: edit, ...}) "
                 "registers several at once and removes them when its with block ends; yield inside it")


def check_function_vector(learner_fn: Callable[..., Tensor], model: PreTrainedModel,
                          tokenizer: PreTrainedTokenizerBase) -> CheckResult:
    """Exercise 5.12 on the course model: few-shot and zero-shot prompt sets of different sizes, at two layers."""
    rng = random.Random(4)
    last = architecture.n_layers(model) - 1
    antonyms = [few_shot(rng, task="antonym", n_shots=3).prompt for _ in range(6)]
    capitals = [few_shot(rng, task="capital", n_shots=5).prompt for _ in range(3)]
    zero = [few_shot(rng, task=task, n_shots=0).prompt for task in sorted(FEW_SHOT_TASKS) for _ in range(2)]
    cases = [Case("6 antonym prompts of 3 shots against 14 zero-shot ones, layer 0", model, tokenizer, antonyms, zero, 0),
             Case(f"3 capital prompts of 5 shots against 5 zero-shot ones, layer {last}", model, tokenizer, capitals,
                  zero[:5], last)]
    with torch.no_grad():
        return check_function(
            learner_fn, function_vector, cases, exercise="5.12 (function_vector)", atol=1e-4,
            hint="the activation after block layer at each prompt's last token (last_token_activations, one call per "
                 "set), averaged over each set's own prompts (the sets have different sizes): few-shot mean minus "
                 "zero-shot mean")


def check_probe_accuracy(learner_fn: Callable[[Tensor, Tensor, Tensor], float]) -> CheckResult:
    """Exercise 5.8 on activation sets of different sizes, with directions that separate them well and badly."""
    generator = torch.Generator().manual_seed(5)
    with_behaviour, without = torch.randn(30, 6, generator=generator) + 0.8, torch.randn(18, 6, generator=generator)
    cases = [Case("the mean difference of 30 and 18 activations", with_behaviour.mean(0) - without.mean(0),
                  with_behaviour, without),
             Case("a random direction", torch.randn(6, generator=generator), with_behaviour, without),
             Case("the mean difference turned round (the classes on the wrong sides)",
                  without.mean(0) - with_behaviour.mean(0), with_behaviour, without),
             Case("a text of each class exactly on the threshold (projections 3, 1 and 1, -1: threshold 1)",
                  torch.tensor([1.0, 0.0]), torch.tensor([[3.0, 5.0], [1.0, 2.0]]), torch.tensor([[1.0, 7.0], [-1.0, 0.0]]))]
    return check_function(
        learner_fn, probe_accuracy, cases, exercise="5.8 (probe_accuracy)",
        hint="project every activation on the direction (a dot product, one number per text); the threshold is "
             "halfway between the two classes' mean projections; a text with the behaviour is right above it, one "
             "without is right at or below it; return the share right over both sets together")


def check_add_per_variant(learner_fn: Callable[..., Tensor]) -> CheckResult:
    """Exercise 5.13 on batches of several variants: a prompt pass, a generation step, and every position."""
    generator = torch.Generator().manual_seed(6)
    added = torch.randn(3, 4, generator=generator)
    cases = [Case("3 variants of 2 prompts, 5 positions", torch.randn(6, 5, 4, generator=generator), added),
             Case("3 variants of 1 prompt, a generation step", torch.randn(3, 1, 4, generator=generator), added),
             Case("2 variants of 3 prompts, every position", torch.randn(6, 4, 4, generator=generator), added[:2],
                  everywhere=True)]
    return check_function(
        learner_fn, add_per_variant, cases, exercise="5.13 (add_per_variant)",
        properties=[Varies("everywhere", lambda everywhere: not everywhere, "ignores everywhere")],
        in_place_advice={"residual": "the hook's input is the model's own tensor; clone it first and return the copy"},
        hint="the rows come variant by variant: rows 0 to n - 1 are variant 0, the next n variant 1 (n = batch // "
             "variants), so repeat each added vector n times in that order (einops.repeat 'variant d -> (variant n) "
             "d', not a tile of the whole list); add at position -1 of a copy, or to every position with everywhere")


def check_neutral_loss(learner_fn: Callable[..., float], model: PreTrainedModel,
                       tokenizer: PreTrainedTokenizerBase) -> CheckResult:
    """Exercise 5.14 on the course model: neutral texts, two layers, a vector of norm 1 and a stronger push."""
    texts = neutral_texts(8)
    generator = torch.Generator().manual_seed(7)
    vector = unit(torch.randn(architecture.d_model(model), generator=generator))
    last = architecture.n_layers(model) - 1
    cases = [Case("8 neutral texts, layer 0, alpha 4", model, tokenizer, texts, 0, vector, 4.0),
             Case(f"the first 3, layer {last}, alpha -8", model, tokenizer, texts[:3], last, vector, -8.0)]
    with torch.no_grad():
        return check_function(
            learner_fn, neutral_loss, cases, exercise="5.14 (neutral_loss)", atol=1e-4,
            properties=[Varies("alpha", lambda alpha: -alpha, "ignores alpha")],   # halving it can change nothing on a model whose stream is short
            hint="add alpha * vector to the residual after block layer at every position (a hook on resid_post.layer "
                 "with utils.hooks.hooks, not add_steering, which adds at the last position only), and measure "
                 "mean_token_loss(model, tokenizer, texts) inside the with block")
