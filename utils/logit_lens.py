"""The logit lens, direct logit attribution and SVD directions (chapter 4).

The residual stream is a sum: the embeddings, then what every attention layer and MLP adds. The
model reads its prediction from the *last* value of that sum, through the final norm and the
unembedding. The logit lens (nostalgebraist, 2020) reads every intermediate value the same way::

    residual = residual_stack(model, input_ids)        # [n_layers + 1, batch, pos, d_model]
    logits = logit_lens(model, residual)               # [n_layers + 1, batch, pos, vocab]
    torch.allclose(logits[-1], model(input_ids).logits, atol=1e-4)   # the last layer is the model

Layer ``l`` of the *residual stack* is the stream after ``l`` blocks: ``0`` is the embeddings
(``resid_pre.0``), ``l`` is ``resid_post.{l-1}``, and ``n_layers`` is what the final norm reads.

Direct logit attribution splits the final logit difference ``logit[answer] - logit[contrast]``
into one term per component that writes to the stream (embeddings, each attention head, each
attention bias, each MLP), freezing the final norm's scale at its value in the real forward pass;
the terms sum to the model's logit difference (``tests/test_logit_lens.py`` checks it to 1e-4)::

    attribution = direct_logit_attribution(model, tokens.input_ids, tokens.answer_ids, tokens.contrast_ids,
                                           position=tokens.positions)
    attribution.contributions.sum(0)  ==  attribution.logit_difference

The same functions run on GPT-2 (LayerNorm with a bias), GPT-NeoX/Pythia (LayerNorm, parallel
attention and MLP, rotary positions) and Llama (RMSNorm, grouped-query attention, untied
unembedding): ``utils.architecture`` finds the parts. The tuned lens lives in ``utils.tuned_lens``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import einops
import plotly.express as px
import plotly.graph_objects as go
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.pytorch_utils import Conv1D

from utils import architecture
from utils.course_model.evaluate import encode, encode_batch
from utils.hooks import ATTENTION_OUTPUT_PROJECTION, capture, editing_head_outputs
from utils.models import tiny_random_model
from utils.world import eval_set
from utils.world.families import FACT_PHRASINGS, FACT_RELATIONS, all_facts

#: Per architecture: the attention module's input projection holding the values, and the MLP's output projection.
VALUE_PROJECTION = {"gpt2": "attn.c_attn", "gpt_neox": "attention.query_key_value", "llama": "self_attn.v_proj"}
MLP_OUTPUT_PROJECTION = {"gpt2": "mlp.c_proj", "gpt_neox": "mlp.dense_4h_to_h", "llama": "mlp.down_proj"}
#: The label of the constant the final norm's bias and the unembedding's bias add to the logit difference.
FINAL_BIAS = "final biases"


# --------------------------------------------------------------------------------------------
# 1. The final norm and the unembedding


def final_norm(model: Any) -> nn.Module:
    """The model's final norm, checked: a ``LayerNorm`` (GPT-2, Pythia) or an ``RMSNorm`` (Llama).

    Raises a ``ValueError`` naming the module path and the model type when the norm is missing or is
    something else (e.g. replaced by ``nn.Identity``), since the lens would then silently skip it.
    """
    model_type = architecture.model_type(model)
    path = architecture.layout(model).final_norm
    norm = architecture.final_norm(model)   # a ValueError naming the path when it is missing
    if not is_layer_norm(norm) and not type(norm).__name__.endswith("RMSNorm"):
        raise ValueError(
            f"{path} of this {model_type} model is {type(norm).__name__}, not a LayerNorm or RMSNorm: the logit "
            "lens must apply the norm the model applies before its unembedding; load an unmodified model with "
            "utils.load_model(MODEL)")
    return norm


def is_layer_norm(norm: nn.Module) -> bool:
    """Whether ``norm`` is a LayerNorm (subtracts the mean, then divides; has a bias) rather than an RMSNorm (only divides)."""
    return isinstance(norm, nn.LayerNorm)


def norm_scale(norm: nn.Module, residual: Float[Tensor, "... d_model"]) -> Float[Tensor, "... 1"]:
    """What ``norm`` divides ``residual`` by: ``sqrt(var + eps)`` for a LayerNorm, ``sqrt(mean(x²) + eps)`` for an RMSNorm.

    The norm computes ``(x - mean(x)) / scale * weight + bias`` (LayerNorm) or ``x / scale * weight`` (RMSNorm).
    """
    if is_layer_norm(norm):
        return (residual.var(dim=-1, keepdim=True, unbiased=False) + norm.eps).sqrt()
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    return (residual.pow(2).mean(dim=-1, keepdim=True) + eps).sqrt()


def unembedding_matrix(model: Any) -> Float[Tensor, "vocab d_model"]:
    """The unembedding's weight ``W_U`` (row ``t`` is the direction that raises token ``t``'s logit)."""
    return architecture.unembedding(model).weight


def unembedding_bias(model: Any) -> Float[Tensor, "vocab"]:
    """The unembedding's bias (zeros for GPT-2, Pythia and Llama, whose ``lm_head`` has none)."""
    head = architecture.unembedding(model)
    return head.bias if head.bias is not None else torch.zeros(head.weight.shape[0], dtype=head.weight.dtype)


# --------------------------------------------------------------------------------------------
# 2. The residual stack and the lens


def residual_stack(model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"]
                   ) -> Float[Tensor, "layer_plus_one batch pos d_model"]:
    """The residual stream after 0, 1, ..., ``n_layers`` blocks, captured with hooks in one forward pass.

    Index 0 is the embeddings (``resid_pre.0``), index ``l`` the output of block ``l - 1``
    (``resid_post.{l-1}``); the last one is the input of the final norm. (Not ``output_hidden_states``:
    for GPT-2, ``transformers`` puts the output of the final norm in its last entry.)
    """
    n = architecture.n_layers(model)
    sites = ["resid_pre.0", *(f"resid_post.{layer}" for layer in range(n))]
    acts = capture(model, input_ids, sites)
    return torch.stack([acts[site] for site in sites])


def layer_labels(n_layers: int) -> list[str]:
    """The sites of the residual stack's layers: ``["resid_pre.0", "resid_post.0", ..., "resid_post.{n-1}"]``."""
    return ["resid_pre.0", *(f"resid_post.{layer}" for layer in range(n_layers))]


def check_stack_layer(model: Any, layer: int) -> int:
    """``layer`` as an index of the residual stack (0 to ``n_layers``), or a ``ValueError`` naming the range."""
    count = architecture.n_layers(model) + 1
    if not isinstance(layer, int) or not -count <= layer < count:
        raise ValueError(f"layer {layer!r} is not in the residual stack: it has {count} entries, 0 (the embeddings) "
                         f"to {count - 1} (after the last block); negative numbers count from the end")
    return layer % count


def logit_lens(model: Any, residual: Float[Tensor, "... d_model"]) -> Float[Tensor, "... vocab"]:
    """Decode any residual stream the way the model decodes its last one: final norm, then unembedding (with its bias).

    ``residual`` may have any leading dimensions, e.g. the whole ``[layer_plus_one, batch, pos, d_model]`` stack.
    """
    width = architecture.d_model(model)
    if residual.shape[-1] != width:
        raise ValueError(f"residual has shape {tuple(residual.shape)}, but its last dimension must be d_model = {width} "
                         "(pass residual_stack(model, input_ids) or a slice of it that keeps the last dimension)")
    return architecture.unembedding(model)(final_norm(model)(residual))


def logit_lens_layer(model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"], layer: int
                     ) -> Float[Tensor, "batch pos vocab"]:
    """The logit lens after ``layer`` blocks (0 = the embeddings, ``n_layers`` = the model's own logits)."""
    layer = check_stack_layer(model, layer)
    return logit_lens(model, residual_stack(model, input_ids)[layer])


def check_positions(position: int | Int[Tensor, "batch"], batch: int, pos: int) -> Int[Tensor, "batch"]:
    """One position per row as a tensor of non-negative indices; a ``ValueError`` naming the valid range otherwise.

    ``position`` is one index for every row (negative counts from the end) or a tensor of ``batch`` indices
    (e.g. the last real token of each right-padded prompt).
    """
    if isinstance(position, int):
        if not -pos <= position < pos:
            raise ValueError(f"position {position} is outside the prompt: it has {pos} tokens, positions 0 to "
                             f"{pos - 1} (or -{pos} to -1 from the end)")
        return torch.full((batch,), position % pos)
    position = torch.as_tensor(position)
    if position.shape != (batch,):
        raise ValueError(f"position has shape {tuple(position.shape)}: give one int, or one index per row "
                         f"(shape ({batch},))")
    if bool(((position < 0) | (position >= pos)).any()):
        raise ValueError(f"position {position.tolist()} is outside the prompt: each index must be in 0 to {pos - 1}")
    return position.long()


def at_positions(tensor: Float[Tensor, "*layer batch pos d"], position: int | Int[Tensor, "batch"]
                 ) -> Float[Tensor, "*layer batch d"]:
    """``tensor[..., row, position[row], :]`` for each row: one position per row of a ``[..., batch, pos, d]`` tensor."""
    batch, pos = tensor.shape[-3:-1]
    rows, cols = torch.arange(batch), check_positions(position, batch, pos)
    return tensor[..., rows, cols, :]


# --------------------------------------------------------------------------------------------
# 3. Exercise 4.2: the logit lens at one position


def logit_lens_at_position(model: PreTrainedModel, residual: Float[Tensor, "layer_plus_one batch pos d_model"],
                           position: int) -> Float[Tensor, "layer_plus_one batch vocab"]:
    """Reference for Exercise 4.2: every layer's residual stream at ``position``, through the final norm and the unembedding."""
    at_position = residual[:, :, position]                             # [layer_plus_one, batch, d_model]
    normalised = architecture.final_norm(model)(at_position)           # LayerNorm (GPT-2, Pythia) or RMSNorm (Llama)
    return architecture.unembedding(model)(normalised)                 # [layer_plus_one, batch, vocab]


def _perturbed_final_norm(model: PreTrainedModel, seed: int) -> PreTrainedModel:
    """``model`` with random final-norm weight and bias (a fresh random model has 1 and 0: mistakes would not show)."""
    generator = torch.Generator().manual_seed(seed)
    norm = architecture.final_norm(model)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.5 * torch.randn(norm.weight.shape, generator=generator))
        if getattr(norm, "bias", None) is not None:
            norm.bias.copy_(0.5 * torch.randn(norm.bias.shape, generator=generator))
    return model


def _with_unembedding_bias(model: PreTrainedModel, seed: int) -> PreTrainedModel:
    """``model`` whose unembedding gets a random bias, as GPT-J's and Phi's have."""
    generator = torch.Generator().manual_seed(seed)
    head = architecture.unembedding(model)
    biased = nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.copy_(torch.randn(head.out_features, generator=generator))
    model.set_output_embeddings(biased)
    return model


def checker_models() -> dict[str, PreTrainedModel]:
    """Tiny random models of the other families, with norms and biases that make the classic mistakes visible."""
    return {
        "tiny random Pythia (GPT-NeoX) with a trained-looking final LayerNorm":
            _perturbed_final_norm(tiny_random_model("gpt_neox"), seed=1),
        "tiny random Llama (RMSNorm, untied unembedding)": _perturbed_final_norm(tiny_random_model("llama"), seed=2),
        "tiny random GPT-2 whose unembedding has a bias":
            _with_unembedding_bias(_perturbed_final_norm(tiny_random_model("gpt2"), seed=3), seed=4),
    }


# --------------------------------------------------------------------------------------------
# 4. Prompts with known answers


@dataclass(frozen=True)
class LensPrompt:
    """A prompt whose next token is known: ``answer`` is right, ``contrast`` the plausible wrong answer.

    ``family`` is ``"facts"``, ``"agreement"`` or ``"ioi"``; ``labels`` the generator's labels of the item.
    """

    prompt: str
    answer: str
    contrast: str
    family: str
    labels: dict[str, Any]


class PromptTokens(NamedTuple):
    """Prompts tokenised for the lens: right-padded ids and, per row, the last prompt position and the answer tokens."""

    input_ids: Int[Tensor, "batch pos"]
    positions: Int[Tensor, "batch"]     # the last token of each prompt: where the answer is predicted
    answer_ids: Int[Tensor, "batch"]    # first token of each answer
    contrast_ids: Int[Tensor, "batch"]  # first token of each contrast


def fact_prompts(relations: Sequence[str] = tuple(FACT_RELATIONS)) -> list[LensPrompt]:
    """The world's facts (48 with all three relations) in their canonical phrasing, cut before the object.

    ``"The capital of France is"`` → ``" Paris"``; the contrast is the object of the next subject of the same
    relation (another capital). The model learned these facts in training; the prompts are the evaluation's
    (``utils.course_model.evaluate.fact_accuracy``).
    """
    unknown = set(relations) - set(FACT_RELATIONS)
    if unknown:
        raise ValueError(f"unknown relations {sorted(unknown)}: use some of {sorted(FACT_RELATIONS)}")
    items = []
    for relation in relations:
        facts = [(s, o) for r, s, o in all_facts() if r == relation]
        for i, (subject, obj) in enumerate(facts):
            sentence = FACT_PHRASINGS[relation][0].format(s=subject, o=obj)
            items.append(LensPrompt(sentence[: sentence.rindex(" " + obj)], " " + obj, " " + facts[(i + 1) % len(facts)][1],
                                    "facts", {"relation": relation, "subject": subject, "object": obj}))
    return items


def agreement_prompts(n: int = 48, seed: int = 3) -> list[LensPrompt]:
    """``n`` held-out agreement prompts across a distractor of the other number, half singular, half plural.

    ``"The dog near the cats"`` → ``" is"``, contrast ``" are"`` (the evaluation's set, ``eval_set`` seed 3).
    """
    items = []
    for number, other in (("singular", "plural"), ("plural", "singular")):
        for doc in eval_set("agreement", n // 2, seed=seed, number=number, distractor_number=other):
            singular, plural = doc.labels["verb_pair"].split("/")
            good, bad = (singular, plural) if number == "singular" else (plural, singular)
            items.append(LensPrompt(doc.prompt, " " + good, " " + bad, "agreement", dict(doc.labels)))
    return items


def ioi_prompts(n: int = 48, seed: int = 2) -> list[LensPrompt]:
    """``n`` held-out indirect-object prompts: answer the indirect object, contrast the subject (``eval_set`` seed 2)."""
    return [LensPrompt(doc.prompt, " " + doc.labels["indirect_object"], " " + doc.labels["subject"], "ioi",
                       dict(doc.labels)) for doc in eval_set("ioi", n, seed=seed)]


def lens_prompts(family: str, n: int = 48) -> list[LensPrompt]:
    """The prompts of one family: ``"facts"`` (all 48 facts), ``"agreement"`` or ``"ioi"`` (``n`` each)."""
    makers = {"facts": lambda: fact_prompts(), "agreement": lambda: agreement_prompts(n), "ioi": lambda: ioi_prompts(n)}
    if family not in makers:
        raise ValueError(f"unknown family {family!r}: use one of {', '.join(map(repr, makers))}")
    return makers[family]()


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[LensPrompt]) -> PromptTokens:
    """Tokenise ``prompts`` (each after a BOS token, right-padded) with their answer and contrast tokens.

    Right padding leaves every real position unchanged in a causal model, so prompts of different lengths
    share a batch; read each row at ``positions[row]``.
    """
    if not prompts:
        raise ValueError("no prompts given: pass a list of LensPrompt, e.g. fact_prompts()")
    input_ids, _, last = encode_batch(tokenizer, [item.prompt for item in prompts])
    first = [[tokenizer(text, add_special_tokens=False)["input_ids"][0] for text in (item.answer, item.contrast)]
             for item in prompts]
    return PromptTokens(input_ids, last, torch.tensor([a for a, _ in first]), torch.tensor([c for _, c in first]))


# --------------------------------------------------------------------------------------------
# 5. What the lens shows: top tokens, the answer's rank, where it forms, the distance to the end


@dataclass(frozen=True)
class LensTable:
    """The lens's top token at every layer and position of one prompt (``plot_lens_table`` draws it).

    ``top_tokens[layer][pos]`` is the text of the most likely next token after ``input_tokens[pos]``,
    ``top_probs[layer, pos]`` its probability; ``layers`` names the rows (``"resid_pre.0"``, ``"resid_post.0"``...).
    """

    input_tokens: list[str]
    layers: list[str]
    top_tokens: list[list[str]]
    top_probs: Float[Tensor, "layer_plus_one pos"]


@torch.no_grad()
def lens_table(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str) -> LensTable:
    """Run the logit lens on ``prompt`` (after a BOS token) and keep each layer's and position's top token."""
    input_ids = torch.tensor([encode(tokenizer, prompt)])
    probs = logit_lens(model, residual_stack(model, input_ids))[:, 0].softmax(dim=-1)  # [layer_plus_one, pos, vocab]
    top_probs, top_ids = probs.max(dim=-1)
    return LensTable([tokenizer.decode([token]) for token in input_ids[0].tolist()],
                     layer_labels(architecture.n_layers(model)),
                     [[tokenizer.decode([token]) for token in row] for row in top_ids.tolist()], top_probs)


class AnswerByLayer(NamedTuple):
    """The correct answer at every layer of the lens, for a batch of prompts."""

    ranks: Int[Tensor, "layer_plus_one batch"]          # 1 = the lens's top token
    probs: Float[Tensor, "layer_plus_one batch"]
    logit_differences: Float[Tensor, "layer_plus_one batch"]  # logit[answer] - logit[contrast]


@torch.no_grad()
def lens_logits_at(model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"], position: int | Int[Tensor, "batch"] = -1
                   ) -> Float[Tensor, "layer_plus_one batch vocab"]:
    """Every layer's lens logits at one position per row (``position``: an int, or a tensor of one index per row)."""
    return logit_lens(model, at_positions(residual_stack(model, input_ids), position))


def answer_by_layer(lens_logits: Float[Tensor, "layer_plus_one batch vocab"], answer_ids: Int[Tensor, "batch"],
                    contrast_ids: Int[Tensor, "batch"]) -> AnswerByLayer:
    """The rank (1 = top), probability and logit difference over the contrast of each row's answer at each layer."""
    rows = torch.arange(lens_logits.shape[1])
    answer_logits = lens_logits[:, rows, answer_ids]                               # [layer_plus_one, batch]
    ranks = 1 + (lens_logits > einops.rearrange(answer_logits, "layer batch -> layer batch 1")).sum(dim=-1)
    probs = lens_logits.softmax(dim=-1)[:, rows, answer_ids]
    return AnswerByLayer(ranks, probs, answer_logits - lens_logits[:, rows, contrast_ids])


def prompt_answers_by_layer(model: PreTrainedModel, tokens: PromptTokens) -> AnswerByLayer:
    """:func:`answer_by_layer` for tokenised prompts (:func:`encode_prompts`), read at each prompt's last token."""
    return answer_by_layer(lens_logits_at(model, tokens.input_ids, tokens.positions), tokens.answer_ids,
                           tokens.contrast_ids)


def formation_layers(correct: Bool[Tensor, "layer_plus_one batch"]) -> Int[Tensor, "batch"]:
    """Where each answer forms: the first residual-stack layer from which ``correct`` holds at *every* later layer.

    ``correct`` is e.g. ``result.ranks == 1`` (the answer is the lens's top token: facts, IOI) or
    ``result.logit_differences > 0`` (the answer beats its contrast: agreement, where the verb itself is
    free). Layer ``l`` is the stream after ``l`` blocks (0 = the embeddings, ``resid_post.{l-1}`` otherwise): in a
    4-block model, an answer correct at layers 1, 3 and 4 but not 2 forms at 3. ``-1`` where it is not correct
    at the last layer (the model itself gets it wrong).
    """
    stays = correct.flip(0).long().cumprod(dim=0).flip(0)             # correct here and at every later layer
    n_stays = stays.sum(dim=0)                                         # how many final layers it stays correct
    return torch.where(n_stays > 0, correct.shape[0] - n_stays, torch.full_like(n_stays, -1))


def kl_to_final(lens_logits: Float[Tensor, "layer_plus_one n vocab"]) -> Float[Tensor, "layer_plus_one"]:
    """Mean KL divergence (nats) ``KL(final || lens)`` at each layer: how far each layer's prediction is from the model's.

    The last layer is the model's own distribution (KL 0). ``n`` counts predictions (positions of any prompts).
    """
    log_probs = lens_logits.log_softmax(dim=-1)
    final = log_probs[-1]
    return (final.exp() * (final - log_probs)).sum(dim=-1).mean(dim=-1)


def top1_agreement(lens_logits: Float[Tensor, "layer_plus_one n vocab"]) -> Float[Tensor, "layer_plus_one"]:
    """Reference for Exercise 4.10: the share of the ``n`` predictions whose top token at each layer is the last
    layer's (1 at the last)."""
    top = lens_logits.argmax(dim=-1)                                   # [layer_plus_one, n]
    return (top == top[-1]).float().mean(dim=-1)


@torch.no_grad()
def logit_lens_kl(model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"],
                  mask: Int[Tensor, "batch pos"] | None = None) -> Float[Tensor, "layer_plus_one"]:
    """:func:`kl_to_final` of the logit lens over every position of ``input_ids`` where ``mask`` is 1 (default: all)."""
    logits = logit_lens(model, residual_stack(model, input_ids))       # [layer_plus_one, batch, pos, vocab]
    keep = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask.bool()
    return kl_to_final(logits[:, keep])


def corpus_batch(tokenizer: PreTrainedTokenizerBase, n_documents: int, seed: int, max_length: int = 128
                 ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """``n_documents`` course-corpus documents (``utils.world.generate_corpus``), one per row after a BOS token,
    right-padded and cut at ``max_length``: ``(input_ids, mask)``, the mask 1 on real tokens."""
    from utils.world import generate_corpus

    input_ids, mask, _ = encode_batch(tokenizer, [doc.text for doc in generate_corpus(n_documents, seed=seed)],
                                      max_length)
    return input_ids, mask


# --------------------------------------------------------------------------------------------
# 6. Direct logit attribution


def _in_out_weight(module: nn.Module) -> Float[Tensor, "d_in d_out"]:
    """A projection's weight as ``[d_in, d_out]`` (``x @ W``): GPT-2's ``Conv1D`` stores it so, ``nn.Linear`` transposed."""
    return module.weight if isinstance(module, Conv1D) else module.weight.T


def attention_output_weight(model: PreTrainedModel, layer: int) -> Float[Tensor, "head d_head d_model"]:
    """``W_O`` of each head of ``layer``: head ``h`` writes ``z_h @ W_O[h]`` to the residual stream."""
    weight = _in_out_weight(architecture.block_part(model, layer, ATTENTION_OUTPUT_PROJECTION))
    return einops.rearrange(weight, "(head d_head) d_model -> head d_head d_model", head=model.config.num_attention_heads)


def attention_output_bias(model: PreTrainedModel, layer: int) -> Float[Tensor, "d_model"]:
    """The bias of ``layer``'s attention output projection (zeros for Llama, which has none)."""
    projection = architecture.block_part(model, layer, ATTENTION_OUTPUT_PROJECTION)
    bias = projection.bias
    return bias if bias is not None else torch.zeros(architecture.d_model(model), dtype=projection.weight.dtype)


def value_weight(model: PreTrainedModel, layer: int) -> Float[Tensor, "head d_model d_head"]:
    """``W_V`` of each head of ``layer`` (Llama's grouped key-value heads repeated for the heads that share them).

    Head ``h`` reads ``norm(x) @ W_V[h]`` (plus the value bias) from each position it attends to, where
    ``norm`` is the block's input norm.
    """
    n_heads = model.config.num_attention_heads
    d_head = architecture.d_model(model) // n_heads
    weight = _in_out_weight(architecture.block_part(model, layer, VALUE_PROJECTION))   # [d_model, whatever holds the values]
    model_type = architecture.model_type(model)
    if model_type == "gpt2":  # c_attn: [query | key | value], each (head d_head)
        values = weight[:, 2 * n_heads * d_head:]
        return einops.rearrange(values, "d_model (head d_head) -> head d_model d_head", head=n_heads)
    if model_type == "gpt_neox":  # query_key_value: per head, [query | key | value]
        return einops.rearrange(weight, "d_model (head three d_head) -> three head d_model d_head",
                                head=n_heads, three=3)[2]
    n_kv = model.config.num_key_value_heads  # llama: v_proj holds n_kv heads, each shared by n_heads // n_kv heads
    kv = einops.rearrange(weight, "d_model (kv d_head) -> kv d_model d_head", kv=n_kv)
    return einops.repeat(kv, "kv d_model d_head -> (kv share) d_model d_head", share=n_heads // n_kv)


def ov_circuit(model: PreTrainedModel, layer: int, head: int) -> Float[Tensor, "d_model d_model"]:
    """The OV circuit ``W_V[h] @ W_O[h]`` of one head: what it writes (``x @ OV``) when it attends to ``x``.

    ``x`` is the *normalised* stream the block reads (after its input norm); biases are left out.
    """
    n_heads = model.config.num_attention_heads
    if not isinstance(head, int) or not -n_heads <= head < n_heads:
        raise ValueError(f"head {head!r} does not exist: this model has {n_heads} heads per layer, numbered 0 to "
                         f"{n_heads - 1}")
    return value_weight(model, layer)[head] @ attention_output_weight(model, layer)[head]


#: Per architecture: the norm a block applies to the stream before its attention reads it.
ATTENTION_INPUT_NORM = {"gpt2": "ln_1", "gpt_neox": "input_layernorm", "llama": "input_layernorm"}


@torch.no_grad()
def ov_copying_ranks(model: PreTrainedModel, layer: int, head: int, token_ids: Int[Tensor, "n"]) -> Int[Tensor, "n"]:
    """Does a head copy? For each token, the rank (1 = top) of its own logit among the ``n`` tokens' logits when the
    head attends to that token's embedding alone: ``norm(W_E[t]) @ OV``, read with :func:`direction_logits`.

    A copying head ranks most tokens first (Elhage et al., 2021, score the same idea with the eigenvalues of
    the full OV circuit). This reads the embedding, not the stream the head really sees in context: a first test.
    """
    token_ids = torch.as_tensor(token_ids).reshape(-1)
    if len(token_ids) < 2:
        raise ValueError("give at least two token ids: the ranks are among the tokens given")
    norm = architecture.block_part(model, layer, ATTENTION_INPUT_NORM)
    written = norm(architecture.token_embedding(model)(token_ids)) @ ov_circuit(model, layer, head)   # [n, d_model]
    logits = direction_logits(model, written)[:, token_ids]                                           # [n, n]
    return 1 + (logits > logits.diag()[:, None]).sum(dim=-1)


@torch.no_grad()
def ov_eigenvalue_score(model: PreTrainedModel, layer: int, head: int) -> float:
    """Reference for Exercise 4.13: Elhage et al.'s (2021) copying score of a head's full OV circuit: ``sum(Re λ) / sum(|λ|)`` over its eigenvalues.

    The full circuit maps a token to the logits the head raises when it attends to it: ``(W_E * w_in) @ OV @
    (w_final * W_U).T``, ``[vocab, vocab]``, with the block's input norm and the final norm reduced to their weights.
    Its nonzero eigenvalues are those of the ``[d_model, d_model]`` product taken in the other order (the cycle
    ``AB`` and ``BA`` share them), so no vocabulary-sized matrix is built. +1 for a head that copies every token,
    -1 for one that suppresses each token it reads.
    """
    w_in = architecture.block_part(model, layer, ATTENTION_INPUT_NORM).weight
    embedding = architecture.token_embedding(model).weight * w_in                     # [vocab, d_model]
    readout = unembedding_matrix(model) * final_norm(model).weight                    # [vocab, d_model]
    small = ov_circuit(model, layer, head) @ readout.T @ embedding                    # [d_model, d_model]
    eigenvalues = torch.linalg.eigvals(small.double())
    return (eigenvalues.real.sum() / eigenvalues.abs().sum()).item()


def mlp_output_weight(model: PreTrainedModel, layer: int) -> Float[Tensor, "d_mlp d_model"]:
    """The MLP's output weight of ``layer``: row ``i`` is what neuron ``i`` writes to the stream per unit of activation."""
    return _in_out_weight(architecture.block_part(model, layer, MLP_OUTPUT_PROJECTION))


class ResidualComponents(NamedTuple):
    """The final residual stream at one position per row, split into what each component wrote.

    ``vectors.sum(0)`` is ``final_residual`` (to float precision). ``scale`` is what the final norm divided
    ``final_residual`` by in the real forward pass (:func:`norm_scale`).
    """

    labels: list[str]                                      # "token embed", "position embed", "L0H3", "L0 attn bias", "L0 MLP"
    vectors: Float[Tensor, "component batch d_model"]
    final_residual: Float[Tensor, "batch d_model"]
    scale: Float[Tensor, "batch 1"]


@torch.no_grad()
def head_contributions(z: Float[Tensor, "batch head d_head"], W_O: Float[Tensor, "head_d_head d_model"]
                       ) -> Float[Tensor, "head batch d_model"]:
    """Reference for Exercise 4.4: what each head writes to the stream, ``z_h @ W_O[h]``.

    ``W_O`` is the attention output projection in the ``x @ W`` convention, its rows the heads' slices one after
    the other (``(head d_head)``, as the heads' outputs sit side by side in its input). The heads' terms sum to
    the projection's output without its bias.
    """
    per_head = einops.rearrange(W_O, "(head d_head) d_model -> head d_head d_model", head=z.shape[1])
    return einops.einsum(z, per_head, "batch head d_head, head d_head d_model -> head batch d_model")


#: How :func:`residual_components` splits a layer's attention output into heads (the lab passes the learner's).
HeadContributions = Callable[[Tensor, Tensor], Tensor]


def residual_components(model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"],
                        position: int | Int[Tensor, "batch"] = -1, heads: HeadContributions = head_contributions,
                        scale: Callable[[nn.Module, Tensor], Tensor] = norm_scale) -> ResidualComponents:
    """Split the final residual stream at ``position`` into the embeddings, each head, each attention bias and each MLP.

    One forward pass records the embeddings (``resid_pre.0``), each layer's head outputs ``z`` (the input of the
    attention output projection) and MLP outputs, and the final norm's input. The token embedding is
    ``W_E[token]``; the position embedding is the rest of ``resid_pre.0`` (zero for rotary models, whose
    positions act inside attention). Head ``h`` contributes ``z_h @ W_O[h]`` (``heads``, :func:`head_contributions`);
    ``scale`` (:func:`norm_scale`) gives what the final norm divides the stream by. The lab passes the learner's.
    """
    n_layers = architecture.n_layers(model)
    norm = final_norm(model)
    z: dict[int, Tensor] = {}                                          # layer -> [batch, pos, head, d_head]

    def keeper(layer: int) -> Callable[[Tensor], Tensor]:
        def keep(output: Tensor) -> Tensor:
            z[layer] = output
            return output
        return keep

    sites = ["resid_pre.0", *(f"mlp_out.{layer}" for layer in range(n_layers)), f"resid_post.{n_layers - 1}"]
    with contextlib.ExitStack() as stack:
        for layer in range(n_layers):
            stack.enter_context(editing_head_outputs(model, layer, keeper(layer)))
        store = capture(model, input_ids, sites)                       # the final norm reads resid_post of the last block
    positions = check_positions(position, *input_ids.shape)
    rows = torch.arange(input_ids.shape[0])

    def at(activation: Tensor) -> Tensor:
        return activation[rows, positions]

    token = architecture.token_embedding(model)(input_ids[rows, positions])             # [batch, d_model]
    labels, vectors = ["token embed", "position embed"], [token, at(store["resid_pre.0"]) - token]
    for layer in range(n_layers):
        W_O = _in_out_weight(architecture.block_part(model, layer, ATTENTION_OUTPUT_PROJECTION))   # [(head d_head), d_model]
        per_head = heads(at(z[layer]), W_O)                                                            # [head, batch, d_model]
        bias = einops.repeat(attention_output_bias(model, layer), "d_model -> batch d_model", batch=len(rows))
        labels += [f"L{layer}H{head}" for head in range(len(per_head))] + [f"L{layer} attn bias", f"L{layer} MLP"]
        vectors += [*per_head, bias, at(store[f"mlp_out.{layer}"])]
    final_residual = at(store[f"resid_post.{n_layers - 1}"])
    return ResidualComponents(labels, torch.stack(vectors), final_residual, scale(norm, final_residual))


def logit_difference_contributions(model: PreTrainedModel, components: Float[Tensor, "component batch d_model"],
                                   scale: Float[Tensor, "batch 1"], answer: Int[Tensor, "batch"],
                                   contrast: Int[Tensor, "batch"]) -> Float[Tensor, "component batch"]:
    """Reference for Exercise 4.6: each component's direct effect on ``logit[answer] - logit[contrast]``.

    With the final norm's scale frozen, the norm is linear: ``norm(x) = centre(x) / scale * w + b`` (no centring
    for an RMSNorm), so ``x = sum_i c_i`` gives ``logit difference = sum_i centre(c_i) / scale · (w * (W_U[a] - W_U[c]))``
    plus a constant from the biases (:func:`final_bias_contribution`).
    """
    norm = architecture.final_norm(model)
    if is_layer_norm(norm):
        components = components - components.mean(dim=-1, keepdim=True)     # the norm subtracts each vector's mean
    normalised = components / scale                                          # the scale of the whole stream, not of c_i
    W_U = unembedding_matrix(model)
    direction = (W_U[answer] - W_U[contrast]) * norm.weight                 # [batch, d_model]
    return einops.einsum(normalised, direction, "component batch d_model, batch d_model -> component batch")


def final_bias_contribution(model: PreTrainedModel, answer: Int[Tensor, "batch"], contrast: Int[Tensor, "batch"]
                            ) -> Float[Tensor, "batch"]:
    """What the final norm's bias and the unembedding's bias add to ``logit[answer] - logit[contrast]`` (no component's)."""
    norm = final_norm(model)
    W_U, b_U = unembedding_matrix(model), unembedding_bias(model)
    difference = b_U[answer] - b_U[contrast]
    if getattr(norm, "bias", None) is not None:
        difference = difference + (W_U[answer] - W_U[contrast]) @ norm.bias
    return difference


@dataclass(frozen=True)
class LogitAttribution:
    """Direct logit attribution of ``logit[answer] - logit[contrast]`` for a batch of prompts.

    ``contributions[i]`` is component ``labels[i]``'s share; the last component is the constant
    the final biases add. ``contributions.sum(0)`` equals ``logit_difference``, the model's own.
    """

    labels: list[str]
    contributions: Float[Tensor, "component batch"]
    logit_difference: Float[Tensor, "batch"]
    n_layers: int
    n_heads: int

    def heads(self) -> Float[Tensor, "layer head batch"]:
        """The heads' contributions as a ``[layer, head, batch]`` table."""
        index = [self.labels.index(f"L{layer}H{head}") for layer in range(self.n_layers) for head in range(self.n_heads)]
        return einops.rearrange(self.contributions[index], "(layer head) batch -> layer head batch", layer=self.n_layers)

    def top(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` components with the largest mean contribution (by absolute value), with that mean."""
        means = self.contributions.mean(dim=1)
        order = means.abs().argsort(descending=True)[:k]
        return [(self.labels[i], round(float(means[i]), 4)) for i in order]


@torch.no_grad()
def direct_logit_attribution(model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"], answer: Int[Tensor, "batch"],
                             contrast: Int[Tensor, "batch"], position: int | Int[Tensor, "batch"] = -1
                             ) -> LogitAttribution:
    """Attribute ``logit[answer] - logit[contrast]`` at ``position`` to the embeddings, every head, every attention
    bias, every MLP and the final biases, with the final norm's scale frozen at its value in the real forward pass."""
    answer, contrast = torch.as_tensor(answer).reshape(-1), torch.as_tensor(contrast).reshape(-1)
    components = residual_components(model, input_ids, position)
    contributions = logit_difference_contributions(model, components.vectors, components.scale, answer, contrast)
    contributions = torch.cat([contributions, final_bias_contribution(model, answer, contrast)[None]])
    logits = at_positions(model(input_ids).logits, position)              # [batch, vocab]
    rows = torch.arange(len(answer))
    return LogitAttribution([*components.labels, FINAL_BIAS], contributions,
                            logits[rows, answer] - logits[rows, contrast], architecture.n_layers(model),
                            model.config.num_attention_heads)


# --------------------------------------------------------------------------------------------
# 7. SVD directions and the tokens they promote


@dataclass(frozen=True)
class DirectionTokens:
    """The tokens a direction in the residual stream promotes most (``positive``) and suppresses most (``negative``)."""

    positive: list[str]
    negative: list[str]

    def __str__(self) -> str:
        return f"+ {' '.join(map(repr, self.positive))}  |  - {' '.join(map(repr, self.negative))}"


def singular_directions(matrix: Float[Tensor, "n d_model"], k: int, centre: bool = False
                        ) -> tuple[Float[Tensor, "k"], Float[Tensor, "k d_model"]]:
    """The ``k`` largest singular values of ``matrix`` and its right singular vectors (directions in ``d_model``).

    For a weight in the ``x @ W`` convention (an OV circuit, :func:`mlp_output_weight`) these are the directions
    it writes most. For activations (one row per token), pass ``centre=True`` to subtract the mean row first:
    the directions are then the principal components. A singular vector's sign is arbitrary: read both ends.
    """
    if matrix.dim() != 2:
        raise ValueError(f"matrix has shape {tuple(matrix.shape)}: pass a 2-D [n, d_model] matrix "
                         "(flatten activations with einops.rearrange(acts, 'batch pos d -> (batch pos) d'))")
    if not 1 <= k <= min(matrix.shape):
        raise ValueError(f"k = {k}: a {tuple(matrix.shape)} matrix has {min(matrix.shape)} singular directions")
    matrix = matrix.detach().float()
    if centre:
        matrix = matrix - matrix.mean(dim=0)
    _, values, right = torch.linalg.svd(matrix, full_matrices=False)
    return values[:k], right[:k]


def direction_logits(model: Any, directions: Float[Tensor, "n d_model"], through_norm_weight: bool = True
                     ) -> Float[Tensor, "n vocab"]:
    """How much each direction raises each token's logit: ``(direction * w) @ W_U.T``, ``w`` the final norm's weight.

    The final norm multiplies each coordinate by its weight before the unembedding, so that is how a
    direction added to the stream reaches the logits (its bias and the unembedding's add the same to every
    direction, and the centring and scale are left out: directions have no size of their own).
    ``through_norm_weight=False`` uses ``W_U`` alone.
    """
    if directions.shape[-1] != architecture.d_model(model):
        raise ValueError(f"directions have shape {tuple(directions.shape)}: the last dimension must be d_model = "
                         f"{architecture.d_model(model)}")
    weighted = directions * final_norm(model).weight if through_norm_weight else directions
    return weighted @ unembedding_matrix(model).T


@torch.no_grad()
def top_tokens_of_directions(model: Any, tokenizer: PreTrainedTokenizerBase, directions: Float[Tensor, "n d_model"],
                             k: int = 8, through_norm_weight: bool = True) -> list[DirectionTokens]:
    """For each direction, the ``k`` tokens it promotes most and the ``k`` it suppresses most (:func:`direction_logits`)."""
    logits = direction_logits(model, directions.to(unembedding_matrix(model).dtype), through_norm_weight)
    top, bottom = logits.topk(k, dim=-1).indices, (-logits).topk(k, dim=-1).indices
    return [DirectionTokens([tokenizer.decode([t]) for t in up], [tokenizer.decode([t]) for t in down])
            for up, down in zip(top.tolist(), bottom.tolist())]


# --------------------------------------------------------------------------------------------
# 8. Plots


def plot_lens_table(table: LensTable) -> go.Figure:
    """Heatmap of the lens: one row per layer, one column per input position; each cell shows the top
    predicted next token, coloured by its probability."""
    columns = [f"{pos}: {token!r}" for pos, token in enumerate(table.input_tokens)]
    text = [[repr(token)[1:-1] for token in row] for row in table.top_tokens]
    figure = go.Figure(go.Heatmap(
        z=table.top_probs.tolist(), x=columns, y=table.layers, text=text, texttemplate="%{text}",
        zmin=0, zmax=1, colorscale="Blues", colorbar={"title": "probability"},
        hovertemplate="after %{x}<br>%{y}: %{text} (p = %{z:.2f})<extra></extra>"))
    figure.update_layout(title="Logit lens: the top next token at each layer", xaxis_title="input token",
                         yaxis_title="residual stream", xaxis_tickangle=-45)
    return figure


#: What :func:`plot_answer_by_layer` can draw: the summary of each field of :class:`AnswerByLayer` over prompts.
ANSWER_METRICS = {"probability": ("probs", "mean"), "rank": ("ranks", "median"),
                  "logit difference": ("logit_differences", "mean")}


def plot_answer_by_layer(results: dict[str, AnswerByLayer], n_layers: int, metric: str = "probability") -> go.Figure:
    """The correct answer by layer for each prompt family (``{"facts": result, ...}``): its mean ``"probability"``,
    median ``"rank"`` (log scale, 1 at the top) or mean ``"logit difference"`` over the contrast."""
    if metric not in ANSWER_METRICS:
        raise ValueError(f"metric={metric!r}: use one of {', '.join(map(repr, ANSWER_METRICS))}")
    field, summary = ANSWER_METRICS[metric]
    figure = go.Figure()
    for family, result in results.items():
        values = getattr(result, field).float()
        values = values.mean(dim=1) if summary == "mean" else values.median(dim=1).values
        figure.add_trace(go.Scatter(x=layer_labels(n_layers), y=values.tolist(), mode="lines+markers", name=family))
    figure.update_layout(title=f"The correct answer through the logit lens ({summary} {metric})",
                         xaxis_title="residual stream", yaxis_title=metric)
    if metric == "rank":
        figure.update_yaxes(type="log", autorange="reversed")
    return figure


def plot_formation_histogram(layers: Int[Tensor, "batch"], n_layers: int) -> go.Figure:
    """Histogram of :func:`formation_layers` (prompts the model gets wrong, ``-1``, are counted in the title)."""
    formed = layers[layers >= 0]
    counts = torch.bincount(formed, minlength=n_layers + 1)
    figure = px.bar(x=layer_labels(n_layers), y=counts.tolist(), labels={"x": "answer formed at",
                                                                          "y": "prompts"})
    figure.update_layout(title=f"Where the answer forms ({int((layers < 0).sum())} of {len(layers)} wrong at the last layer)")
    return figure


def plot_kl_by_layer(kls: dict[str, Float[Tensor, "layer_plus_one"]], n_layers: int) -> go.Figure:
    """KL(final || lens) by layer for each lens (e.g. ``{"logit lens": ..., "tuned lens": ...}``)."""
    figure = go.Figure([go.Scatter(x=layer_labels(n_layers), y=kl.tolist(), mode="lines+markers", name=name)
                        for name, kl in kls.items()])
    figure.update_layout(title="Distance from the model's prediction", xaxis_title="residual stream",
                         yaxis_title="KL(final || lens) (nats)")
    return figure


def plot_head_attribution(attribution: LogitAttribution) -> go.Figure:
    """Heatmap of each head's mean contribution to the logit difference (layer × head), red up, blue down."""
    means = attribution.heads().mean(dim=-1)
    limit = float(means.abs().max())
    figure = px.imshow(means.tolist(), color_continuous_scale="RdBu_r", zmin=-limit, zmax=limit, text_auto=".2f",
                       labels={"x": "head", "y": "layer", "color": "logit difference"})
    figure.update_layout(title="Direct logit attribution of each head (mean over prompts)")
    return figure


def plot_component_attribution(attribution: LogitAttribution) -> go.Figure:
    """Bar chart of the mean contribution of the embeddings, each layer's heads (summed), attention bias and MLP."""
    means = attribution.contributions.mean(dim=1)
    grouped: dict[str, float] = {}
    for label, value in zip(attribution.labels, means.tolist()):
        group = label.split("H")[0] + " heads" if label[0] == "L" and "H" in label else label
        grouped[group] = grouped.get(group, 0.0) + value
    figure = px.bar(x=list(grouped), y=list(grouped.values()), labels={"x": "component", "y": "logit difference"})
    figure.update_layout(title=f"Direct logit attribution (mean total {float(attribution.logit_difference.mean()):.2f})")
    return figure
