"""Chapter 0 exercises: the reference solutions (the checkers the lab calls are in
:mod:`utils.checkers.course_model`), and the residual stream that exercise 0.3 starts from.
"""

from __future__ import annotations


import torch
from jaxtyping import Float, Int
from transformers import PreTrainedModel

from utils import architecture


def per_token_loss(
    logits: Float[torch.Tensor, "batch pos vocab"], tokens: Int[torch.Tensor, "batch pos"],
) -> Float[torch.Tensor, "batch pos_minus_1"]:
    """Reference for Exercise 0.1: the loss (nats) of predicting ``tokens[:, i + 1]`` from ``logits[:, i]``."""
    log_probs = logits[:, :-1].log_softmax(dim=-1)                    # [batch, pos-1, vocab]
    next_tokens = tokens[:, 1:]                                        # [batch, pos-1]
    return -log_probs.gather(-1, next_tokens.unsqueeze(-1)).squeeze(-1)


def logit_difference(
    logits: Float[torch.Tensor, "batch pos vocab"], correct: Int[torch.Tensor, "batch"], wrong: Int[torch.Tensor, "batch"],
) -> Float[torch.Tensor, "batch"]:
    """Reference for Exercise 0.2: ``logit[correct] - logit[wrong]`` at each sequence's last position."""
    last = logits[:, -1]                                               # [batch, vocab]
    rows = torch.arange(last.shape[0])
    return last[rows, correct] - last[rows, wrong]


def logits_from_final_residual(
    model: PreTrainedModel, residual: Float[torch.Tensor, "batch pos d_model"],
) -> Float[torch.Tensor, "batch pos vocab"]:
    """Reference for Exercise 0.3: the final norm, then the unembedding, on the last block's output."""
    return architecture.unembedding(model)(architecture.final_norm(model)(residual))


@torch.no_grad()
def final_residual_stream(model: PreTrainedModel, input_ids: Int[torch.Tensor, "batch pos"]
                          ) -> Float[torch.Tensor, "batch pos d_model"]:
    """The residual stream after the last block, before the final norm (captured with a hook).

    Not ``output_hidden_states[-1]``: for GPT-2 ``transformers`` applies ``ln_f`` to that one.
    """
    captured: list[torch.Tensor] = []
    handle = architecture.final_norm(model).register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        model(input_ids)
    finally:
        handle.remove()
    return captured[0]
