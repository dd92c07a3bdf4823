"""Checkers for the exercises of chapter 4 (the logit lens), kept apart from the library code they check.

Each ``check_<exercise>(learner_fn, ...)`` runs the learner's function and the library's reference
on inputs chosen so that every plausible mistake shows (see ``utils.checks``), and prints one line.
``tests/test_mutation.py`` and ``tests/test_wrong_answers.py`` prove that each rejects wrong answers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils.checks import Case, CheckResult, Varies, check_function, float_losses
from utils import architecture
from utils.logit_lens import (
    at_positions, attention_output_weight, checker_models, corpus_batch, formation_layers, head_contributions,
    kl_to_final, logit_difference_contributions, logit_lens_at_position, mlp_output_weight, norm_scale,
    ov_copying_ranks, ov_eigenvalue_score, residual_components, residual_stack, singular_directions, top1_agreement,
)
from utils.models import tiny_random_model
from utils.tuned_lens import TunedLens, TunedLensStep, least_squares_translator, tuned_lens_step


# ---------------------------------------------------------------------------------------------
# Exercises on utils.logit_lens


def _random_ids(model: PreTrainedModel, batch: int, pos: int, seed: int) -> Int[Tensor, "batch pos"]:
    return torch.randint(model.config.vocab_size, (batch, pos), generator=torch.Generator().manual_seed(seed))


def check_residual_stack(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 4.1 on ``model`` and on tiny random Pythia, Llama and GPT-2 (whose last hidden state is normalised)."""
    cases = [Case("your model, 2 prompts of 7 tokens", model, _random_ids(model, 2, 7, 0))]
    for seed, (name, other) in enumerate(checker_models().items()):
        cases.append(Case(name, other, _random_ids(other, 3, 5, 30 + seed)))
    with torch.no_grad():
        return check_function(
            learner_fn, residual_stack, cases, exercise="4.1 (residual_stack)", atol=1e-5, rtol=1e-4,
            hint="the stack has n_layers + 1 entries, layer first: the embeddings (resid_pre.0, what block 0 reads) and "
                 "then the output of every block (resid_post.0 to resid_post.{n_layers - 1}); the last one is what "
                 "the final norm reads, not the final norm's output, which is what output_hidden_states puts last")


def _padded_stack(layers: int, batch: int, pos: int, d: int, seed: int) -> Tensor:
    return torch.randn((layers, batch, pos, d), generator=torch.Generator().manual_seed(seed))


def check_at_positions(learner_fn: Callable) -> CheckResult:
    """Exercise 4.3 on stacks with and without a layer dimension, one position per row and one for every row."""
    cases = [Case("a stack [3, 4, 6, 5], positions [0, 5, 2, 3]", _padded_stack(3, 4, 6, 5, 0), torch.tensor([0, 5, 2, 3])),
             Case("the same stack, position -1 for every row", _padded_stack(3, 4, 6, 5, 0), -1),
             Case("the same stack, position 2 for every row", _padded_stack(3, 4, 6, 5, 0), 2),
             Case("no layer dimension [4, 6, 5], positions [1, 1, 4, 0]", _padded_stack(1, 4, 6, 5, 1)[0],
                  torch.tensor([1, 1, 4, 0])),
             Case("a batch of 1 [2, 1, 3, 4], position [2]", _padded_stack(2, 1, 3, 4, 2), torch.tensor([2]))]
    return check_function(
        learner_fn, at_positions, cases, exercise="4.3 (at_positions)",
        hint="pair each row with its own position: index the batch dimension with arange(batch) and the position "
             "dimension with the positions, together (advanced indexing takes them pairwise, not as a grid); an int "
             "position is the same for every row; keep the leading layer dimension as it is with ...")


def check_logit_lens_at_position(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 4.2 on ``model`` (last position and an earlier one) and on tiny random Pythia, Llama and GPT-2."""
    cases = [Case("your model, position -1 (the last)", model, residual_stack(model, _random_ids(model, 2, 7, 0)), -1),
             Case("your model, position 2 (not the last)", model, residual_stack(model, _random_ids(model, 1, 6, 1)), 2)]
    for seed, (name, other) in enumerate(checker_models().items()):
        position = (1, -1, 0)[seed]
        cases.append(Case(f"{name}, position {position}", other,
                          residual_stack(other, _random_ids(other, 2, 5, 10 + seed)), position))
    with torch.no_grad():
        return check_function(
            learner_fn, logit_lens_at_position, cases, exercise="4.2 (logit_lens_at_position)", atol=1e-4, rtol=1e-4,
            properties=[Varies("position", lambda position: position - 1, "reads another position")],
            hint="take residual at `position` on its position dimension (that position itself, not position - 1 or "
                 "the last one), apply the final norm as the model does (architecture.final_norm(model): its weight "
                 "AND its bias, and the mean subtraction for a LayerNorm), then the unembedding as a module "
                 "(architecture.unembedding(model), which adds its bias if it has one)")


def check_head_contributions(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 4.4 on ``model``'s attention output projections and on random ones of shapes where every layout
    mistake shows (more heads than a head has dimensions, and the other way round)."""
    generator = torch.Generator().manual_seed(0)
    n_heads, last = model.config.num_attention_heads, model.config.num_hidden_layers - 1

    def projection(layer: int) -> Tensor:                                   # [(head d_head), d_model], as the model holds it
        return einops.rearrange(attention_output_weight(model, layer), "head d_head d_model -> (head d_head) d_model").detach()

    d_head = projection(0).shape[0] // n_heads
    cases = [Case("your model's layer 0, 3 prompts", torch.randn(3, n_heads, d_head, generator=generator), projection(0)),
             Case(f"your model's layer {last}, 1 prompt", torch.randn(1, n_heads, d_head, generator=generator),
                  projection(last)),
             Case("2 heads of 5 dimensions into 7", torch.randn(4, 2, 5, generator=generator),
                  torch.randn(10, 7, generator=generator)),
             Case("6 heads of 3 dimensions into 4", torch.randn(2, 6, 3, generator=generator),
                  torch.randn(18, 4, generator=generator))]
    return check_function(
        learner_fn, head_contributions, cases, exercise="4.4 (head_contributions)", atol=1e-5, rtol=1e-4,
        hint="W_O's rows hold the heads one after the other: rows 0 to d_head - 1 are head 0's slice, so split them "
             "as (head d_head), not (d_head head); then multiply each head's z by its own slice, keep the heads apart "
             "(do not sum over them) and put the head dimension first: [head, batch, d_model]")


def _flickering_correct(layers: int, batch: int, seed: int) -> Bool[Tensor, "layers batch"]:
    """Random correct/incorrect tables whose answers come and go before settling (or never settle)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((layers, batch), generator=generator) < torch.linspace(0.2, 0.8, layers)[:, None]


def check_formation_layers(learner_fn: Callable) -> CheckResult:
    """Exercise 4.7 on a hand-made table (an answer that flickers, one that is lost at the end) and random ones."""
    example = torch.tensor([[0, 0, 0, 1, 1],      # [layer_plus_one = 5, batch = 5]
                            [1, 0, 1, 1, 1],
                            [0, 1, 0, 0, 1],
                            [1, 1, 0, 1, 1],
                            [1, 1, 1, 0, 1]]).bool()
    cases = [Case("5 layers, 5 prompts (formed at 3, 2, 4, never, 0)", example),
             Case("a 4-block model, 32 random prompts", _flickering_correct(5, 32, seed=0)),
             Case("a 12-block model, 16 random prompts", _flickering_correct(13, 16, seed=1))]
    return check_function(
        learner_fn, formation_layers, cases, exercise="4.7 (formation_layers)",
        hint="an answer forms at the first layer from which it stays correct until the last one, not at the first "
             "layer where it is correct (it can be lost again); a prompt wrong at the last layer gets -1. Flip the "
             "layers, take a cumulative product of correct, and count the layers it stays correct")


def _spread_logits(layers: int, n: int, vocab: int, seed: int) -> Float[Tensor, "layers n vocab"]:
    """Random lens logits, sharper at later layers, with an offset per row (logits are not log-probabilities)."""
    generator = torch.Generator().manual_seed(seed)
    sharpness = torch.linspace(0.5, 4.0, layers)[:, None, None]
    return sharpness * torch.randn((layers, n, vocab), generator=generator) + 3 * torch.randn((layers, n, 1),
                                                                                             generator=generator)


def check_kl_to_final(learner_fn: Callable) -> CheckResult:
    """Exercise 4.8 on random lens logits of a few shapes (unnormalised, with an offset per row)."""
    cases = [Case("5 layers, 7 predictions, vocabulary 50", _spread_logits(5, 7, 50, seed=0)),
             Case("13 layers, 3 predictions, vocabulary 11", _spread_logits(13, 3, 11, seed=1)),
             Case("2 layers, 1 prediction, vocabulary 4", _spread_logits(2, 1, 4, seed=2))]
    return check_function(
        learner_fn, kl_to_final, cases, exercise="4.8 (kl_to_final)", atol=1e-4, rtol=1e-4,
        hint="turn logits into log-probabilities with log_softmax over the vocabulary first; the final layer's "
             "distribution p is the reference: KL(p || q) = sum_v p_v (log p_v - log q_v), summed over the "
             "vocabulary, then averaged over the n predictions (one value per layer)")


def _norms() -> dict[str, nn.Module]:
    """Trained-looking LayerNorms and Llama RMSNorms (eps named variance_epsilon), each also with a large eps."""
    generator = torch.Generator().manual_seed(0)
    layer_norm, wide_eps = nn.LayerNorm(8), nn.LayerNorm(8, eps=0.5)
    rms, wide_rms = tiny_random_model("llama").model.norm, copy.deepcopy(tiny_random_model("llama").model.norm)
    wide_rms.variance_epsilon = 0.5
    with torch.no_grad():
        for norm in (layer_norm, wide_eps, rms, wide_rms):
            norm.weight.copy_(1 + 0.3 * torch.randn(norm.weight.shape, generator=generator))
    return {"a LayerNorm of width 8": layer_norm, "a LayerNorm with eps = 0.5": wide_eps,
            f"a Llama RMSNorm (eps {rms.variance_epsilon:g})": rms, "a Llama RMSNorm with eps = 0.5": wide_rms}


def check_norm_scale(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 4.5 on ``model``'s final norm and on LayerNorms and an RMSNorm of their own, on streams with a mean."""
    generator = torch.Generator().manual_seed(1)
    final = architecture.final_norm(model)
    width = final.weight.shape[0]
    cases = [Case("your model's final norm, a [2, 3, d_model] stream", final,
                  3 * torch.randn(2, 3, width, generator=generator) + 1)]
    for name, norm in _norms().items():
        d = norm.weight.shape[0]
        cases.append(Case(f"{name}, a [2, 3, {d}] stream with a mean of 2", norm,
                          torch.randn(2, 3, d, generator=generator) + 2))
    with torch.no_grad():
        return check_function(
            learner_fn, norm_scale, cases, exercise="4.5 (norm_scale)", atol=1e-5, rtol=1e-4,
            hint="a LayerNorm divides the centred vector by sqrt(variance + eps), the variance over d_model with "
                 "unbiased=False (the mean of the squared deviations, not divided by d - 1); an RMSNorm divides by "
                 "sqrt(mean of x squared + eps), with no centring; read eps from the module (LayerNorm: eps, Llama: "
                 "variance_epsilon) and keep a trailing dimension of 1")


def check_logit_difference_contributions(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 4.6 on ``model`` and on tiny random Pythia (LayerNorm) and Llama (RMSNorm) models."""
    def case(name: str, checked_model: PreTrainedModel, seed: int) -> Case:
        input_ids = _random_ids(checked_model, 3, 6, seed)
        components = residual_components(checked_model, input_ids)
        answer, contrast = torch.randint(checked_model.config.vocab_size, (2, 3),
                                         generator=torch.Generator().manual_seed(seed + 1))
        return Case(name, checked_model, components.vectors, components.scale, answer, contrast)

    others = list(checker_models().items())[:2]
    cases = [case("your model, 3 prompts", model, 0), *(case(name, other, 10 + i) for i, (name, other) in enumerate(others))]
    with torch.no_grad():
        return check_function(
            learner_fn, logit_difference_contributions, cases, exercise="4.6 (logit_difference_contributions)",
            atol=1e-4, rtol=1e-3,
            hint="for a LayerNorm (isinstance(norm, torch.nn.LayerNorm); not for Llama's RMSNorm) subtract each "
                 "component's own mean over d_model; divide by `scale` (the whole stream's, given: do not recompute "
                 "it per component); multiply by the norm's weight; then take the dot product with "
                 "W_U[answer] - W_U[contrast] (the difference, not W_U[answer] alone)")


def check_top1_agreement(learner_fn: Callable) -> CheckResult:
    """Exercise 4.10 on random lens logits whose early layers often disagree with the last."""
    cases = [Case("5 layers, 40 predictions, vocabulary 6", _spread_logits(5, 40, 6, seed=3)),
             Case("13 layers, 9 predictions, vocabulary 30", _spread_logits(13, 9, 30, seed=4)),
             Case("2 layers, 1 prediction, vocabulary 3", _spread_logits(2, 1, 3, seed=5))]
    return check_function(
        learner_fn, top1_agreement, cases, exercise="4.10 (top1_agreement)",
        hint="take every layer's top token at every prediction (argmax over the vocabulary, the last dimension), "
             "compare each layer's with the last layer's, and average over the predictions: one share per layer, "
             "1 at the last")


def _two_lens_steps(step: TunedLensStep) -> Callable:
    """Two Adam steps of ``step`` on a copy of the lens; the losses and the translators after. A step that leaves a
    gradient on the model (it was not frozen) is refused, and the gradient cleared for the next case."""
    def run(model: PreTrainedModel, lens: TunedLens, residual: Tensor) -> tuple[list[float], dict[str, Tensor]]:
        trained = copy.deepcopy(lens)
        optimizer = torch.optim.Adam(trained.parameters(), lr=1e-2)
        try:
            losses = float_losses(lambda: step(trained, model, residual, optimizer), steps=2)
            touched = [name for name, parameter in model.named_parameters() if parameter.grad is not None]
            if touched:
                raise ValueError(f"the model's {touched[0]} got a gradient: freeze the model around the loss and the "
                                 "backward pass (with frozen(model): ...), so that only the translators train")
        finally:
            model.zero_grad(set_to_none=True)
        return losses, {name: parameter.detach() for name, parameter in trained.named_parameters()}
    return run


def _shaken_lens(model: PreTrainedModel, seed: int) -> TunedLens:
    """A lens away from the identity, so that its gradient is not the logit lens's."""
    lens = TunedLens.for_model(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in lens.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return lens


def check_tuned_lens_step(learner_fn: Callable, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
                          ) -> CheckResult:
    """Exercise 4.9: two steps give the reference's losses and translators, on ``model`` from the identity lens and
    from a perturbed one at the positions of corpus documents, and on tiny random Pythia and Llama models."""
    input_ids, mask = corpus_batch(tokenizer, 4, seed=3, max_length=24)
    with torch.no_grad():
        residual = residual_stack(model, input_ids)[:, mask.bool()]                    # [layer_plus_one, n, d_model]
    cases = [Case("your model, the identity lens (the logit lens)", model, TunedLens.for_model(model), residual),
             Case("your model, a lens away from the identity", model, _shaken_lens(model, seed=0), residual[:, :20])]
    for seed, (name, other) in enumerate(list(checker_models().items())[:2]):
        with torch.no_grad():
            stack = residual_stack(other, _random_ids(other, 2, 5, 20 + seed)).flatten(1, 2)
        cases.append(Case(f"{name}, a lens away from the identity", other, _shaken_lens(other, seed=1 + seed), stack))
    return check_function(
        _two_lens_steps(learner_fn), _two_lens_steps(tuned_lens_step), cases, exercise="4.9 (tuned_lens_step)",
        atol=1e-5, rtol=1e-4,
        hint="clear the old gradients first; the loss is KL(final || tuned lens) of lens(model, residual) at every "
             "layer, summed over the layers (kl_to_final averages over the positions); backpropagate and step with "
             "the model frozen, and return the loss from before the step as a float")


def _up_to_sign(fn: Callable) -> Callable:
    """``fn``'s singular values, and its directions each turned so that its largest coordinate is positive: a
    singular vector's sign is arbitrary, and another SVD routine may return the other one."""
    def run(matrix: Tensor, k: int, centre: bool = False) -> tuple[Tensor, Tensor]:
        values, directions = fn(matrix, k, centre=centre)
        largest = directions.gather(-1, directions.abs().argmax(dim=-1, keepdim=True))      # [k, 1]
        return values, directions * largest.sign()
    return run


def _low_rank_with_an_offset(n: int, d: int, seed: int) -> Tensor:
    """Rows with a few strong directions and a large common mean, so that centring changes the answer."""
    generator = torch.Generator().manual_seed(seed)
    strengths = torch.tensor([8.0, 4.0, 2.0, 1.0])[:, None]
    basis = torch.linalg.qr(torch.randn(d, 4, generator=generator)).Q.T                        # [4, d], orthonormal
    return torch.randn(n, 4, generator=generator) @ (strengths * basis) + 0.1 * torch.randn(n, d, generator=generator) \
        + 5 * torch.randn(d, generator=generator)


def check_singular_directions(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 4.11 on ``model``'s last MLP output weight, and on activations-like tables centred and not, up to the
    sign of each direction."""
    mlp_out = mlp_output_weight(model, model.config.num_hidden_layers - 1).detach()           # [d_mlp, d_model]
    table = _low_rank_with_an_offset(200, 16, seed=0)
    cases = [Case("your model's last MLP output weight, k = 3", mlp_out, 3),
             Case("200 rows with a common offset, k = 2, centred", table, 2, centre=True),
             Case("the same rows, k = 2, not centred", table, 2, centre=False),
             Case("40 x 6 rows, k = 6 (all of them), centred", _low_rank_with_an_offset(40, 6, seed=1), 6, centre=True)]
    return check_function(
        _up_to_sign(learner_fn), _up_to_sign(singular_directions), cases, exercise="4.11 (singular_directions)",
        atol=1e-4, rtol=1e-3,
        properties=[Varies("centre", lambda centre: not centre, "ignores centre")],
        hint="with centre, subtract the mean row (the mean over the n rows, dimension 0) before the decomposition; "
             "the directions in d_model are the right singular vectors, the rows of Vh in torch.linalg.svd(matrix, "
             "full_matrices=False) (the columns of U live in the n rows' space), largest first: keep the first k "
             "values and the first k rows of Vh")


def check_ov_copying_ranks(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 4.12 on heads of ``model`` and of tiny random Pythia, Llama and GPT-2 models, on random token sets."""
    def token_set(checked: PreTrainedModel, n: int, seed: int) -> Tensor:
        return torch.randperm(checked.config.vocab_size, generator=torch.Generator().manual_seed(seed))[:n]

    last, heads = model.config.num_hidden_layers - 1, model.config.num_attention_heads
    cases = [Case(f"your model, layer {last}, head {heads - 1}, 12 tokens", model, last, heads - 1, token_set(model, 12, 0)),
             Case("your model, layer 0, head 1, 40 tokens", model, 0, 1, token_set(model, 40, 1))]
    for seed, (name, other) in enumerate(checker_models().items()):
        cases.append(Case(f"{name}, layer 1, head {seed}, 9 tokens", other, 1, seed, token_set(other, 9, 10 + seed)))
    with torch.no_grad():
        return check_function(
            learner_fn, ov_copying_ranks, cases, exercise="4.12 (ov_copying_ranks)",
            properties=[Varies("head", lambda head: head - 1, "reads another head")],
            hint="normalise each token's embedding with the block's own input norm "
                 "(architecture.block_part(model, layer, ATTENTION_INPUT_NORM)), multiply by the head's OV circuit "
                 "(x @ OV, in that order), read the result as logits with direction_logits, keep the columns of the "
                 "given tokens only, and rank each row's own token among them: 1 + how many are strictly larger")


def check_ov_eigenvalue_score(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 4.13 on heads of ``model`` and of tiny random Pythia, Llama and GPT-2 models."""
    last, heads = model.config.num_hidden_layers - 1, model.config.num_attention_heads
    cases = [Case(f"your model, layer {last}, head {heads - 1}", model, last, heads - 1),
             Case("your model, layer 0, head 0", model, 0, 0)]
    for seed, (name, other) in enumerate(checker_models().items()):
        cases.append(Case(f"{name}, layer 1, head {seed + 1}", other, 1, seed + 1))
    with torch.no_grad():
        return check_function(
            learner_fn, ov_eigenvalue_score, cases, exercise="4.13 (ov_eigenvalue_score)", atol=1e-4, rtol=1e-3,
            properties=[Varies("head", lambda head: head - 1, "reads another head")],
            hint="the full circuit goes token -> embedding (times the block's input norm weight) -> OV -> final norm "
                 "weight -> unembedding; build the d_model x d_model product of the same matrices in the cyclic "
                 "order (OV, then the weighted unembedding transposed, then the weighted embedding), take its "
                 "eigenvalues (torch.linalg.eigvals, complex), and divide the sum of their real parts by the sum of "
                 "their absolute values")


def _translation_case(n: int, d: int, seed: int) -> tuple[Tensor, Tensor]:
    """Rows and targets related by an affine map plus noise, with a large offset, so the bias matters."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator) + 3
    target = x @ torch.randn(d, d, generator=generator) + 4 * torch.randn(d, generator=generator) \
        + 0.1 * torch.randn(n, d, generator=generator)
    return x, target


def check_least_squares_translator(learner_fn: Callable) -> CheckResult:
    """Exercise 4.14 on affine relations of a few shapes (more rows than columns, as a layer's stream has)."""
    cases = [Case(f"{n} rows of width {d}", *_translation_case(n, d, seed)) for seed, (n, d) in
             enumerate([(50, 6), (200, 16), (9, 8)])]
    return check_function(
        learner_fn, least_squares_translator, cases, exercise="4.14 (least_squares_translator)", atol=1e-3, rtol=1e-3,
        hint="append a column of ones to x so that the bias is one more row of the solution, solve x_with_ones @ W = "
             "target in the least-squares sense (torch.linalg.lstsq(x_with_ones, target).solution, in float64 for "
             "accuracy), and split W into A (every row but the last) and b (the last row)")
