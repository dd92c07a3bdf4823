"""Other ways to find a behaviour's direction, directional ablation, refusal and function vectors (chapter 5).

CAA (:mod:`utils.steering`) reads a direction from multiple-choice answers. The same idea works
from any labelled contrast, and the corpus generator labels every story:

- :func:`mean_difference_direction`: mean activation of texts with the behaviour minus without
  (a "reading vector", as in representation engineering, Zou et al. 2023);
- :func:`pca_direction`: the first principal component of paired differences (RepE's PCA);
- :func:`probe_direction`: the weight vector of a logistic-regression probe;
- :func:`actadd_vector`: one prompt pair, ``"wonderful"`` minus ``"terrible"`` (ActAdd, Turner et al. 2023).

A direction that *causes* a behaviour should also be *necessary* for it: projecting it out of the
residual stream everywhere (:func:`ablate_direction`, Arditi et al. 2024) should remove it.
:func:`refusal_direction` applies this to the chapter 2 instruction adapter's refusals, and
:func:`task_vector` builds a function vector from few-shot prompts (Hendel et al. 2023; Todd et
al. 2024).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils import architecture
from utils.course_model.evaluate import encode_batch
from utils.hooks import capture, hooks
from utils.steering import behaviour, check_steering, last_token_activations
from utils.world.families import FEW_SHOT_TASKS, few_shot, story
from utils.world.instructions import ChatExample, REFUSAL
from utils.world.vocabulary import EMOTIONS, SENTIMENTS, TOPICS

# --------------------------------------------------------------------------------------------
# 1. Labelled texts and their activations


def labelled_stories(name: str, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` stories that show behaviour ``name`` and ``n`` that do not (another value of the same trait)."""
    wanted = behaviour(name)
    values = {"sentiment": SENTIMENTS, "emotion": EMOTIONS, "topic": TOPICS}[wanted.trait]
    others = [value for value in values if value != wanted.value]
    rng = random.Random(20_011 + seed)
    with_behaviour = [story(rng, **{wanted.trait: wanted.value}).text for _ in range(n)]
    without = [story(rng, **{wanted.trait: rng.choice(others)}).text for _ in range(n)]
    return with_behaviour, without


@torch.no_grad()
def mean_token_activations(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                           layer: int, batch_size: int = 32) -> Float[Tensor, "n d_model"]:
    """Each text's residual stream after ``layer``, averaged over its tokens (BOS and padding left out)."""
    site = f"resid_post.{architecture.check_layer(model, layer)}"
    chunks = []
    for start in range(0, len(texts), batch_size):
        input_ids, attention_mask, _ = encode_batch(tokenizer, texts[start:start + batch_size])
        activations = capture(model, input_ids, [site], attention_mask=attention_mask)[site]   # [chunk, pos, d]
        keep = attention_mask.clone().float()
        keep[:, 0] = 0                                                                       # BOS
        chunks.append(torch.einsum("npd,np->nd", activations, keep) / keep.sum(dim=1, keepdim=True))
    return torch.cat(chunks)


# --------------------------------------------------------------------------------------------
# 2. Four more directions


def mean_difference_direction(with_behaviour: Float[Tensor, "n d_model"], without: Float[Tensor, "m d_model"]
                              ) -> Float[Tensor, "d_model"]:
    """The mean activation of texts with the behaviour minus the mean of texts without it."""
    return with_behaviour.mean(dim=0) - without.mean(dim=0)


def pca_direction(with_behaviour: Float[Tensor, "n d_model"], without: Float[Tensor, "n d_model"]
                  ) -> Float[Tensor, "d_model"]:
    """The first principal component of the paired differences, signed to agree with their mean (unit norm)."""
    if with_behaviour.shape != without.shape:
        raise ValueError(f"PCA pairs texts: got {tuple(with_behaviour.shape)} and {tuple(without.shape)} activations; "
                         "pass as many texts with the behaviour as without")
    differences = with_behaviour - without                                        # [n, d_model]
    centred = differences - differences.mean(dim=0)
    component = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    return component if component @ differences.mean(dim=0) >= 0 else -component


def probe_direction(with_behaviour: Float[Tensor, "n d_model"], without: Float[Tensor, "m d_model"],
                    steps: int = 300, weight_decay: float = 1e-3, seed: int = 0) -> Float[Tensor, "d_model"]:
    """The weight vector of a logistic-regression probe (behaviour = 1), trained full-batch with Adam."""
    torch.manual_seed(seed)
    features = torch.cat([with_behaviour, without])
    labels = torch.cat([torch.ones(len(with_behaviour)), torch.zeros(len(without))])
    mean, std = features.mean(dim=0), features.std(dim=0) + 1e-6
    standardised = (features - mean) / std
    probe = torch.nn.Linear(features.shape[1], 1)
    optimiser = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=weight_decay)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = F.binary_cross_entropy_with_logits(probe(standardised).squeeze(-1), labels)
        loss.backward()
        optimiser.step()
    return (probe.weight.detach()[0] / std).detach()              # back to the activations' own scale


def probe_accuracy(direction: Float[Tensor, "d_model"], with_behaviour: Float[Tensor, "n d_model"],
                   without: Float[Tensor, "m d_model"]) -> float:
    """Held-out accuracy of thresholding the projection on ``direction`` halfway between the two class means."""
    threshold = ((with_behaviour @ direction).mean() + (without @ direction).mean()) / 2
    correct = (with_behaviour @ direction > threshold).sum() + (without @ direction <= threshold).sum()
    return (correct / (len(with_behaviour) + len(without))).item()


def actadd_vector(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, positive_prompt: str,
                  negative_prompt: str, layer: int) -> Float[Tensor, "d_model"]:
    """ActAdd: the activation difference at the last token of one prompt pair, e.g. ``" wonderful"`` minus ``" terrible"``."""
    activations = last_token_activations(model, tokenizer, [positive_prompt, negative_prompt], [layer])[0]
    return activations[0] - activations[1]


def cosine_table(directions: dict[str, Float[Tensor, "d_model"]]) -> pd.DataFrame:
    """Pairwise cosine similarities of named directions."""
    names = list(directions)
    stacked = F.normalize(torch.stack([directions[name] for name in names]), dim=-1)
    return pd.DataFrame((stacked @ stacked.T).numpy(), index=names, columns=names)


# --------------------------------------------------------------------------------------------
# 3. Directional ablation


def project_out(residual: Float[Tensor, "... d_model"], direction: Float[Tensor, "d_model"]
                ) -> Float[Tensor, "... d_model"]:
    """Reference for Exercise 5.9: ``residual`` minus its component along ``direction`` (any norm)."""
    direction = direction / direction.norm()
    return residual - (residual @ direction)[..., None] * direction


@contextlib.contextmanager
def ablate_direction(model: PreTrainedModel, direction: Float[Tensor, "d_model"]) -> Iterator[PreTrainedModel]:
    """Inside the ``with`` block, ``direction`` is projected out of the residual stream at every position,
    before the first block and after every block, so no component can read it or write it."""
    check_steering(model, 0, direction, 0.0)
    sites = ["resid_pre.0", *(f"resid_post.{layer}" for layer in range(architecture.n_layers(model)))]
    with hooks(model, {site: lambda residual: project_out(residual, direction.to(residual.dtype)) for site in sites}):
        yield model


# --------------------------------------------------------------------------------------------
# 4. Refusal


def refusal_direction(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, harmful: Sequence[ChatExample],
                      harmless: Sequence[ChatExample], layer: int) -> Float[Tensor, "d_model"]:
    """Mean activation at the last prompt token (``"Assistant:"``) of harmful requests minus harmless ones."""
    activations = [last_token_activations(model, tokenizer, [e.prompt for e in examples], [layer])[0]
                   for examples in (harmful, harmless)]
    return mean_difference_direction(*activations)


@torch.no_grad()
def first_token_refusal_rate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                             examples: Sequence[ChatExample]) -> float:
    """The share of prompts whose greedy first response token is the refusal's first token (``" I"``).

    The first token decides: the instruction adapter writes ``"I do not do that."`` only for
    refusals. Measured in one right-padded batch, at each prompt's last token.
    """
    refusal_start = tokenizer(" " + REFUSAL, add_special_tokens=False)["input_ids"][0]
    input_ids, attention_mask, last = encode_batch(tokenizer, [e.prompt for e in examples])
    logits = model(input_ids, attention_mask=attention_mask).logits[torch.arange(len(examples)), last]
    return (logits.argmax(dim=-1) == refusal_start).float().mean().item()


# --------------------------------------------------------------------------------------------
# 5. Function vectors


def function_vector(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, few_shot_prompts: Sequence[str],
                    zero_shot_prompts: Sequence[str], layer: int) -> Float[Tensor, "d_model"]:
    """Reference for Exercise 5.12: the mean activation after block ``layer`` at the last token of the few-shot
    prompts minus the mean at the last token of the zero-shot ones."""
    activations = [last_token_activations(model, tokenizer, list(prompts), [layer])[0]
                   for prompts in (few_shot_prompts, zero_shot_prompts)]
    return mean_difference_direction(*activations)


#: How :func:`task_vector` turns its prompts into a vector (the lab passes the learner's).
FunctionVector = Callable[[PreTrainedModel, PreTrainedTokenizerBase, Sequence[str], Sequence[str], int], Tensor]


def task_vector(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: str, layer: int,
                n_prompts: int = 32, n_shots: int = 5, seed: int = 0,
                vector: FunctionVector = function_vector) -> Float[Tensor, "d_model"]:
    """A function vector (:func:`function_vector`) of ``task``: from ``n_shots``-shot prompts of ``task`` (ending
    on ``"->"``) against zero-shot prompts of every task (what is common to all queries)."""
    if task not in FEW_SHOT_TASKS:
        raise ValueError(f"unknown few-shot task {task!r}: use one of {sorted(FEW_SHOT_TASKS)}")
    rng = random.Random(30_011 + seed)
    few = [few_shot(rng, task=task, n_shots=n_shots).prompt for _ in range(n_prompts)]
    zero = [few_shot(rng, task=name, n_shots=0).prompt for name in sorted(FEW_SHOT_TASKS)
            for _ in range(max(1, n_prompts // len(FEW_SHOT_TASKS)))]
    return vector(model, tokenizer, few, zero, layer)


def zero_shot_queries(task: str, n: int = 40, seed: int = 1) -> list[tuple[str, str]]:
    """``n`` held-out zero-shot prompts ``"{query} ->"`` of ``task`` and their answers (``" {target}"``)."""
    rng = random.Random(40_009 + seed)
    documents = [few_shot(rng, task=task, n_shots=0) for _ in range(n)]
    return [(document.prompt, document.answer) for document in documents]


@torch.no_grad()
def zero_shot_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                       queries: Sequence[tuple[str, str]]) -> float:
    """The share of prompts whose greedy next token is the answer's first token. Run it inside
    :func:`utils.steering.steer` to add a function vector at the last position."""
    input_ids, attention_mask, last = encode_batch(tokenizer, [prompt for prompt, _ in queries])
    predicted = model(input_ids, attention_mask=attention_mask).logits[torch.arange(len(queries)), last].argmax(-1)
    answers = torch.tensor([tokenizer(answer, add_special_tokens=False)["input_ids"][0] for _, answer in queries])
    return (predicted == answers).float().mean().item()


# --------------------------------------------------------------------------------------------
# Exercise 5.9: the checker
