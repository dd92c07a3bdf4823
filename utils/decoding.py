"""Chapter 1 reference: decoding from logits, from scratch.

A language model gives, for each sequence of a batch, one logit per vocabulary token for the next
position: ``logits`` of shape ``[batch, vocab]``. Decoding turns them into one token per sequence.

Every *filter* here takes those logits and returns logits of the same shape in which the tokens it
rules out are set to ``-inf``, so that ``logits.softmax(dim=-1)`` is the filtered (renormalised)
distribution. This is how ``transformers``' logits processors work, and each function gives the
same result as the processor its docstring names (``tests/test_decoding.py`` checks it, ties
included). Filters never edit their input in place and can be chained; ``generate`` applies them in
this order before it samples::

    logits = repetition_penalty(logits, previous_tokens, penalty=1.2)
    logits = apply_temperature(logits, temperature=0.7)
    logits = top_k_filter(logits, k=50)
    logits = top_p_filter(logits, p=0.9)
    logits = min_p_filter(logits, min_p=0.05)
    next_tokens = sample(logits)          # or greedy(logits)
"""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor


def apply_temperature(logits: Float[Tensor, "batch vocab"], temperature: float) -> Float[Tensor, "batch vocab"]:
    """Divide the logits by ``temperature`` (``transformers.TemperatureLogitsWarper``).

    Below 1 the distribution gets sharper, above 1 flatter. Temperature 0 would divide by zero; its
    limit puts all the mass on the most likely token, which is greedy decoding: call
    :func:`greedy` (argmax) instead. So ``temperature`` must be strictly positive, else ValueError.

    Args:
        logits: ``[batch, vocab]`` next-token logits.
        temperature: a number > 0.

    Returns:
        ``[batch, vocab]`` logits, ``logits / temperature``.
    """
    if temperature == 0:
        raise ValueError("temperature=0 is greedy decoding: use greedy(logits) (argmax) instead; "
                         "apply_temperature needs temperature > 0")
    if not temperature > 0:  # also rejects NaN
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return logits / temperature


def top_k_filter(logits: Float[Tensor, "batch vocab"], k: int) -> Float[Tensor, "batch vocab"]:
    """Keep the ``k`` largest logits of each row, set the others to ``-inf`` (``transformers.TopKLogitsWarper``).

    Ties: every token whose logit equals the k-th largest is kept, so a row may keep more than ``k``
    tokens. A ``k`` larger than the vocabulary keeps every token.

    Args:
        logits: ``[batch, vocab]`` next-token logits.
        k: how many tokens to keep, an integer >= 1.

    Returns:
        ``[batch, vocab]`` logits, ``-inf`` below each row's k-th largest logit.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    k = min(k, logits.shape[-1])
    kth_largest = logits.topk(k, dim=-1).values[:, -1]                  # [batch]
    threshold = einops.rearrange(kth_largest, "batch -> batch 1")
    return logits.masked_fill(logits < threshold, -torch.inf)


def top_p_filter(
    logits: Float[Tensor, "batch vocab"], p: float, min_tokens_to_keep: int = 1,
) -> Float[Tensor, "batch vocab"]:
    """Nucleus: keep the fewest most likely tokens whose mass reaches ``p`` (``transformers.TopPLogitsWarper``).

    Equivalently, drop the longest tail of *least* likely tokens whose total probability is at most
    ``1 - p``; that is how it is computed, sorting each row in ascending order. The ``min_tokens_to_keep``
    most likely tokens are always kept. Among tied tokens at the cut, the order of ``torch.sort``
    decides which are kept. ``p = 1`` keeps every token of non-zero probability.

    Args:
        logits: ``[batch, vocab]`` next-token logits.
        p: the probability mass to keep, in (0, 1].
        min_tokens_to_keep: an integer >= 1.

    Returns:
        ``[batch, vocab]`` logits, ``-inf`` outside each row's nucleus.
    """
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1], got {p}")
    if isinstance(min_tokens_to_keep, bool) or not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
        raise ValueError(f"min_tokens_to_keep must be an integer >= 1, got {min_tokens_to_keep!r}")
    sorted_logits, sorted_indices = torch.sort(logits, descending=False)  # [batch, vocab] each
    mass_up_to = sorted_logits.softmax(dim=-1).cumsum(dim=-1)            # mass of this token and all less likely ones
    sorted_to_remove = mass_up_to <= 1 - p
    sorted_to_remove[:, -min_tokens_to_keep:] = False                   # the most likely tokens sit at the end
    to_remove = sorted_to_remove.scatter(-1, sorted_indices, sorted_to_remove)  # back to vocabulary order
    return logits.masked_fill(to_remove, -torch.inf)


def min_p_filter(logits: Float[Tensor, "batch vocab"], min_p: float) -> Float[Tensor, "batch vocab"]:
    """Keep tokens of probability >= ``min_p`` times the row's largest (``transformers.MinPLogitsWarper``).

    The cut-off scales with the model's confidence: a peaked row keeps few tokens, a flat row many.
    ``min_p = 0`` keeps every token; ``min_p = 1`` keeps only the most likely token(s), ties included.
    The most likely token always passes, so no row is left empty.

    Args:
        logits: ``[batch, vocab]`` next-token logits.
        min_p: the fraction of the top probability a token needs, in [0, 1].

    Returns:
        ``[batch, vocab]`` logits, ``-inf`` where the probability is below ``min_p * max probability``.
    """
    if not 0 <= min_p <= 1:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}")
    probs = logits.softmax(dim=-1)                                       # [batch, vocab]
    top_prob = einops.reduce(probs, "batch vocab -> batch 1", "max")
    return logits.masked_fill(probs < min_p * top_prob, -torch.inf)


def repetition_penalty(
    logits: Float[Tensor, "batch vocab"], previous_tokens: Int[Tensor, "batch seq"], penalty: float,
) -> Float[Tensor, "batch vocab"]:
    """Penalise the tokens seen before (CTRL rule; ``transformers.RepetitionPenaltyLogitsProcessor``).

    For each token in ``previous_tokens`` (once, however often it appears): a positive logit is
    divided by ``penalty``, a negative one multiplied by it, so with ``penalty > 1`` the token becomes
    less likely either way. ``penalty = 1`` changes nothing and ``0 < penalty < 1`` rewards repetition.
    For a decoder-only model ``previous_tokens`` is usually the prompt plus what was generated so far.

    Args:
        logits: ``[batch, vocab]`` next-token logits.
        previous_tokens: ``[batch, seq]`` token ids in ``[0, vocab)``, the tokens to penalise.
        penalty: a number > 0.

    Returns:
        ``[batch, vocab]`` logits with the previous tokens' logits penalised.
    """
    if not penalty > 0:
        raise ValueError(f"penalty must be > 0, got {penalty}")
    seen = logits.gather(-1, previous_tokens)                            # [batch, seq]
    penalised = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(-1, previous_tokens, penalised)


def greedy(logits: Float[Tensor, "batch vocab"]) -> Int[Tensor, "batch"]:
    """The most likely token of each row (the first one among ties): ``[batch, vocab]`` logits to ``[batch]`` ids."""
    return logits.argmax(dim=-1)


def sample(logits: Float[Tensor, "batch vocab"], generator: torch.Generator | None = None) -> Int[Tensor, "batch"]:
    """Draw one token per row from ``softmax(logits)``: ``[batch, vocab]`` logits to ``[batch]`` ids.

    A token whose logit is ``-inf`` has probability 0 and is never drawn. Pass a seeded
    ``torch.Generator`` to make the draws reproducible.
    """
    probs = logits.softmax(dim=-1)                                       # [batch, vocab]
    drawn = torch.multinomial(probs, num_samples=1, generator=generator)  # [batch, 1]
    return einops.rearrange(drawn, "batch 1 -> batch")
