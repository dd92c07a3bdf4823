"""Checkers for the exercises of chapter 6 (sparse autoencoders), kept apart from the library code they check.

Each ``check_<exercise>(learner_fn, ...)`` runs the learner's function and the library's reference
on inputs chosen so that every plausible mistake shows (see ``utils.checks``), and prints one line.
``tests/test_mutation.py`` and ``tests/test_wrong_answers.py`` prove that each rejects wrong answers.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils.checks import Case, CheckResult, HasCase, Varies, check_function
from utils import architecture
from utils.sae import (
    AnySAE, SparseAutoencoder, TrainingStep, batch_topk, check_sae_fits, evaluation_batch, explained_variance,
    hook_name_of_site, load_shipped_sae, remove_parallel_component, sae_loss, sae_training_step, sparsity_metrics,
    spliced_loss,
)
from utils.sae_features import (
    aligned_latents, auroc, best_latent, decoder_matches, logit_effect_tokens, projection_on_rows, top_activations,
)


# ---------------------------------------------------------------------------------------------
# Exercises on utils.sae


def _sae_lens_forward(x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor,
                      k: int | None = None) -> tuple[Tensor, Tensor]:
    """The checker's reference for 6.1: sae-lens's own ``StandardSAE`` / ``TopKSAE`` holding these weights."""
    sae = SparseAutoencoder(W_enc.shape[0], W_enc.shape[1], k=k)
    sae.load_state_dict({"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec})
    sae_lens = sae.to_sae_lens()
    with torch.no_grad():
        feats = sae_lens.encode(x)
        return sae_lens.decode(feats), feats


def _random_weights(d_in: int, d_sae: int, seed: int, unit_rows: bool = True) -> dict[str, Tensor]:
    """SAE weights with non-zero biases (so that a forgotten bias shows), decoder rows of unit norm or not."""
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(d_sae, d_in, generator=g)
    W_dec = F.normalize(W_dec, dim=-1) if unit_rows else W_dec * torch.rand(d_sae, 1, generator=g) * 3
    return {"W_enc": torch.randn(d_in, d_sae, generator=g) / math.sqrt(d_in), "b_enc": torch.randn(d_sae, generator=g) * 0.3,
            "W_dec": W_dec, "b_dec": torch.randn(d_in, generator=g)}


def _relu_after_topk_matters(case: Case) -> bool:
    """Whether a TopK case has a row whose ``k`` largest pre-activations include a negative one."""
    x, W_enc, b_enc, _, b_dec = case.args
    k = case.kwargs.get("k")
    return k is not None and bool(((x - b_dec) @ W_enc + b_enc).topk(k, dim=-1).values.lt(0).any())


def check_sae_forward(learner_fn: Callable[..., tuple[Tensor, Tensor]]) -> CheckResult:
    """Exercise 6.1: ``learner_fn(x, W_enc, b_enc, W_dec, b_dec, k=None)`` against sae-lens's SAE of the same weights."""
    cases = []
    for name, d_in, d_sae, batch, k, seed, shift in [
            ("ReLU, d_in 8, d_sae 32, decoder rows of any norm", 8, 32, 5, None, 0, 0.0),
            ("ReLU, batch of 1", 16, 64, 1, None, 1, 0.0),
            ("TopK with k=3, many pre-activations negative", 8, 32, 6, 3, 2, -3.0),
            ("TopK with k=4, many pre-activations positive", 8, 32, 6, 4, 3, 0.0)]:
        w = _random_weights(d_in, d_sae, seed, unit_rows=batch == 1)
        w["b_enc"] = w["b_enc"] + shift   # negative: some of the top k must be zeroed by the ReLU
        x = torch.randn(batch, d_in, generator=torch.Generator().manual_seed(100 + seed)) + 2 * w["b_dec"]
        cases.append(Case(name, x, w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], k=k))
    return check_function(
        learner_fn, _sae_lens_forward, cases, exercise="6.1 (sae_forward)", atol=1e-4,
        properties=[Varies("k", lambda k: None, "ignores k"),
                    Varies("W_dec", lambda w: F.normalize(w, dim=-1), "normalises the decoder's rows"),
                    Varies("b_enc", torch.zeros_like, "forgets the encoder's bias"),
                    Varies("b_dec", torch.zeros_like, "forgets the decoder's bias"),
                    HasCase("a batch of 1", lambda case: case.args[0].shape[0] == 1),
                    HasCase("a TopK row whose k largest pre-activations include a negative one",
                            _relu_after_topk_matters)],
        hint="subtract b_dec before the encoder and add b_enc before the ReLU; with k, keep each row's k largest "
             "pre-activations (torch.topk), ReLU them and zero the rest; decode with W_dec and add b_dec back. "
             "Return (reconstruction, latents)")


def check_sae_loss(learner_fn: Callable[..., Tensor]) -> CheckResult:
    """Exercise 6.2: ``learner_fn(x, reconstruction, feats, W_dec, l1_coefficient)`` on decoders with rows of any norm."""
    cases = []
    for name, d_in, d_sae, batch, l1, seed in [("8 rows, lambda 0.5", 8, 32, 8, 0.5, 0),
                                               ("decoder rows of norm != 1, lambda 2", 16, 48, 4, 2.0, 1),
                                               ("no sparsity penalty (lambda 0)", 8, 16, 6, 0.0, 2)]:
        w = _random_weights(d_in, d_sae, seed, unit_rows=False)
        g = torch.Generator().manual_seed(200 + seed)
        x = torch.randn(batch, d_in, generator=g)
        feats = torch.rand(batch, d_sae, generator=g) * (torch.rand(batch, d_sae, generator=g) < 0.2)
        cases.append(Case(name, x, feats @ w["W_dec"] + w["b_dec"], feats, w["W_dec"], l1))
    return check_function(
        learner_fn, sae_loss, cases, exercise="6.2 (sae_loss)", atol=1e-4,
        properties=[Varies("l1_coefficient", lambda l1: l1 + 1, "ignores the sparsity coefficient"),
                    Varies("W_dec", torch.ones_like, "ignores the decoder's row norms")],
        hint="squared error summed over d_in then averaged over the batch, plus l1_coefficient times the latents "
             "weighted by their decoder row's norm (W_dec.norm(dim=-1)), summed over d_sae and averaged over the batch")


def check_explained_variance(learner_fn: Callable[..., Tensor]) -> CheckResult:
    """Exercise 6.3: ``learner_fn(x, reconstruction)`` on inputs whose mean is far from zero."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g) + 5
    cases = [Case("a good reconstruction", x, x + 0.3 * torch.randn(50, 8, generator=g)),
             Case("the batch mean as reconstruction (0)", x, x.mean(0).expand(50, 8)),
             Case("zero reconstruction (negative)", x, torch.zeros(50, 8))]
    return check_function(
        learner_fn, explained_variance, cases, exercise="6.3 (explained_variance)", atol=1e-4,
        hint="1 - (sum of squared errors) / (sum of squared deviations of x from its mean over the batch, x.mean(0))")


# ---------------------------------------------------------------------------------------------
# Exercises 6.4-6.6: the decoder's gradient, a training step, JumpReLU


def _rows_of_any_norm(case: Case) -> bool:
    """Whether a case's decoder has rows whose norms are far from 1."""
    return not torch.allclose(case.args[0].norm(dim=-1), torch.ones(case.args[0].shape[0]), atol=0.1)


def check_remove_parallel_component(learner_fn: Callable[[Tensor, Tensor], Tensor]) -> CheckResult:
    """Exercise 6.4: ``learner_fn(W_dec, grad)`` on decoders with unit rows and rows of any norm."""
    cases = []
    for name, d_sae, d_in, unit_rows, seed in [("unit decoder rows, d_sae 32, d_in 8", 32, 8, True, 0),
                                                ("decoder rows of norms 0.1 to 3", 16, 8, False, 1),
                                                ("one latent, d_in 4", 1, 4, False, 2)]:
        w = _random_weights(d_in, d_sae, seed, unit_rows=unit_rows)["W_dec"]
        grad = torch.randn(d_sae, d_in, generator=torch.Generator().manual_seed(300 + seed)) + 0.5 * w
        cases.append(Case(name, w, grad))
    w = _random_weights(8, 8, 3, unit_rows=False)["W_dec"]
    cases.append(Case("a gradient along the rows only (the answer is 0)", w, 2.5 * w))
    return check_function(
        learner_fn, remove_parallel_component, cases, exercise="6.4 (remove_parallel_component)", atol=1e-5,
        properties=[HasCase("decoder rows far from unit norm", _rows_of_any_norm),
                    Varies("grad", lambda g: g + 1, "ignores the gradient")],
        hint="for each row i, take the unit vector of W_dec[i] (divide by its norm over d_in), the dot product of "
             "grad[i] with it (one number per row), and subtract that number times the unit vector from grad[i]")


def _two_sae_steps(step: TrainingStep) -> Callable:
    """Two Adam steps (lr 0.05) of ``step`` on a copy of the SAE: the losses, the last step's outputs and the
    weights after. Outputs that still carry a graph (not detached) are refused."""
    def run(sae: SparseAutoencoder, x: Tensor, l1_coefficient: float) -> tuple:
        trained = copy.deepcopy(sae)
        optimizer = torch.optim.Adam(trained.parameters(), lr=0.05)
        outputs = [step(trained, optimizer, x, l1_coefficient) for _ in range(2)]
        if any(isinstance(t, Tensor) and t.requires_grad for t in outputs[-1]):
            raise ValueError("the step returned tensors that still carry the autograd graph: return loss.detach(), "
                             "reconstruction.detach(), latents.detach()")
        weights = {name: parameter.detach() for name, parameter in trained.named_parameters()}
        return [float(loss) for loss, _, _ in outputs], outputs[-1][1], outputs[-1][2], weights
    return run


def _sae_to_train(d_in: int, d_sae: int, seed: int, k: int | None = None) -> SparseAutoencoder:
    """An SAE with unit decoder rows and non-zero biases, its encoder away from the decoder's transpose."""
    sae = SparseAutoencoder(d_in, d_sae, k=k, seed=seed)
    w = _random_weights(d_in, d_sae, seed)
    with torch.no_grad():
        sae.W_enc.copy_(w["W_enc"])
        sae.b_enc.copy_(w["b_enc"].abs())
        sae.b_dec.copy_(w["b_dec"])
    return sae


def check_sae_training_step(learner_fn: TrainingStep) -> CheckResult:
    """Exercise 6.5: two steps of ``learner_fn(sae, optimizer, x, l1_coefficient)`` give the reference's losses,
    outputs and weights (Adam, lr 0.05), on ReLU and TopK SAEs."""
    cases = []
    for name, d_in, d_sae, k, l1, seed in [("ReLU SAE, lambda 0.5", 8, 32, None, 0.5, 0),
                                           ("ReLU SAE, lambda 2", 16, 48, None, 2.0, 1),
                                           ("TopK SAE (k=4), no L1 term", 8, 32, 4, 0.0, 2)]:
        x = torch.randn(24, d_in, generator=torch.Generator().manual_seed(400 + seed)) + 1.5
        cases.append(Case(name, _sae_to_train(d_in, d_sae, seed, k), x, l1))
    return check_function(
        _two_sae_steps(learner_fn), _two_sae_steps(sae_training_step), cases, exercise="6.5 (sae_training_step)",
        atol=1e-4, rtol=1e-3,
        hint="encode and decode x with the SAE, take sae_loss with sae.W_dec, clear the old gradients "
             "(optimizer.zero_grad()) and backpropagate; under torch.no_grad(), replace W_dec's gradient by "
             "remove_parallel_component(W_dec, its gradient), step, and then scale each row of W_dec back to unit "
             "norm (sae.normalize_decoder_()); return the loss, reconstruction and latents detached")


def _sae_lens_jumprelu(x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor, threshold: Tensor
                       ) -> tuple[Tensor, Tensor]:
    """The checker's reference for 6.6: sae-lens's ``JumpReLUSAE`` holding these weights."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=W_enc.shape[0], d_sae=W_enc.shape[1]))
    sae.load_state_dict({"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "threshold": threshold})
    with torch.no_grad():
        latents = sae.encode(x)
        return sae.decode(latents), latents


def _pre_activations(case: Case) -> Tensor:
    x, W_enc, b_enc, _, b_dec, _ = case.args
    return (x - b_dec) @ W_enc + b_enc


def _threshold_reached_exactly(d_in: int = 4, d_sae: int = 12) -> Case:
    """Whole-number weights and inputs, so that every pre-activation is exact whatever the order of the sums, and
    thresholds equal to some of the first row's pre-activations: at its threshold a latent is off."""
    g = torch.Generator().manual_seed(7)
    x, W_enc = torch.randint(-2, 3, (3, d_in), generator=g).float(), torch.randint(-1, 2, (d_in, d_sae), generator=g).float()
    b_enc, b_dec = torch.randint(0, 3, (d_sae,), generator=g).float(), torch.randint(-1, 2, (d_in,), generator=g).float()
    pre = (x - b_dec) @ W_enc + b_enc
    threshold = torch.where(pre[0] > 0, pre[0], torch.full((d_sae,), 0.5))
    return Case("pre-activations exactly at their thresholds", x, W_enc, b_enc, F.normalize(torch.randn(
        d_sae, d_in, generator=g), dim=-1), b_dec, threshold)


def check_jumprelu_forward(learner_fn: Callable[..., tuple[Tensor, Tensor]]) -> CheckResult:
    """Exercise 6.6: ``learner_fn(x, W_enc, b_enc, W_dec, b_dec, threshold)`` against sae-lens's ``JumpReLUSAE``."""
    cases = []
    for name, d_in, d_sae, batch, low, high, seed in [
            ("thresholds 0.2 to 1.5, one per latent", 8, 32, 6, 0.2, 1.5, 0),
            ("a batch of 1, thresholds 0.5 to 0.6", 16, 64, 1, 0.5, 0.6, 1),
            ("some thresholds below zero", 8, 32, 8, -0.8, 0.6, 2)]:
        w = _random_weights(d_in, d_sae, seed)
        g = torch.Generator().manual_seed(500 + seed)
        threshold = low + (high - low) * torch.rand(d_sae, generator=g)
        x = torch.randn(batch, d_in, generator=g) + w["b_dec"]
        cases.append(Case(name, x, w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], threshold))
    cases.append(_threshold_reached_exactly())
    return check_function(
        learner_fn, _sae_lens_jumprelu, cases, exercise="6.6 (jumprelu_forward)", atol=1e-4,
        properties=[Varies("threshold", torch.zeros_like, "ignores the threshold (a plain ReLU)"),
                    Varies("b_dec", torch.zeros_like, "forgets the decoder's bias"),
                    HasCase("a pre-activation between 0 and its latent's positive threshold",
                            lambda case: bool(((_pre_activations(case) > 0)
                                               & (_pre_activations(case) <= case.args[5])).any())),
                    HasCase("a negative pre-activation above its latent's negative threshold",
                            lambda case: bool(((_pre_activations(case) < 0)
                                               & (_pre_activations(case) > case.args[5])).any()))],
        hint="the pre-activations as in 6.1; a latent keeps its ReLU'd pre-activation only where the pre-activation "
             "is above that latent's threshold ([d_sae], it broadcasts over the batch), and is 0 elsewhere: "
             "pre.relu() * (pre > threshold). Return (reconstruction, latents)")


# ---------------------------------------------------------------------------------------------
# Exercises 6.7-6.8: sparsity, and the loss with the SAE spliced in


def _latent_table(tokens: int, d_sae: int, seed: int) -> Tensor:
    """Latents of ``tokens`` tokens, with dead latents (never active), dense ones and tiny positive values."""
    g = torch.Generator().manual_seed(seed)
    rates = torch.rand(d_sae, generator=g) * 0.08
    rates[: d_sae // 8] = 0.0                                            # dead
    rates[d_sae // 8: d_sae // 4] = 0.5                                  # dense
    active = torch.rand(tokens, d_sae, generator=g) < rates
    values = torch.rand(tokens, d_sae, generator=g) * 3 + 1e-4
    values[0, -1] = 1e-6                                                 # tiny, but active
    active[0, -1] = True
    return values * active


def _exactly_at_the_threshold(tokens: int = 50, d_sae: int = 8) -> Tensor:
    """Latent 0 active on exactly 5 of 50 tokens (a tenth), latent 1 on 6, the rest dead or always on."""
    latents = torch.zeros(tokens, d_sae)
    latents[:5, 0], latents[:6, 1], latents[:, 2] = 1.0, 2.0, 0.5
    return latents


def check_sparsity_metrics(learner_fn: Callable[..., tuple[float, float, float]]) -> CheckResult:
    """Exercise 6.7: ``learner_fn(latents, dense_threshold=0.1)`` returns ``(l0, dead_fraction, dense_fraction)``."""
    cases = [Case("200 tokens, 64 latents, some dead and some dense", _latent_table(200, 64, 0)),
             Case("the same, dense_threshold 0.05", _latent_table(200, 64, 0), dense_threshold=0.05),
             Case("latents active on exactly a tenth of the tokens", _exactly_at_the_threshold()),
             Case("one token", _latent_table(1, 16, 1))]
    return check_function(
        learner_fn, sparsity_metrics, cases, exercise="6.7 (sparsity_metrics)", atol=1e-5,
        properties=[Varies("dense_threshold", lambda t: t / 2, "ignores dense_threshold")],
        hint="a latent is active on a token when its value is > 0; l0 is the number of active latents per token "
             "averaged over the tokens; a latent's firing frequency is the share of tokens it is active on: dead "
             "when it is 0, dense when it is > dense_threshold. Return three floats")


def _sae_of(model: PreTrainedModel, site: str, seed: int) -> AnySAE:
    """The course's shipped SAE of ``site`` when it fits ``model``, else a random one of the model's width."""
    try:
        sae = load_shipped_sae(site)
        check_sae_fits(sae, model, site)
        return sae
    except (ValueError, FileNotFoundError):
        d_model = architecture.d_model(model)
        return SparseAutoencoder(d_model, 4 * d_model, hook_name=hook_name_of_site(site), seed=seed)


def check_spliced_loss(learner_fn: Callable[..., float], model: PreTrainedModel,
                       tokenizer: PreTrainedTokenizerBase) -> CheckResult:
    """Exercise 6.8: ``learner_fn(model, sae, input_ids, mask, site)`` on padded documents, with the course's SAEs on the
    course model (random SAEs of the model's width on another model)."""
    input_ids, mask = evaluation_batch(tokenizer, 6, seed=11)
    last = architecture.n_layers(model) - 1
    middle = min(2, last)
    cases = [Case(f"block {middle}'s residual SAE, 6 padded documents", model, _sae_of(model, f"resid_post.{middle}", 0),
                  input_ids, mask, f"resid_post.{middle}"),
             Case("block 0's residual SAE, 2 documents", model, _sae_of(model, "resid_post.0", 1),
                  input_ids[:2], mask[:2], "resid_post.0"),
             Case(f"block {middle}'s MLP-output SAE", model, _sae_of(model, f"mlp_out.{middle}", 2), input_ids[2:],
                  mask[2:], f"mlp_out.{middle}"),
             Case(f"block {last}'s residual SAE", model, _sae_of(model, f"resid_post.{last}", 3),
                  input_ids, mask, f"resid_post.{last}")]
    return check_function(
        learner_fn, spliced_loss, cases, exercise="6.8 (spliced_loss)", atol=1e-4, rtol=1e-4,
        properties=[Varies("site", lambda site: "resid_post.0" if site != "resid_post.0" else f"resid_post.{last}",
                           "splices at another site than the one given"),
                    HasCase("padded documents", lambda case: bool((case.args[3] == 0).any()))],
        hint="with hooks(model, {site: splice}), where splice(activation) returns sae.decode(sae.encode(activation)) "
             "at the real positions but BOS (real_positions(mask), [batch, pos]; torch.where) and the activation "
             "itself elsewhere; the loss is next_token_loss(logits, input_ids, mask)")


# ---------------------------------------------------------------------------------------------
# Exercises 6.9-6.13: reading latents, labelling them, and decomposing a vector


def _one_latent(batch: int, pos: int, seed: int, active: float) -> Tensor:
    """One latent's activations on ``batch`` documents of ``pos`` tokens: zero except a share ``active`` of them."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, pos, generator=g) * 5 * (torch.rand(batch, pos, generator=g) < active)


def check_top_activations(learner_fn: Callable[[Tensor, int], list[tuple[int, int, float]]]) -> CheckResult:
    """Exercise 6.9: ``learner_fn(acts, n)`` on documents longer than they are many, and with fewer positive
    entries than ``n``."""
    cases = [Case("4 documents of 30 tokens, the 5 largest", _one_latent(4, 30, 0, 0.3), 5),
             Case("12 documents of 7 tokens, the 10 largest", _one_latent(12, 7, 1, 0.5), 10),
             Case("only 3 positive entries, n = 8", _one_latent(5, 9, 2, 0.0).index_put_(
                 (torch.tensor([0, 2, 4]), torch.tensor([8, 0, 3])), torch.tensor([0.5, 2.0, 1.0])), 8),
             Case("one document", _one_latent(1, 20, 3, 0.4), 3),
             Case("n larger than the table (2 x 2, n = 6)", _one_latent(2, 2, 4, 1.0), 6)]
    return check_function(
        learner_fn, top_activations, cases, exercise="6.9 (top_activations)", atol=1e-5,
        properties=[HasCase("fewer positive entries than n", lambda case: int((case.args[0] > 0).sum()) < case.args[1]),
                    HasCase("more documents than positions", lambda case: case.args[0].shape[0] > case.args[0].shape[1])],
        hint="flatten the [batch, pos] activations, take the n largest with their flat indices (topk, largest first), "
             "turn each flat index back into (row, position) with the number of positions per row, and keep only the "
             "positive values; return a list of (row, position, value) tuples of Python numbers")


def check_logit_effect_tokens(learner_fn: Callable[..., tuple[Tensor, Tensor]], model: PreTrainedModel) -> CheckResult:
    """Exercise 6.10: ``learner_fn(direction, gamma, W_U, k)`` on the course model's unembedding and on a random one
    whose final-norm weight is far from 1."""
    from utils import architecture

    W_U = architecture.unembedding(model).weight.detach()                            # [vocab, d_model]
    gamma = architecture.final_norm(model).weight.detach()
    d_model = W_U.shape[1]
    g = torch.Generator().manual_seed(0)
    random_gamma = torch.rand(d_model, generator=g) * 3 + 0.1
    cases = [Case("your model, a random direction, k = 5", F.normalize(torch.randn(d_model, generator=g), dim=0),
                  gamma, W_U, 5),
             Case("your model, a final-norm weight far from 1, k = 10", torch.randn(d_model, generator=g),
                  random_gamma, W_U, 10),
             Case("a vocabulary of 50, k = 1", torch.randn(8, generator=g), torch.rand(8, generator=g) * 2,
                  torch.randn(50, 8, generator=g), 1)]
    return check_function(
        learner_fn, logit_effect_tokens, cases, exercise="6.10 (logit_effect_tokens)",
        properties=[Varies("gamma", torch.ones_like, "ignores the final norm's weight")],
        hint="the direction, scaled elementwise by gamma, times the unembedding W_U [vocab, d_model] gives one effect "
             "per token [vocab]; return the indices of its k largest and of its k most negative values, the most "
             "negative first (topk of the negated effects)")


def _scores_with_ties(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Scores of three latents on ``n`` rows (one of them binary, so positives and negatives tie) and labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.rand(n, generator=g) < 0.4
    labels[:2] = torch.tensor([True, False])
    scores = torch.stack([labels.float() + torch.randn(n, generator=g),
                          (torch.rand(n, generator=g) < 0.3 + 0.4 * labels).float(),
                          -labels.float() * 2 + torch.randn(n, generator=g) * 0.1], dim=1)
    return scores, labels


def check_auroc(learner_fn: Callable[[Tensor, Tensor], Tensor]) -> CheckResult:
    """Exercise 6.11: ``learner_fn(scores, labels)`` with ties between positives and negatives, for one latent and many."""
    scores, labels = _scores_with_ties(40, 0)
    cases = [Case("3 latents, 40 rows, a binary latent with ties", scores, labels),
             Case("one latent (1-D scores)", scores[:, 0], labels),
             Case("every score equal (0.5)", torch.zeros(10, 2), torch.arange(10) < 4),
             Case("integer labels 0/1, a perfect and an inverted latent", torch.stack(
                 [torch.arange(8.0), -torch.arange(8.0)], dim=1), (torch.arange(8) >= 5).long()),
             Case("latents on two axes, [n, 2, 3]", scores[:, [0, 1, 2, 2, 1, 0]].reshape(40, 2, 3), labels)]
    return check_function(
        learner_fn, auroc, cases, exercise="6.11 (auroc)", atol=1e-5,
        properties=[HasCase("a tie between a positive and a negative score", lambda case: any(
            bool((column[case.args[1].bool()][:, None] == column[~case.args[1].bool()][None, :]).any())
            for column in case.args[0].reshape(len(case.args[0]), -1).T))],
        hint="the AUROC is the probability that a random positive row scores above a random negative one, a tie "
             "counting one half: compare every positive with every negative (or use average ranks, Mann-Whitney), "
             "for every latent at once; labels may be 0/1 integers (use .bool())")


def _best_on_one_half(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Scores where latent 0 separates the first half of the rows perfectly and the second half poorly, and
    latent 1 separates both halves well: the half you select on decides the answer."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2 == 0
    half = n // 2
    first = torch.cat([labels[:half].float() * 3, torch.randn(n - half, generator=g)])
    second = labels.float() + 0.6 * torch.randn(n, generator=g)
    noise = torch.randn(n, 4, generator=g)
    return torch.cat([first[:, None], second[:, None], noise], dim=1), labels


def check_best_latent(learner_fn: Callable[[Tensor, Tensor], tuple[int, float, float]]) -> CheckResult:
    """Exercise 6.12: ``learner_fn(scores, labels)`` where selecting on the wrong rows picks another latent, and with
    an odd number of rows."""
    scores, labels = _best_on_one_half(60, 0)
    odd_scores, odd_labels = _best_on_one_half(41, 1)
    return check_function(
        learner_fn, best_latent, [Case("60 rows, latent 0 perfect on the first half only", scores, labels),
                                  Case("41 rows (the first half is 20)", odd_scores, odd_labels),
                                  Case("the best latent inverted", -scores[:, [2, 1, 3]], labels)],
        exercise="6.12 (best_latent)", atol=1e-5,
        hint="split the rows at n // 2: the AUROC of every latent on the first half selects the latent (argmax), and "
             "the same latent's AUROC on the second half is the number to report; return (latent, selection AUROC, "
             "held-out AUROC) as an int and two floats")


def check_aligned_latents(learner_fn: Callable[[Tensor, Tensor, int], list[tuple[int, float]]]) -> CheckResult:
    """Exercise 6.13: ``learner_fn(W_dec, vector, k)`` on decoders with rows of any norm and a vector opposed to some."""
    g = torch.Generator().manual_seed(0)
    W_dec = torch.randn(40, 8, generator=g) * (torch.rand(40, 1, generator=g) * 3 + 0.2)
    vector = 4 * torch.randn(8, generator=g)
    W_dec[5] = -2.5 * vector                                                   # opposed: cosine -1
    W_dec[9] = 0.1 * vector + 0.05 * torch.randn(8, generator=g)               # short but aligned
    return check_function(
        learner_fn, aligned_latents, [Case("rows of any norm, k = 5", W_dec, vector, 5),
                                      Case("k = 1", W_dec, vector, 1),
                                      Case("k larger than d_sae", W_dec[:6], vector, 10)],
        exercise="6.13 (aligned_latents)", atol=1e-5,
        properties=[Varies("k", lambda k: k + 1, "ignores k")],
        hint="the cosine of each decoder row with the vector (normalise both, then one matrix-vector product: [d_sae]); "
             "rank the latents by the absolute cosine, keep the first k (or all when there are fewer), and return "
             "(latent, cosine) pairs with the cosine's sign")


def check_projection_on_rows(learner_fn: Callable[[Tensor, Tensor], Tensor]) -> CheckResult:
    """Exercise 6.14: ``learner_fn(rows, vector)`` on rows that are neither orthogonal nor of unit norm."""
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(3, 8, generator=g) * torch.tensor([[0.3], [2.0], [5.0]])
    rows[2] = rows[2] + 3 * rows[1]                                      # far from orthogonal to row 1
    vector = torch.randn(8, generator=g)
    orthonormal = torch.linalg.qr(torch.randn(8, 2, generator=g)).Q.T    # [2, 8]
    return check_function(
        learner_fn, projection_on_rows,
        [Case("3 rows of norms 0.3 to 16, two of them far from orthogonal", rows, vector),
         Case("one row of norm 4", 4 * F.normalize(torch.randn(1, 8, generator=g), dim=-1), vector),
         Case("orthonormal rows", orthonormal, vector),
         Case("a vector inside the rows' span (itself)", rows, torch.tensor([1.0, -2.0, 0.5]) @ rows)],
        exercise="6.14 (projection_on_rows)", atol=1e-4, rtol=1e-4,
        hint="find the coefficients c [n] that make c @ rows closest to the vector (least squares: "
             "torch.linalg.lstsq of rows.T [d_in, n] and the vector as a column [d_in, 1]), then return c @ rows; "
             "projecting on each row separately and summing is right only for orthogonal rows")


def check_batch_topk(learner_fn: Callable[[Tensor, float], Tensor]) -> CheckResult:
    """Bonus exercise 6.15: ``learner_fn(pre, k)`` on tokens ``[batch, d_sae]`` and on documents
    ``[batch, pos, d_sae]``, with a whole and a fractional k, and on pre-activations with fewer positive values than
    the batch may keep."""
    g = torch.Generator().manual_seed(0)
    tokens, documents = torch.randn(6, 16, generator=g), torch.randn(2, 3, 16, generator=g)
    mostly_negative = torch.randn(4, 16, generator=g) - 2.0                 # about 2 % positive: fewer than 4 x 3
    return check_function(
        learner_fn, batch_topk,
        [Case("6 tokens x 16 latents, k = 3", tokens, 3.0),
         Case("6 tokens, k = 2.5 (15 kept over the batch)", tokens, 2.5),
         Case("2 documents x 3 positions x 16 latents, k = 2 (12 kept)", documents, 2.0),
         Case("pre-activations mostly negative, k = 3", mostly_negative, 3.0)],
        exercise="6.15 (batch_topk)", atol=1e-6,
        hint="ReLU first; flatten every dimension into one; keep the int(k * rows) largest values, rows being the "
             "number of rows (the product of every dimension but the last, not just the first), and put them back "
             "in a zero tensor of the flat shape (scatter at topk's indices), then reshape")


def check_decoder_matches(learner_fn: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]) -> CheckResult:
    """Bonus exercise 6.16: ``learner_fn(decoder_a, decoder_b)`` on rows of different norms, on decoders of different
    widths, and with a negated copy of a row among the other decoder's rows."""
    g = torch.Generator().manual_seed(0)
    b = torch.randn(7, 8, generator=g) * torch.linspace(0.2, 5.0, 7)[:, None]          # norms 0.2 to 5 times
    a = torch.cat([b[[2, 5]] * 3 + 0.1 * torch.randn(2, 8, generator=g), torch.randn(3, 8, generator=g)])
    opposite = torch.cat([-4 * a[:1], torch.randn(4, 8, generator=g)])                   # row 0 negated, and others
    return check_function(
        learner_fn, decoder_matches,
        [Case("5 rows against 7 of other norms, two of them near copies", a, b),
         Case("7 rows against 5", b, a),
         Case("a row against its own negation and 4 others", a, opposite)],
        exercise="6.16 (decoder_matches)", atol=1e-5,
        hint="normalise every row of both decoders to unit norm; their product a @ b.T is the [d_a, d_b] matrix of "
             "cosines; for each row of a, the largest cosine and its index (max over the last dimension), signed: "
             "a negated row is the opposite feature")
