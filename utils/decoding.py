"""Chapter 1 reference: decoding from logits, from scratch.

A language model gives, for each sequence of a batch, one logit per vocabulary token for the next
position: ``logits`` of shape ``[batch, vocab]``. Decoding turns them into one token per sequence.

Every *filter* here takes those logits and returns logits of the same shape in which the tokens it
rules out are set to ``-inf``, so that ``logits.softmax(dim=-1)`` is the filtered (renormalised)
distribution. This is how ``transformers``' logits processors work, and each function gives the
same result as the processor its docstring names (``tests/test_decoding.py`` checks it, ties
included). Filters never edit their input in place and can be chained; :class:`Decoding` applies
them in ``transformers``' order before it samples::

    logits = apply_repetition_penalty(logits, previous_tokens, penalty=1.2)
    logits = apply_temperature(logits, temperature=0.7)
    logits = top_k_filter(logits, k=50)
    logits = top_p_filter(logits, p=0.9)
    logits = min_p_filter(logits, min_p=0.05)
    logits = typical_filter(logits, mass=0.9)
    next_tokens = sample(logits)          # or greedy(logits)

:func:`generate` is the KV-cached generation loop (greedy, or sampling with those filters; a
temperature of 0 means greedy) and :func:`beam_search` is beam search; both give the same tokens
as ``model.generate`` with the same settings and seed."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import einops
import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils.progress import trange


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


def typical_filter(logits: Float[Tensor, "batch vocab"], mass: float) -> Float[Tensor, "batch vocab"]:
    """Locally typical sampling (Meister et al., 2023; ``transformers.TypicalLogitsWarper``).

    A token's *surprise* is ``-log p``; the row's entropy ``H`` is its expected surprise. Typical
    sampling keeps the tokens whose surprise is closest to ``H``: rank them by ``|-log p - H|``
    and keep the smallest prefix of that ranking whose probability reaches ``mass`` (a token is
    kept while the mass ranked before it is below ``mass``; tokens tied with the last one kept
    stay too), so at least one token stays. Unlike top-p it can drop the most likely token, when
    that token is far more predictable than the row's average.

    Args:
        logits: ``[batch, vocab]`` next-token logits.
        mass: the probability mass to keep, in (0, 1).

    Returns:
        ``[batch, vocab]`` logits, ``-inf`` outside each row's typical set.
    """
    if not 0 < mass < 1:
        raise ValueError(f"mass must be in (0, 1), got {mass}")
    log_probs = logits.log_softmax(dim=-1)                                      # [batch, vocab]
    entropy = -(log_probs.exp() * log_probs).nansum(dim=-1, keepdim=True)       # [batch, 1]; 0 * -inf is nan
    distance = (-log_probs - entropy).abs()                                     # how atypical each token is
    sorted_distance, order = distance.sort(dim=-1)                              # most typical first
    cumulative = log_probs.exp().gather(-1, order).cumsum(dim=-1)
    crossing = (cumulative < mass).sum(dim=-1, keepdim=True).clamp(max=logits.shape[-1] - 1)  # [batch, 1]
    return logits.masked_fill(distance > sorted_distance.gather(-1, crossing), -torch.inf)


def apply_repetition_penalty(
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


# --------------------------------------------------------------------------------------------
# The generation loop

#: A logits processor with the interface of ``transformers``' ones: the tokens so far
#: (``[batch, seq]``) and the next-token logits (``[batch, vocab]``) in, logits out.
LogitsProcessor = Callable[[Int[Tensor, "batch seq"], Float[Tensor, "batch vocab"]], Float[Tensor, "batch vocab"]]


@dataclass(frozen=True)
class Decoding:
    """How :func:`generate` turns next-token logits into tokens: this module's filters, in ``transformers``' order.

    ``temperature=0`` means greedy decoding (argmax; the sampling filters are then not used), as
    ``do_sample=False`` does in ``transformers``; any other temperature samples. ``None`` turns a
    filter off. The arguments are checked when the object is made, before any forward pass.
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None
    logits_processors: Sequence[LogitsProcessor] = ()

    def __post_init__(self) -> None:
        if not self.temperature >= 0:  # also rejects NaN
            raise ValueError(f"temperature must be >= 0 (0 means greedy decoding), got {self.temperature}")
        probe = torch.zeros(1, 2)  # each filter validates its own argument
        if self.top_k is not None:
            top_k_filter(probe, self.top_k)
        if self.top_p is not None:
            top_p_filter(probe, self.top_p)
        if self.min_p is not None:
            min_p_filter(probe, self.min_p)
        if self.typical_p is not None:
            typical_filter(probe, self.typical_p)
        if self.repetition_penalty is not None:
            apply_repetition_penalty(probe, torch.zeros(1, 1, dtype=torch.long), self.repetition_penalty)

    def next_tokens(
        self, tokens: Int[Tensor, "batch seq"], logits: Float[Tensor, "batch vocab"],
        generator: torch.Generator | None = None,
    ) -> Int[Tensor, "batch"]:
        """One token per row, given the tokens so far and the model's next-token logits."""
        if self.repetition_penalty is not None:
            logits = apply_repetition_penalty(logits, tokens, self.repetition_penalty)
        for processor in self.logits_processors:
            logits = processor(tokens, logits)
        if self.temperature == 0:
            return greedy(logits)
        logits = apply_temperature(logits, self.temperature)
        if self.top_k is not None:
            logits = top_k_filter(logits, self.top_k)
        if self.top_p is not None:
            logits = top_p_filter(logits, self.top_p)
        if self.min_p is not None:
            logits = min_p_filter(logits, self.min_p)
        if self.typical_p is not None:
            logits = typical_filter(logits, self.typical_p)
        return sample(logits, generator)


def positions_from_mask(attention_mask: Int[Tensor, "batch seq"]) -> Int[Tensor, "batch seq"]:
    """Position ids that start at 0 at each row's first real token, so left padding changes nothing.

    Padding positions get 1 (they are masked out anyway), as in ``transformers``.
    """
    positions = attention_mask.long().cumsum(dim=-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


def end_token_ids(model: PreTrainedModel, eos_token_id: int | Sequence[int] | None) -> Int[Tensor, "n"]:
    """The tokens that end a sequence: ``eos_token_id``, or when it is None the model's own
    (``model.generation_config.eos_token_id``, as ``model.generate`` does); ``()`` for none."""
    if eos_token_id is None:
        eos_token_id = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos_token_id = () if eos_token_id is None else eos_token_id
    return torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), dtype=torch.long)


def _check_prompt(model: PreTrainedModel, input_ids: Tensor, max_new_tokens: int) -> None:
    """Errors that name the problem and the fix, raised before the first forward pass."""
    if model.get_output_embeddings() is None:
        raise ValueError(f"{type(model).__name__} has no language-model head, so it gives no next-token logits: "
                         "load it with AutoModelForCausalLM (utils.models.load_model does)")
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, seq] token ids, got shape {tuple(input_ids.shape)}: "
                         "for one prompt use input_ids[None] (or tokenizer(..., return_tensors='pt').input_ids)")
    if input_ids.shape[1] == 0:
        raise ValueError("empty prompt: the model needs at least one token to predict from; the course model's "
                         "documents start with the BOS token (tokenizer.bos_token_id), so start there")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    vocab = model.get_output_embeddings().weight.shape[0]
    if input_ids.min() < 0 or input_ids.max() >= vocab:
        raise ValueError(f"token ids must be in [0, {vocab}) for this model, got ids from {int(input_ids.min())} "
                         f"to {int(input_ids.max())}: were they made by another model's tokenizer?")
    context = getattr(model.config, "max_position_embeddings", None)
    if context is not None and input_ids.shape[1] + max_new_tokens > context:
        raise ValueError(f"a prompt of {input_ids.shape[1]} tokens plus max_new_tokens={max_new_tokens} does not fit "
                         f"the model's {context} positions: shorten the prompt or ask for fewer tokens")


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    input_ids: Int[Tensor, "batch prompt"],
    max_new_tokens: int,
    *,
    attention_mask: Int[Tensor, "batch prompt"] | None = None,
    decoding: Decoding = Decoding(),
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> Int[Tensor, "batch prompt_plus_new"]:
    """Continue each prompt by up to ``max_new_tokens`` tokens, with a KV cache.

    The first forward pass reads the whole prompt and returns every layer's keys and values
    (``past_key_values``); each later step feeds only the token just chosen, so a step costs one
    position, not the whole sequence. Same result as ``model.generate`` with the same settings
    (greedy token for token; sampling too, with the same ``torch.manual_seed``).

    Args:
        model: a causal language model (``transformers``, any architecture with a KV cache).
        input_ids: ``[batch, prompt]`` token ids; for prompts of different lengths pad on the *left*
            and pass ``attention_mask`` (``tokenizer(..., padding_side="left")``).
        max_new_tokens: the number of tokens to add (fewer when every row has ended).
        attention_mask: ``[batch, prompt]``, 1 for real tokens and 0 for padding; default all ones.
        decoding: greedy (the default) or sampling with filters, see :class:`Decoding`.
        eos_token_id: token(s) that end a row, after which the row gets ``pad_token_id``; default the
            model's own end token (``model.generation_config``), ``()`` to never stop early.
        pad_token_id: the filler after a row ends; default the (first) end token.
        generator: a seeded ``torch.Generator`` for reproducible sampling (default: torch's global one).

    Returns:
        ``[batch, prompt + n]`` token ids: the prompts followed by the ``n <= max_new_tokens`` new tokens.
    """
    _check_prompt(model, input_ids, max_new_tokens)
    end_ids = end_token_ids(model, eos_token_id)
    pad_token_id = pad_token_id if pad_token_id is not None else int(end_ids[0]) if len(end_ids) else 0
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids {tuple(input_ids.shape)}: "
                         "they must match")
    tokens, fed, cache = input_ids, input_ids, None                     # fed: [batch, new positions]
    ended = torch.zeros(input_ids.shape[0], dtype=torch.bool)           # [batch]
    for _ in trange(max_new_tokens, desc="generate", leave=False, disable=max_new_tokens < 64):
        positions = positions_from_mask(attention_mask)[:, -fed.shape[1]:]
        out = model(input_ids=fed, attention_mask=attention_mask, position_ids=positions,
                    past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        next_tokens = decoding.next_tokens(tokens, out.logits[:, -1].float(), generator)  # [batch]
        next_tokens = next_tokens.masked_fill(ended, pad_token_id)
        ended |= torch.isin(next_tokens, end_ids)
        fed = einops.rearrange(next_tokens, "batch -> batch 1")
        tokens = torch.cat([tokens, fed], dim=1)
        attention_mask = torch.cat([attention_mask, torch.ones_like(fed)], dim=1)
        if ended.all():
            break
    return tokens


def token_strings(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The text of every token id, ``tokenizer.decode([id])``; ``""`` for special tokens (EOS...).

    Index ``i`` of the list is token ``i``; the list has ``len(tokenizer)`` entries. Special
    tokens get ``""`` so that they never count as text (the index allows EOS on its own). A
    token that is part of a multi-byte character decodes to ``'\\ufffd'``. SentencePiece
    tokenizers drop a token's leading space in ``decode``; it is put back (``'▁the'`` -> ``' the'``).
    """
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(f"expected a transformers tokenizer, got {type(tokenizer).__name__}: "
                        "load one with utils.models.load_tokenizer(MODEL)")
    ids = list(range(len(tokenizer)))
    texts = tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    special = set(tokenizer.all_special_ids)
    strings = []
    for token_id, text, piece in zip(ids, texts, pieces):
        if token_id in special:
            text = ""
        elif isinstance(piece, str) and piece.startswith("\u2581") and not text.startswith(" "):
            text = " " + text
        strings.append(text)
    return strings


def tokens_containing(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """The ids of every token whose text (:func:`token_strings`) contains ``text``, e.g. every token with
    a newline. Special tokens have no text, so they never match."""
    return [token for token, token_text in enumerate(token_strings(tokenizer)) if text in token_text]


def generate_text(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], max_new_tokens: int, *,
    decoding: Decoding = Decoding(), stop: str | None = None, seed: int = 0,
) -> list[str]:
    """Continue each prompt with :func:`generate` and return the new text (the prompts run as one batch).

    Each prompt gets the BOS token first, as every training document did, and prompts are padded on
    the left. A row ends at the end-of-document token or, with ``stop`` (e.g. ``"\\n"``), at the first
    token containing it; the text is cut just before ``stop``. Sampling uses a ``torch.Generator``
    seeded with ``seed``.

    Returns:
        One string per prompt: its continuation, without the end token.

    Raises:
        ValueError: no prompts, an empty prompt, or one string instead of a list.
    """
    if isinstance(prompts, str):
        raise ValueError(f"prompts must be a list of strings, got one string: use [{prompts!r}]")
    if not prompts or any(prompt == "" for prompt in prompts):
        raise ValueError("empty prompt: give each prompt some text; to sample a document from scratch, call "
                         "generate(model, torch.tensor([[tokenizer.bos_token_id]]), ...) on the BOS token alone")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    rows = [[bos, *tokenizer(prompt, add_special_tokens=False)["input_ids"]] for prompt in prompts]
    width = max(map(len, rows))
    input_ids = torch.tensor([[bos] * (width - len(row)) + row for row in rows])        # [batch, width]
    attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    end_ids = [*end_token_ids(model, None).tolist(), *(tokens_containing(tokenizer, stop) if stop else [])]
    tokens = generate(model, input_ids, max_new_tokens, attention_mask=attention_mask, decoding=decoding,
                      eos_token_id=end_ids, pad_token_id=end_ids[0] if end_ids else bos,
                      generator=torch.Generator().manual_seed(seed))
    texts = []
    for row in tokens[:, width:].tolist():
        ended_at = next((i for i, token in enumerate(row) if token in end_ids), len(row))
        text = tokenizer.decode(row[: ended_at + 1], skip_special_tokens=True)   # the end token included
        texts.append(text[: text.index(stop)] if stop and stop in text else text)
    return texts

# --------------------------------------------------------------------------------------------
# Beam search


def top_beam_continuations(
    beam_scores: Float[Tensor, "beams"], log_probs: Float[Tensor, "beams vocab"], k: int,
) -> tuple[Float[Tensor, "k"], Int[Tensor, "k"], Int[Tensor, "k"]]:
    """The ``k`` best one-token extensions over all beams, best first.

    Extending beam ``b`` by token ``t`` scores ``beam_scores[b] + log_probs[b, t]`` (the log-probability
    of the whole continuation). Candidates are compared across beams, not ``k`` per beam.

    Returns:
        ``(scores, beam, token)``, each ``[k]``: the candidates' scores, the beam each extends, its token.
    """
    candidates = einops.rearrange(beam_scores, "beams -> beams 1") + log_probs    # [beams, vocab]
    scores, flat_indices = einops.rearrange(candidates, "beams vocab -> (beams vocab)").topk(k)
    vocab = log_probs.shape[-1]
    return scores, flat_indices // vocab, flat_indices % vocab


@dataclass(frozen=True)
class Hypothesis:
    """A finished beam: its tokens (prompt included) and its length-normalised score."""

    score: float
    tokens: Int[Tensor, "seq"]


@torch.no_grad()
def beam_search(
    model: PreTrainedModel,
    input_ids: Int[Tensor, "1 prompt"],
    num_beams: int,
    max_new_tokens: int,
    *,
    eos_token_id: int | Sequence[int] | None = None,
    length_penalty: float = 1.0,
) -> Int[Tensor, "1 seq"]:
    """Beam search as ``model.generate(num_beams=..., do_sample=False)`` does it, token for token.

    Keeps the ``num_beams`` most likely partial continuations. Each step scores ``2 * num_beams``
    candidates (enough that ``num_beams`` of them do not end): a candidate that ends (an end token,
    or the last step) and ranks among the first ``num_beams`` becomes a finished hypothesis scored
    ``sum of log-probabilities / new_tokens ** length_penalty``; the best ``num_beams`` that do not
    end are the next beams, and the KV cache is reordered to follow them. The search stops when
    ``num_beams`` hypotheses are finished and the best running beam cannot beat the worst of them
    (``transformers``' default ``early_stopping=False`` heuristic).

    Args:
        model: a causal language model.
        input_ids: ``[1, prompt]``: one prompt (run it once per prompt).
        num_beams: the beam width, >= 1 (1 is greedy decoding).
        max_new_tokens: the most tokens to add.
        eos_token_id: token(s) that finish a hypothesis; default the model's own, ``()`` for none.
        length_penalty: exponent of the length normalisation; > 0 favours longer hypotheses.

    Returns:
        ``[1, prompt + n]``: the prompt and the best hypothesis' new tokens (its end token included).
    """
    _check_prompt(model, input_ids, max_new_tokens)
    if input_ids.shape[0] != 1:
        raise ValueError(f"beam_search takes one prompt ([1, prompt]), got a batch of {input_ids.shape[0]}: "
                         "call it once per prompt")
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    end_ids = end_token_ids(model, eos_token_id)
    n_candidates = max(2, 1 + len(end_ids)) * num_beams
    beams = einops.repeat(input_ids[0], "seq -> beams seq", beams=num_beams)
    beam_scores = torch.full((num_beams,), -1e9)
    beam_scores[0] = 0.0                             # the beams start identical: only one of them counts
    finished: list[Hypothesis] = []
    fed, cache = beams, None
    for step in range(max_new_tokens):
        out = model(input_ids=fed, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        log_probs = out.logits[:, -1].float().log_softmax(dim=-1)        # [beams, vocab]
        scores, beam, token = top_beam_continuations(beam_scores, log_probs, n_candidates)
        ends = torch.isin(token, end_ids) | (step == max_new_tokens - 1)
        new_tokens = step + 1
        for rank in range(num_beams):
            if ends[rank]:
                tokens = torch.cat([beams[beam[rank]], token[rank : rank + 1]])
                finished.append(Hypothesis(scores[rank].item() / new_tokens**length_penalty, tokens))
        finished = sorted(finished, key=lambda hypothesis: -hypothesis.score)[:num_beams]
        keep = (~ends).nonzero()[:num_beams, 0]      # the best candidates that go on
        if len(keep) == 0:
            break
        beams = torch.cat([beams[beam[keep]], einops.rearrange(token[keep], "k -> k 1")], dim=1)
        beam_scores = scores[keep]
        cache.reorder_cache(beam[keep])
        fed = einops.rearrange(token[keep], "k -> k 1")
        best_possible = beam_scores[0].item() / new_tokens**length_penalty
        if len(finished) == num_beams and best_possible <= finished[-1].score:
            break
    return einops.rearrange(finished[0].tokens, "seq -> 1 seq")


# --------------------------------------------------------------------------------------------
# Plots


def plot_filtered_distributions(
    tokenizer: PreTrainedTokenizerBase, logits: Float[Tensor, "vocab"],
    filtered: Mapping[str, Float[Tensor, "vocab"]], top: int = 15,
) -> go.Figure:
    """Bars of the next-token probabilities before and after each filter, over the ``top`` most likely tokens.

    Args:
        tokenizer: decodes the token ids for the x axis.
        logits: ``[vocab]`` the model's next-token logits.
        filtered: ``{label: [vocab] filtered logits}``, e.g. ``{"top-k, k=5": top_k_filter(logits[None], 5)[0]}``.
        top: how many tokens to show (the most likely ones before filtering).

    Returns:
        A plotly figure with one group of bars per token and one colour per distribution.
    """
    shown = logits.topk(min(top, logits.shape[-1])).indices                      # [top]
    labels = [repr(tokenizer.decode([int(token)])) for token in shown]
    figure = go.Figure()
    for name, row in {"model (temperature 1)": logits, **filtered}.items():
        figure.add_bar(x=labels, y=row.softmax(dim=-1)[shown].tolist(), name=name)
    figure.update_layout(barmode="group", xaxis_title="next token", yaxis_title="probability",
                         title="Next-token distribution before and after each filter")
    return figure
