"""Steering with contrastive activation addition (CAA), chapter 5.

CAA (Rimsky et al. 2024) finds a behaviour's direction from multiple-choice questions answered
both ways. Each question has an option that shows the behaviour and one that does not; the
*matching* text ends with the letter of the first, the *non-matching* text with the other::

    Question: Which sentence is positive?
    (A) The cake was lovely.
    (B) The rain was awful.
    Answer: (A          <- matching        ... Answer: (B     <- non-matching

The CAA vector of a layer is the mean residual stream at the answer letter over the matching texts
minus the mean over the non-matching ones. Adding ``alpha * v`` to the residual stream at that
layer, from the last prompt position on, steers generation::

    pairs = contrastive_pairs("positive", 128)                     # balanced letters, train split
    vectors = caa_vectors(model, tokenizer, pairs)                  # [layer, d_model]
    with steer(model, layer=0, vector=unit(vectors[0]), alpha=8.0):
        texts = generate_text(model, tokenizer, story_openings("positive", 48), 40, ...)
    behaviour_rate(texts, "positive")                               # read by the generator's labeller

The same steering runs with TransformerLens (:func:`transformer_lens_steering_hooks`) and nnsight
(:func:`generate_steered_nnsight`); on the course model the three produce the same tokens.
Other ways to find a direction, directional ablation, the refusal direction and function vectors
are in :mod:`utils.directions`.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import einops
import pandas as pd
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils import architecture
from utils.batching import MEMORY_BUDGET, chunks, variants_per_pass
from utils.course_model.evaluate import encode, encode_batch
from utils.decoding import Decoding, generate_text
from utils.hooks import EditFn, capture, hooks
from utils.progress import tqdm
from utils.world import generate_corpus, label_text
from utils.world.families import multiple_choice
from utils.world.vocabulary import NAMES, TOPIC_WORDS

if TYPE_CHECKING:
    from nnsight import TransformersModel
    from transformer_lens import HookedTransformer

Split = Literal["train", "test"]
LETTERS = ("A", "B")
#: Seeds of the held-out split are this far from the training seeds, so the two never share a question.
TEST_SEED_OFFSET = 7_919


# --------------------------------------------------------------------------------------------
# 1. Behaviours and contrastive data


@dataclass(frozen=True)
class Behaviour:
    """A behaviour to steer toward: the generator's ``trait`` (as the labeller reads it) taking ``value``."""

    name: str
    trait: Literal["sentiment", "emotion", "topic"]
    value: str


BEHAVIOURS: dict[str, Behaviour] = {
    "positive": Behaviour("positive", "sentiment", "positive"),
    "anger": Behaviour("anger", "emotion", "anger"),
    "wedding": Behaviour("wedding", "topic", "wedding"),
}


def behaviour(name: str) -> Behaviour:
    """The :class:`Behaviour` called ``name``, or a ``ValueError`` listing the known ones."""
    if name not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {name!r}: use one of {sorted(BEHAVIOURS)}")
    return BEHAVIOURS[name]


@dataclass(frozen=True)
class ContrastivePair:
    """One multiple-choice question answered both ways.

    ``question`` ends with ``"Answer: ("``; ``matching`` is the letter of the option that shows the
    behaviour, ``non_matching`` the other one.
    """

    question: str
    matching: str
    non_matching: str
    behaviour: str

    @property
    def matching_text(self) -> str:
        return self.question + self.matching

    @property
    def non_matching_text(self) -> str:
        return self.question + self.non_matching


def contrastive_pairs(name: str, n: int, split: Split = "train", seed: int = 0) -> list[ContrastivePair]:
    """``n`` contrastive pairs for behaviour ``name``, half with the matching answer ``A``, half ``B``.

    The ``"test"`` split draws from other seeds and drops any question of the training split of the
    same ``seed`` (up to ``4 n`` questions), so held-out results are on questions never used to build
    a vector.
    """
    wanted = behaviour(name)
    if n < 2 or n % 2:
        raise ValueError(f"n must be an even number >= 2 (half the matching answers are A, half B), got {n}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    train_questions = set() if split == "train" else {p.question for p in contrastive_pairs(name, 4 * n, "train", seed)}
    rng = random.Random(seed + (TEST_SEED_OFFSET if split == "test" else 0))
    pairs: list[ContrastivePair] = []
    while len(pairs) < n:
        letter = LETTERS[len(pairs) % 2]
        document = multiple_choice(rng, trait=wanted.trait, value=wanted.value, correct_letter=letter)
        question = document.prompt + " ("
        if question in train_questions:
            continue
        pairs.append(ContrastivePair(question, letter, LETTERS[1 - LETTERS.index(letter)], name))
    return pairs


def check_pairs(pairs: Sequence[ContrastivePair]) -> None:
    """Raise a ``ValueError`` naming the problem if ``pairs`` cannot make a fair CAA vector.

    Fair: at least two pairs, one behaviour, both texts of every pair present and different, and as
    many matching answers ``A`` as ``B``. With unbalanced letters the mean difference would carry
    "answer A" as much as the behaviour.
    """
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 contrastive pairs, got {len(pairs)}")
    for index, pair in enumerate(pairs):
        if not isinstance(pair, ContrastivePair):
            raise ValueError(f"pair {index} is a {type(pair).__name__}, not a ContrastivePair")
        if not pair.question or not pair.matching or not pair.non_matching:
            raise ValueError(f"pair {index} is missing its question, matching or non-matching answer: {pair}")
        if pair.matching == pair.non_matching:
            raise ValueError(f"pair {index} has the same matching and non-matching answer ({pair.matching!r})")
    names = {pair.behaviour for pair in pairs}
    if len(names) > 1:
        raise ValueError(f"pairs mix behaviours {sorted(names)}: build one vector per behaviour")
    letters = Counter(pair.matching for pair in pairs)
    if len(set(letters.values())) > 1 or len(letters) < 2:
        raise ValueError(f"unbalanced answer letters {dict(sorted(letters.items()))}: the matching answer must be "
                         "each letter equally often (contrastive_pairs(name, n) balances them)")


# --------------------------------------------------------------------------------------------
# 2. Activations at the answer letter, and the CAA vector


@torch.no_grad()
def last_token_activations(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                           layers: Sequence[int] | None = None, batch_size: int = 32
                           ) -> Float[Tensor, "layer n d_model"]:
    """The residual stream after each of ``layers`` (all by default) at each text's last token.

    Texts get a BOS token first, as in training, and run in right-padded batches (padding after
    the last token changes nothing before it under the causal mask).
    """
    layers = list(range(architecture.n_layers(model))) if layers is None else [
        architecture.check_layer(model, layer) for layer in layers]
    sites = [f"resid_post.{layer}" for layer in layers]
    chunks = []
    for start in range(0, len(texts), batch_size):
        input_ids, attention_mask, last = encode_batch(tokenizer, texts[start:start + batch_size])
        captured = capture(model, input_ids, sites, attention_mask=attention_mask)
        rows = torch.arange(len(last))
        chunks.append(torch.stack([captured[site][rows, last] for site in sites]))     # [layer, chunk, d_model]
    return torch.cat(chunks, dim=1)


def caa_vectors(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[ContrastivePair]
                ) -> Float[Tensor, "layer d_model"]:
    """The CAA vector of every layer: mean activation at the matching letter minus at the non-matching one."""
    check_pairs(pairs)
    matching = last_token_activations(model, tokenizer, [p.matching_text for p in pairs])
    non_matching = last_token_activations(model, tokenizer, [p.non_matching_text for p in pairs])
    return matching.mean(dim=1) - non_matching.mean(dim=1)


def caa_vector(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[ContrastivePair],
               layer: int) -> Float[Tensor, "d_model"]:
    """Reference for Exercise 5.1: the CAA vector of one layer."""
    matching = last_token_activations(model, tokenizer, [p.matching_text for p in pairs], [layer])[0]
    non_matching = last_token_activations(model, tokenizer, [p.non_matching_text for p in pairs], [layer])[0]
    return matching.mean(dim=0) - non_matching.mean(dim=0)


def unit(vector: Float[Tensor, "d_model"]) -> Float[Tensor, "d_model"]:
    """``vector`` scaled to norm 1 (then ``alpha`` is the norm of what steering adds)."""
    norm = vector.norm()
    if norm == 0:
        raise ValueError("a zero vector has no direction: check the contrastive data that made it")
    return vector / norm


# --------------------------------------------------------------------------------------------
# 3. Steering with hooks, TransformerLens and nnsight


def _depth_and_width(model: Any) -> tuple[int, int]:
    """``(n_layers, d_model)`` of a ``transformers``, nnsight or TransformerLens model."""
    config = getattr(model, "cfg", None)                # a HookedTransformer
    if config is not None:
        return config.n_layers, config.d_model
    return architecture.n_layers(model), architecture.d_model(model)


def check_steering(model: Any, layer: int, vector: Tensor, alpha: float) -> int:
    """Validate a steering request before any forward pass; return ``layer`` as a non-negative index."""
    n_layers, d_model = _depth_and_width(model)
    if not isinstance(layer, int) or not -n_layers <= layer < n_layers:
        raise ValueError(f"layer {layer!r} does not exist: this model has {n_layers} layers, numbered 0 to "
                         f"{n_layers - 1} (negative numbers count from the end)")
    layer %= n_layers
    if not isinstance(vector, Tensor) or vector.shape != (d_model,):
        shape = tuple(vector.shape) if isinstance(vector, Tensor) else type(vector).__name__
        raise ValueError(f"the steering vector must be a tensor of shape ({d_model},) (this model's d_model), got "
                         f"{shape}: take one layer's vector, e.g. vectors[layer]")
    if not torch.isfinite(vector).all():
        raise ValueError("the steering vector has NaN or infinite entries: rebuild it from the contrastive data")
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    return layer


def add_steering(residual: Float[Tensor, "batch pos d_model"], vector: Float[Tensor, "d_model"], alpha: float
                 ) -> Float[Tensor, "batch pos d_model"]:
    """Reference for Exercise 5.2: add ``alpha * vector`` from the last prompt position on.

    Generation with a KV cache runs the prompt once (``pos > 1``), then one new position at a time
    (``pos == 1``). The prompt's last position predicts the first new token, so it is steered; the
    earlier prompt positions are not. A new position, the only one of its pass, is its last: it is
    always steered. The input is not modified.
    """
    steered = residual.clone()
    steered[:, -1] += alpha * vector
    return steered


def steering_edit(vector: Float[Tensor, "d_model"], alpha: float) -> EditFn:
    """The :func:`utils.hooks.hooks` edit that steers with ``alpha * vector`` (see :func:`add_steering`)."""
    return lambda residual: add_steering(residual, vector.to(residual.dtype), alpha)


@contextlib.contextmanager
def steer(model: PreTrainedModel, layer: int, vector: Float[Tensor, "d_model"], alpha: float
          ) -> Iterator[PreTrainedModel]:
    """Inside the ``with`` block, the model adds ``alpha * vector`` after block ``layer`` (see :func:`add_steering`)."""
    layer = check_steering(model, layer, vector, alpha)
    with hooks(model, {f"resid_post.{layer}": steering_edit(vector, alpha)}):
        yield model


def transformer_lens_steering_hooks(tl_model: HookedTransformer, layer: int, vector: Float[Tensor, "d_model"],
                                    alpha: float) -> list[tuple[str, Callable[..., Tensor]]]:
    """:func:`steer` for TransformerLens: ``fwd_hooks`` on ``blocks.{layer}.hook_resid_post``.

    Use with ``with tl_model.hooks(fwd_hooks=...): tl_model.generate(...)`` or ``run_with_hooks``.
    """
    layer = check_steering(tl_model, layer, vector, alpha)
    return [(f"blocks.{layer}.hook_resid_post", lambda residual, hook: add_steering(residual, vector, alpha))]


@torch.no_grad()
def generate_steered_transformer_lens(tl_model: HookedTransformer, input_ids: Int[Tensor, "batch pos"], layer: int,
                                      vector: Float[Tensor, "d_model"], alpha: float, max_new_tokens: int
                                      ) -> Int[Tensor, "batch new"]:
    """Greedy steered generation with TransformerLens (KV cache on), exactly ``max_new_tokens`` of them (no stop
    at the end-of-text token); returns only the new tokens."""
    with tl_model.hooks(fwd_hooks=transformer_lens_steering_hooks(tl_model, layer, vector, alpha)):
        tokens = tl_model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False, stop_at_eos=False,
                                   use_past_kv_cache=True, verbose=False, prepend_bos=False)
    return tokens[:, input_ids.shape[1]:]


def generate_steered_nnsight(nn_model: TransformersModel, input_ids: Int[Tensor, "batch pos"], layer: int,
                             vector: Float[Tensor, "d_model"], alpha: float, max_new_tokens: int
                             ) -> Int[Tensor, "batch new"]:
    """Greedy steered generation with nnsight: one ``generate`` trace, edited at every step.

    Step 0 runs the prompt: only its last position is steered. Each later step runs one new
    position, which is steered (the rule of :func:`add_steering`). Exactly ``max_new_tokens`` are
    generated (no stop at the end-of-text token): the loop over ``tracer.iter`` expects every step.
    """
    layer = check_steering(nn_model, layer, vector, alpha)
    block = architecture.blocks(nn_model)[layer]
    pad = architecture.unwrap(nn_model).config.eos_token_id
    with torch.no_grad(), nn_model.generate(input_ids, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                                            do_sample=False, pad_token_id=pad) as tracer:
        for step in tracer.iter[:max_new_tokens]:
            if step == 0:
                block.output[:, -1] += alpha * vector
            else:
                block.output[:] += alpha * vector
        tokens = tracer.result.save()
    return tokens[:, input_ids.shape[1]:]


# --------------------------------------------------------------------------------------------
# 4. Evaluation: behaviour rates, A/B probabilities, side effects


def story_openings(name: str, n: int, seed: int = 0) -> list[str]:
    """``n`` held-out story openings that leave behaviour ``name``'s variable open.

    For sentiment and emotion: ``"One day, Mary went to the chapel."`` (the place fixes the topic,
    nothing fixes the sentiment or the emotion). For a topic: ``"One day, Mary"`` (no place yet).
    """
    wanted = behaviour(name)
    rng = random.Random(10_007 + seed)
    openers = ("One day, ", "Early one morning, ", "Last week, ")
    places = [place for words in TOPIC_WORDS.values() for place in words.places]
    openings = []
    for _ in range(n):
        start = rng.choice(openers) + rng.choice(sorted(NAMES))
        openings.append(start if wanted.trait == "topic" else f"{start} went to the {rng.choice(places)}.")
    return openings


def behaviour_rate(texts: Sequence[str], name: str) -> float:
    """The share of ``texts`` the generator's labeller reads as showing behaviour ``name``."""
    wanted = behaviour(name)
    if not texts:
        raise ValueError("no texts to score")
    return sum(getattr(label_text(text), wanted.trait) == wanted.value for text in texts) / len(texts)


def off_target_rates(texts: Sequence[str]) -> dict[str, float]:
    """The share of ``texts`` read as each behaviour of :data:`BEHAVIOURS` (steering one should not move the others)."""
    return {name: behaviour_rate(texts, name) for name in BEHAVIOURS}


def steered_texts(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], layer: int,
                  vector: Float[Tensor, "d_model"], alpha: float, max_new_tokens: int = 40, seed: int = 0,
                  decoding: Decoding = Decoding(temperature=1.0)) -> list[str]:
    """Continuations of ``prompts`` sampled with steering (``alpha=0``: unsteered), one batch."""
    with steer(model, layer, vector, alpha):
        return generate_text(model, tokenizer, list(prompts), max_new_tokens, decoding=decoding, seed=seed)


def steered_rates(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], name: str,
                  settings: Sequence[tuple[int, Float[Tensor, "d_model"], float]], max_new_tokens: int = 40,
                  seed: int = 0, decoding: Decoding = Decoding(temperature=1.0),
                  memory_budget: int = MEMORY_BUDGET,
                  rate: Callable[[Sequence[str], str], float] | None = None) -> list[float]:
    """``rate`` (:func:`behaviour_rate`; the lab passes the learner's) toward ``name`` of continuations of
    ``prompts``, one rate per steering setting ``(layer, vector, alpha)`` of ``settings`` (``alpha=0``: unsteered).

    The settings generate side by side in the batch (:func:`steering_variants`), as many per generation
    as fit ``memory_budget`` bytes, so a sweep costs a few batched generations instead of one per setting.
    Greedy, each rate is that of :func:`steered_texts` alone; sampled, each setting draws other random
    numbers than it would alone (the batch has another size), so the rates differ by sampling noise only.
    """
    prompts, rate = list(prompts), rate or behaviour_rate
    longest = max(len(encode(tokenizer, prompt)) for prompt in prompts) + max_new_tokens
    per_pass = variants_per_pass(model, len(prompts), longest, memory_budget)
    rates = []
    for chunk in chunks(len(settings), per_pass):
        part = [settings[i] for i in chunk]
        with steering_variants(model, part, len(prompts)):
            texts = generate_text(model, tokenizer, prompts * len(part), max_new_tokens, decoding=decoding, seed=seed)
        rates += [rate(texts[v * len(prompts):(v + 1) * len(prompts)], name) for v in range(len(part))]
    return rates


@torch.no_grad()
def matching_probabilities(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                           pairs: Sequence[ContrastivePair]) -> Float[Tensor, "n"]:
    """The probability of each question's matching letter, renormalised over ``A`` and ``B``."""
    input_ids, attention_mask, last = encode_batch(tokenizer, [p.question for p in pairs])
    logits = model(input_ids, attention_mask=attention_mask).logits[torch.arange(len(pairs)), last]   # [n, vocab]
    letter_ids = [tokenizer(letter, add_special_tokens=False)["input_ids"][0] for letter in LETTERS]
    letter_probabilities = logits[:, letter_ids].softmax(dim=-1)                                   # [n, 2]
    matching = torch.tensor([LETTERS.index(p.matching) for p in pairs])
    return letter_probabilities[torch.arange(len(pairs)), matching]


def matching_probability(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                         pairs: Sequence[ContrastivePair]) -> float:
    """Mean probability of the matching letter, renormalised over ``A`` and ``B``, after each question.

    Run it inside :func:`steer` to measure the A/B shift of a steering vector.
    """
    return matching_probabilities(model, tokenizer, pairs).mean().item()


def neutral_texts(n: int = 64, seed: int = 3) -> list[str]:
    """Held-out corpus documents with no story in them (facts, agreement, sequences...): where steering is a side effect."""
    documents = generate_corpus(8 * n, seed=10_000 + seed)
    return [doc.text for doc in documents if doc.family not in ("story", "multiple_choice", "ioi")][:n]


@torch.no_grad()
def token_loss_sums(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]
                    ) -> tuple[Float[Tensor, "n"], Int[Tensor, "n"]]:
    """Each text's summed next-token loss (nats) and its number of predicted tokens (BOS first, right-padded batch)."""
    input_ids, attention_mask, _ = encode_batch(tokenizer, texts)
    logits = model(input_ids, attention_mask=attention_mask).logits[:, :-1]
    losses = F.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")       # [n, pos - 1]
    mask = attention_mask[:, 1:]
    return (losses * mask).sum(dim=1), mask.sum(dim=1)


def mean_token_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> float:
    """Mean next-token loss (nats) over every token of ``texts`` (BOS first, right-padded batch)."""
    sums, counts = token_loss_sums(model, tokenizer, texts)
    return (sums.sum() / counts.sum()).item()


def neutral_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], layer: int,
                 vector: Float[Tensor, "d_model"], alpha: float) -> float:
    """:func:`mean_token_loss` on ``texts`` with ``alpha * vector`` added at *every* position after ``layer``."""
    layer = check_steering(model, layer, vector, alpha)
    with hooks(model, {f"resid_post.{layer}": lambda residual: residual + alpha * vector}):
        return mean_token_loss(model, tokenizer, texts)


def fluency_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                 continuations: Sequence[str]) -> float:
    """The unsteered model's mean loss (nats/token) on each prompt + continuation: low means fluent text."""
    return mean_token_loss(model, tokenizer, [p + c for p, c in zip(prompts, continuations)])


def add_per_variant(residual: Float[Tensor, "batch pos d_model"], added: Float[Tensor, "variant d_model"],
                    everywhere: bool = False) -> Float[Tensor, "batch pos d_model"]:
    """Reference for Exercise 5.13: the batch holds ``len(added)`` variants of the same prompts, variant by
    variant (``[variant * n, pos]``); add ``added[v]`` to every row of variant ``v``, at the last position (as
    :func:`add_steering` does, on a prompt pass and on a generation step alike) or, with ``everywhere``, at every
    position. Returns a new tensor."""
    if len(residual) % len(added):
        raise ValueError(f"a batch of {len(residual)} rows does not split into {len(added)} variants: repeat the "
                         "prompts once per variant")
    per_row = einops.repeat(added, "variant d -> (variant n) d", n=len(residual) // len(added))      # [batch, d_model]
    if everywhere:
        return residual + per_row[:, None]
    steered = residual.clone()
    steered[:, -1] += per_row
    return steered


@contextlib.contextmanager
def steering_variants(model: PreTrainedModel, settings: Sequence[tuple[int, Float[Tensor, "d_model"], float]],
                      n_prompts: int, everywhere: bool = False) -> Iterator[PreTrainedModel]:
    """Inside the ``with`` block, the batch holds ``len(settings)`` variants of ``n_prompts`` prompts, variant
    by variant (``[variant * n_prompts, pos]``), and variant ``v`` is steered by ``alpha * vector`` after block
    ``layer``, where ``settings[v] = (layer, vector, alpha)``.

    As in :func:`steer`, steering starts at the last prompt position (:func:`add_steering`); with
    ``everywhere`` it is added at every position, as in :func:`neutral_loss`. One forward pass (or one
    generation) then runs every setting of a sweep.
    """
    layers = [check_steering(model, layer, vector, alpha) for layer, vector, alpha in settings]
    rows = len(settings) * n_prompts

    def edit_for(layer: int) -> EditFn:
        added = torch.stack([alpha * vector if at == layer else torch.zeros_like(vector)
                             for at, (_, vector, alpha) in zip(layers, settings)])           # [variant, d_model]

        def add(residual: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
            if len(residual) != rows:
                raise ValueError(f"steering_variants expects {len(settings)} variants x {n_prompts} prompts = {rows} "
                                 f"rows, got a batch of {len(residual)}: repeat the prompts once per setting")
            return add_per_variant(residual, added.to(residual.dtype), everywhere)
        return add

    with hooks(model, {f"resid_post.{layer}": edit_for(layer) for layer in sorted(set(layers))}):
        yield model


def _mean_per_variant(values: Float[Tensor, "rows"], n_variants: int) -> list[float]:
    return einops.reduce(values, "(variant n) -> variant", "mean", variant=n_variants).tolist()


def _loss_per_variant(sums: Float[Tensor, "rows"], counts: Int[Tensor, "rows"], n_variants: int) -> list[float]:
    """Mean loss per token of each variant's texts, from :func:`token_loss_sums` of all of them."""
    def total(values: Tensor) -> Tensor:
        return einops.reduce(values.float(), "(variant n) -> variant", "sum", variant=n_variants)
    return (total(sums) / total(counts)).tolist()


def _sweep_chunk(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str,
                 settings: list[tuple[int, Tensor, float]], openings: list[str], questions: list[ContrastivePair],
                 neutral: list[str], max_new_tokens: int, seed: int) -> list[dict[str, float]]:
    """The measurements of :func:`steering_sweep` for each setting of ``settings``, all in one batch each."""
    n_variants = len(settings)
    with steering_variants(model, settings, len(openings)):
        texts = generate_text(model, tokenizer, openings * n_variants, max_new_tokens,
                              decoding=Decoding(temperature=1.0), seed=seed)
    with steering_variants(model, settings, len(questions)):
        ab = _mean_per_variant(matching_probabilities(model, tokenizer, questions * n_variants), n_variants)
    with steering_variants(model, settings, len(neutral), everywhere=True):
        neutral_losses = _loss_per_variant(*token_loss_sums(model, tokenizer, neutral * n_variants), n_variants)
    steered = [p + t for p, t in zip(openings * n_variants, texts)]
    fluency_losses = _loss_per_variant(*token_loss_sums(model, tokenizer, steered), n_variants)   # unsteered model
    rows = []
    for v, (layer, _, alpha) in enumerate(settings):
        own = texts[v * len(openings):(v + 1) * len(openings)]
        rows.append({"layer": layer, "alpha": alpha, "behaviour": behaviour_rate(own, name),
                     **{f"rate {other}": rate for other, rate in off_target_rates(own).items() if other != name},
                     "ab_probability": ab[v], "neutral_loss": neutral_losses[v], "fluency_loss": fluency_losses[v]})
    return rows


def sweep_settings(vectors: Float[Tensor, "layer d_model"], alphas: Sequence[float]
                   ) -> list[tuple[int, Float[Tensor, "d_model"], float]]:
    """Reference for Exercise 5.3: every ``(layer, unit vector of that layer, alpha)``, layer by layer, the
    strengths in the order given within each layer."""
    return [(layer, unit(vectors[layer]), float(alpha)) for layer in range(len(vectors)) for alpha in alphas]


#: How :func:`steering_sweep` lays out its grid (the lab passes the learner's).
SweepSettings = Callable[[Tensor, Sequence[float]], list[tuple[int, Tensor, float]]]


def steering_sweep(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str,
                   vectors: Float[Tensor, "layer d_model"], alphas: Sequence[float], *, n_openings: int = 48,
                   n_questions: int = 64, n_neutral: int = 64, max_new_tokens: int = 40, seed: int = 0,
                   layers: Sequence[int] | None = None, memory_budget: int = MEMORY_BUDGET,
                   settings: SweepSettings = sweep_settings) -> pd.DataFrame:
    """Steer toward behaviour ``name`` with the unit vector of each layer and each ``alpha``, and measure.

    One row per ``(layer, alpha)``: the behaviour rate of sampled continuations of held-out openings
    (``behaviour``), the other behaviours' rates, the matching-letter probability on held-out
    questions (``ab_probability``), the loss on neutral text with the vector added everywhere
    (``neutral_loss``, on ``n_neutral`` texts) and the unsteered model's loss on the steered texts
    (``fluency_loss``). ``alpha=0`` is the unsteered baseline. ``layers`` keeps the grid's settings at those
    layers only (every layer by default; a deep model's sweep can take a few).

    The settings run side by side in the batch (:func:`steering_variants`), as many per pass as fit
    ``memory_budget`` bytes. Greedy or not, each setting's numbers are those of running it alone; only
    the sampled continuations differ, because a batch of another size draws other random numbers.
    """
    openings = story_openings(name, n_openings, seed)
    questions = contrastive_pairs(name, n_questions, "test", seed)
    neutral = neutral_texts(n_neutral)
    grid = [setting for setting in settings(vectors, alphas) if layers is None or setting[0] in layers]
    longest = max(len(encode(tokenizer, text)) for text in neutral) + 1
    per_pass = variants_per_pass(model, max(len(openings), len(neutral)), longest, memory_budget,
                                 logit_positions=longest)
    rows = []
    with tqdm(total=len(grid), desc=f"steering toward {name}", unit="setting") as progress:
        for chunk in chunks(len(grid), per_pass):
            rows += _sweep_chunk(model, tokenizer, name, [grid[i] for i in chunk], openings, questions, neutral,
                                 max_new_tokens, seed)
            progress.update(len(chunk))
    return pd.DataFrame(rows)


def plot_sweep(sweep: pd.DataFrame, column: str, title: str) -> go.Figure:
    """A layer × alpha heatmap of one column of :func:`steering_sweep`, values written in the cells."""
    table = sweep.pivot(index="layer", columns="alpha", values=column)
    figure = go.Figure(go.Heatmap(
        z=table.values, x=[f"α={a:g}" for a in table.columns], y=[f"layer {l}" for l in table.index],
        colorscale="Viridis", text=table.values.round(2), texttemplate="%{text}",
        hovertemplate="%{y}, %{x}: %{z:.3f}<extra></extra>"))
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(title=title, height=320, width=620)
    return figure


# --------------------------------------------------------------------------------------------
# Exercises 5.1 and 5.2: the checkers
