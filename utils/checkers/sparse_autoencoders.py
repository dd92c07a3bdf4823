"""Checkers for the exercises of chapter 6 (sparse autoencoders), kept apart from the library code they check.

Each ``check_<exercise>(learner_fn, ...)`` runs the learner's function and the library's reference
on inputs chosen so that every plausible mistake shows (see ``utils.checks``), and prints one line.
``tests/test_mutation.py`` and ``tests/test_wrong_answers.py`` prove that each rejects wrong answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from utils.checks import Case, CheckResult, HasCase, Varies, check_function
from utils.sae import SparseAutoencoder, explained_variance, sae_loss


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
