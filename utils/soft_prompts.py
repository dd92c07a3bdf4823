"""Chapter 1 reference: prompt tuning (soft prompts), from scratch, checked against ``peft``.

A hand-written prompt is a list of tokens, and the model sees each token as its embedding, a
vector of ``d_model`` numbers. Prompt tuning (Lester, Al-Rfou and Constant 2021, "The Power of
Scale for Parameter-Efficient Prompt Tuning") skips the tokens: it learns ``n_tokens`` vectors
directly, by gradient descent on the task's loss, with the model frozen. These vectors, the *soft
prompt*, are placed in front of the input embeddings::

    input ids       [BOS, France, ->]                 -> embeddings  [batch, seq, d_model]
    soft prompt     [p1, p2, ..., pn]                                 [n_tokens, d_model]
    model input     [p1 ... pn, BOS, France, ->]                      [batch, n_tokens + seq, d_model]

The soft prompt goes before everything, BOS included, exactly as ``peft``'s prompt tuning does
(``tests/test_soft_prompts.py`` checks that the logits agree). The model is called with
``inputs_embeds`` instead of ``input_ids``; it adds its own position information (GPT-2's learned
position embeddings, or rotary positions in GPT-NeoX and Llama), so the real tokens sit at
positions ``n_tokens, ..., n_tokens + seq - 1``. Only the logits of the real tokens are returned.

Training and evaluation use the few-shot tasks of the generated world (``utils.world``), asked
0-shot: the prompt is ``"{query} ->"`` and the answer ``" {target}\\n"``. A task's queries are split
by a fixed rule (:func:`split_queries`: sorted, every third one held out), so the soft prompt is
always evaluated on queries it was never trained on, against hand-written 0-, 1- and 5-shot prompts
on the same queries (:func:`compare_prompts`).

The public functions::

    soft_prompt = SoftPrompt.from_text(model, tokenizer, "France -> FRANCE\\n")  # or .from_vocabulary(...)
    logits = logits_with_soft_prompt(model, soft_prompt.embeddings, input_ids)   # the exercise
    soft_prompt, losses = train_soft_prompt(model, tokenizer, "uppercase")      # soft_prompt_step, 100 times
    train_queries, eval_queries = split_queries("uppercase")
    soft_prompt_accuracy(model, tokenizer, soft_prompt, "uppercase", eval_queries)
    compare_prompts(model, tokenizer, soft_prompt, "uppercase", eval_queries)   # {'0-shot': 0.09, ...}
    nearest_tokens(model, tokenizer, soft_prompt)                                # what the vectors resemble
    soft_prompt_from_peft(peft_model)                                            # peft's virtual tokens

Measured on the course model (2 CPU cores, default settings: 8 tokens, 100 Adam steps of 16
examples, about 2 s): on the 35 held-out ``"uppercase"`` queries, 0-shot 0.09, 1-shot 1.00,
5-shot 1.00, soft prompt 1.00; the answer loss falls from 3.5 to under 0.02 nats.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils.models import frozen
from utils.progress import tqdm
from utils.prompt_eval import few_shot_prompt
from utils.world import FEW_SHOT_TASKS
from utils.world.families import few_shot

__all__ = [
    "DEFAULT_TASK",
    "EVAL_EVERY",
    "IGNORE",
    "SoftPrompt",
    "SoftPromptStep",
    "answer_batch",
    "answer_loss",
    "answer_matches",
    "compare_prompts",
    "few_shot_prompts",
    "frozen",
    "logits_with_soft_prompt",
    "nearest_tokens",
    "soft_prompt_accuracy",
    "soft_prompt_from_peft",
    "soft_prompt_step",
    "split_queries",
    "train_soft_prompt",
    "zero_shot_examples",
]

#: The task where a soft prompt shows best on the course model: 0-shot it is the worst task.
DEFAULT_TASK = "uppercase"
#: :func:`split_queries` holds out every ``EVAL_EVERY``-th query of the sorted table.
EVAL_EVERY = 3
#: The label of positions that the loss ignores (PyTorch's and ``transformers``' convention).
IGNORE = -100
#: One training step, called as :func:`soft_prompt_step` is: (model, soft prompt, optimizer,
#: input ids, labels) -> the loss before the update.
SoftPromptStep = Callable[[PreTrainedModel, "SoftPrompt", torch.optim.Optimizer, Tensor, Tensor], float]


# --------------------------------------------------------------------------------------------
# The soft prompt


class SoftPrompt(nn.Module):
    """``n_tokens`` trainable vectors that are put in front of a sequence's input embeddings.

    Build one from initial vectors, or with :meth:`from_text` (the embeddings of a text's tokens,
    e.g. a hand-written instruction or a solved example) or :meth:`from_vocabulary` (the embeddings
    of random vocabulary tokens). Lester et al. found that starting from real token embeddings
    (sampled vocabulary, or the words of the class labels) beats random vectors, most of all for
    small models: the vectors start where the model is used to seeing inputs. Starting from a
    text's tokens (``peft``'s ``"TEXT"`` initialisation) is the same idea.

    Attributes:
        embeddings: the trainable ``[n_tokens, d_model]`` parameter.
    """

    def __init__(self, init: Float[Tensor, "n_tokens d_model"]) -> None:
        super().__init__()
        if not isinstance(init, Tensor) or init.dim() != 2:
            shape = tuple(init.shape) if isinstance(init, Tensor) else type(init).__name__
            raise ValueError(f"a soft prompt is initialised from a [n_tokens, d_model] tensor, got {shape}: "
                             "use SoftPrompt.from_text(...) or SoftPrompt.from_vocabulary(...) to build one")
        _check_n_tokens(init.shape[0])
        self.embeddings = nn.Parameter(init.detach().clone().float())

    @property
    def n_tokens(self) -> int:
        """How many vectors the soft prompt puts in front of the input."""
        return self.embeddings.shape[0]

    @property
    def d_model(self) -> int:
        """The width of each vector (the model's ``d_model``)."""
        return self.embeddings.shape[1]

    @classmethod
    def from_text(cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str,
                  n_tokens: int | None = None) -> SoftPrompt:
        """A soft prompt that starts as the input embeddings of ``text``'s tokens (no BOS).

        With ``n_tokens`` given, the tokens are cut to that many, or repeated until there are
        that many, as ``peft``'s ``prompt_tuning_init="TEXT"`` does: the two start equal.
        """
        token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not token_ids:
            raise ValueError(f"text {text!r} has no tokens: give a non-empty text to initialise the soft prompt from")
        n_tokens = len(token_ids) if n_tokens is None else _check_n_tokens(n_tokens)
        repeated = token_ids * math.ceil(n_tokens / len(token_ids))
        return cls.from_token_ids(model, repeated[:n_tokens])

    @classmethod
    def from_vocabulary(cls, model: PreTrainedModel, n_tokens: int, seed: int = 0) -> SoftPrompt:
        """A soft prompt that starts as the input embeddings of ``n_tokens`` random vocabulary tokens."""
        _check_n_tokens(n_tokens)
        vocab_size = model.get_input_embeddings().weight.shape[0]
        token_ids = torch.randint(vocab_size, (n_tokens,), generator=torch.Generator().manual_seed(seed))
        return cls.from_token_ids(model, token_ids.tolist())

    @classmethod
    def from_token_ids(cls, model: PreTrainedModel, token_ids: Sequence[int]) -> SoftPrompt:
        """A soft prompt that starts as the input embeddings of ``token_ids``."""
        with torch.no_grad():
            init = model.get_input_embeddings()(torch.tensor(list(token_ids)))   # [n_tokens, d_model]
        return cls(init)

    def forward(self, input_embeds: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch n_plus_seq d_model"]:
        """The soft prompt, repeated for each sequence of the batch, then ``input_embeds``."""
        _check_input_embeds(input_embeds, self.d_model)
        prompt = einops.repeat(self.embeddings, "n d -> batch n d", batch=input_embeds.shape[0])
        return torch.cat([prompt.to(input_embeds.dtype), input_embeds], dim=1)

    def extra_repr(self) -> str:
        return f"n_tokens={self.n_tokens}, d_model={self.d_model}"


def logits_with_soft_prompt(
    model: PreTrainedModel,
    soft_prompt: Float[Tensor, "n_tokens d_model"],
    input_ids: Int[Tensor, "batch seq"],
) -> Float[Tensor, "batch seq vocab"]:
    """Reference for the exercise: the model's logits for ``input_ids`` with ``soft_prompt`` in front.

    Embed the tokens, put the soft prompt (the same for every sequence) before them, run the model
    on the embeddings, and keep the logits of the real tokens: position ``i`` of the result predicts
    ``input_ids[:, i + 1]``, as without a soft prompt.
    """
    _check_soft_prompt(model, soft_prompt, input_ids)
    token_embeds = model.get_input_embeddings()(input_ids)                                # [batch, seq, d_model]
    prompt = einops.repeat(soft_prompt, "n d -> batch n d", batch=input_ids.shape[0])    # [batch, n, d_model]
    embeds = torch.cat([prompt.to(token_embeds.dtype), token_embeds], dim=1)             # [batch, n + seq, d_model]
    # The model adds its own position information to inputs_embeds: positions 0..n-1 are the soft prompt.
    logits = model(inputs_embeds=embeds).logits                                          # [batch, n + seq, vocab]
    return logits[:, soft_prompt.shape[0]:]


def soft_prompt_from_peft(peft_model: Any) -> SoftPrompt:
    """A :class:`SoftPrompt` holding the virtual-token embeddings of a ``peft`` prompt-tuning model.

    ``peft_model`` is what ``peft.get_peft_model(model, PromptTuningConfig(...))`` returned; its
    logits for the real tokens equal ``logits_with_soft_prompt(model, soft_prompt.embeddings, ids)``.
    """
    peft_type = getattr(getattr(peft_model, "active_peft_config", None), "peft_type", None)
    if peft_type != "PROMPT_TUNING":  # peft's PeftType is a str enum
        raise ValueError(f"expected a peft model with prompt tuning, got a {type(peft_model).__name__} "
                         f"(peft_type {peft_type}): build one with "
                         "peft.get_peft_model(model, peft.PromptTuningConfig(task_type='CAUSAL_LM', ...))")
    return SoftPrompt(peft_model.get_prompt_embedding_to_save(peft_model.active_adapter))


# --------------------------------------------------------------------------------------------
# The data: a few-shot task asked 0-shot


def split_queries(task: str) -> tuple[list[str], list[str]]:
    """The task's queries split into ``(train, eval)``: sorted, every ``EVAL_EVERY``-th one is held out.

    The rule is fixed (no randomness), so every notebook and test evaluates on the same queries,
    and none of them is ever trained on. ``"uppercase"`` (103 queries) gives 68 to train on and 35
    to evaluate on.
    """
    queries = sorted(_task_table(task))
    held_out = set(queries[::EVAL_EVERY])
    return [q for q in queries if q not in held_out], [q for q in queries if q in held_out]


def zero_shot_examples(task: str, queries: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(prompts, answers)`` for each query, from the generator: ``"{query} ->"`` and ``" {target}\\n"``."""
    _check_queries(task, queries)
    rng = random.Random(0)  # unused by a 0-shot document with a fixed query
    docs = [few_shot(rng, task=task, n_shots=0, query=query) for query in queries]
    return [doc.prompt for doc in docs], [doc.answer + "\n" for doc in docs]


def few_shot_prompts(task: str, queries: Sequence[str], n_shots: int, seed: int = 0) -> list[str]:
    """A hand-written ``n_shots``-shot prompt for each query, from the generator (``utils.world.few_shot``).

    The solved examples are drawn (seeded) from the task's other queries, as in the training corpus.
    """
    _check_queries(task, queries)
    rng = random.Random(seed)
    return [few_shot_prompt(FEW_SHOT_TASKS[task], query, n_shots, rng) for query in queries]


def answer_batch(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], answers: Sequence[str],
) -> tuple[Int[Tensor, "batch seq"], Int[Tensor, "batch seq"]]:
    """Token ids ``BOS + prompt + answer`` (right-padded), and labels that keep only the answer tokens.

    ``labels[b, t]`` is ``input_ids[b, t]`` where that token belongs to the answer, ``IGNORE``
    elsewhere (the BOS, the prompt, the padding). Right padding cannot change the logits of the
    positions before it in a causal model, so no attention mask is needed.
    """
    if len(prompts) != len(answers) or not prompts:
        raise ValueError(f"need as many answers as prompts (at least one), got {len(prompts)} prompts "
                         f"and {len(answers)} answers")
    rows, label_rows = [], []
    for prompt, answer in zip(prompts, answers):
        prompt_ids = [tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        rows.append(prompt_ids + answer_ids)
        label_rows.append([IGNORE] * len(prompt_ids) + answer_ids)
    width = max(map(len, rows))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.bos_token_id
    input_ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in rows])
    labels = torch.tensor([row + [IGNORE] * (width - len(row)) for row in label_rows])
    return input_ids, labels


def answer_loss(logits: Float[Tensor, "batch seq vocab"], labels: Int[Tensor, "batch seq"]) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy (nats) over the answer tokens only (labels not ``IGNORE``)."""
    predictions = einops.rearrange(logits[:, :-1], "batch seq vocab -> (batch seq) vocab")
    targets = einops.rearrange(labels[:, 1:], "batch seq -> (batch seq)")
    return F.cross_entropy(predictions, targets, ignore_index=IGNORE)


def answer_matches(logits: Float[Tensor, "batch seq vocab"], labels: Int[Tensor, "batch seq"]) -> Bool[Tensor, "batch"]:
    """Whether every answer token is the argmax at the position before it.

    With the answer fed in (teacher forcing) this is exactly when greedy decoding would write the
    answer: one forward pass instead of a generation loop.
    """
    predicted = logits[:, :-1].argmax(dim=-1)                 # [batch, seq - 1]
    targets = labels[:, 1:]
    return ((predicted == targets) | (targets == IGNORE)).all(dim=-1)


# --------------------------------------------------------------------------------------------
# Training and evaluation


def soft_prompt_step(model: PreTrainedModel, soft_prompt: SoftPrompt, optimizer: torch.optim.Optimizer,
                     input_ids: Int[Tensor, "batch seq"], labels: Int[Tensor, "batch seq"]) -> float:
    """One optimisation step of prompt tuning: the loss of the answer tokens (:func:`answer_loss`)
    with ``soft_prompt`` in front of ``input_ids`` (:func:`logits_with_soft_prompt`), its gradient,
    and ``optimizer``'s update of the soft prompt. Returns the loss before the update (nats).

    ``optimizer`` holds the soft prompt's parameters only; ``model`` should be frozen
    (:func:`utils.finetune.frozen`), so that no weight of the model gets a gradient.
    """
    loss = answer_loss(logits_with_soft_prompt(model, soft_prompt.embeddings, input_ids), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def train_soft_prompt(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str = DEFAULT_TASK,
    n_tokens: int = 8,
    steps: int = 100,
    lr: float = 0.03,
    batch_size: int = 16,
    seed: int = 0,
    init_text: str | None = None,
    step: SoftPromptStep = soft_prompt_step,
) -> tuple[SoftPrompt, list[float]]:
    """Learn a soft prompt for ``task`` asked 0-shot, with ``model`` frozen.

    The training examples are the task's training queries (:func:`split_queries`), as prompt
    ``"{query} ->"`` and answer ``" {target}\\n"``; each step draws ``batch_size`` of them and
    takes an Adam step on the loss of the answer tokens. Only the soft prompt changes: the
    model's parameters get no gradient, and their ``requires_grad`` flags and train/eval mode
    are restored afterwards. The same ``seed`` gives the same soft prompt and losses.

    Args:
        model, tokenizer: a causal language model and its tokenizer.
        task: one of ``utils.world.FEW_SHOT_TASKS``.
        n_tokens: the length of the soft prompt.
        steps, lr, batch_size: the optimisation.
        seed: draws the initial tokens (when ``init_text`` is None) and the batches.
        init_text: start from the embeddings of this text's tokens (cut or repeated to
            ``n_tokens``) instead of random vocabulary tokens.
        step: the optimisation step, called as :func:`soft_prompt_step` is (the default; the
            lab passes the learner's own).

    Returns:
        The trained :class:`SoftPrompt` and the loss (nats) of each step.
    """
    _check_n_tokens(n_tokens)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    train_queries, _ = split_queries(task)
    input_ids, labels = answer_batch(tokenizer, *zero_shot_examples(task, train_queries))
    if init_text is None:
        soft_prompt = SoftPrompt.from_vocabulary(model, n_tokens, seed=seed)
    else:
        soft_prompt = SoftPrompt.from_text(model, tokenizer, init_text, n_tokens)
    optimizer = torch.optim.Adam(soft_prompt.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    with frozen(model):
        for _ in tqdm(range(steps), desc=f"soft prompt for {task!r}", leave=False):
            rows = torch.randperm(len(input_ids), generator=generator)[:batch_size]
            losses.append(step(model, soft_prompt, optimizer, input_ids[rows], labels[rows]))
    return soft_prompt, losses


@torch.no_grad()
def soft_prompt_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    soft_prompt: SoftPrompt | Float[Tensor, "n_tokens d_model"] | None,
    task: str,
    queries: Sequence[str],
) -> float:
    """Share of ``queries`` asked 0-shot whose answer (then a newline) greedy decoding writes.

    One batched, teacher-forced forward pass (:func:`answer_matches`). ``soft_prompt=None`` asks
    the plain model.
    """
    prompts, answers = zero_shot_examples(task, queries)
    return _accuracy(model, tokenizer, soft_prompt, prompts, answers)


def compare_prompts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    soft_prompt: SoftPrompt,
    task: str,
    queries: Sequence[str],
    shots: Sequence[int] = (0, 1, 5),
) -> dict[str, float]:
    """Accuracy on the same ``queries`` of hand-written ``n``-shot prompts and of the soft prompt.

    Returns ``{"0-shot": ..., "1-shot": ..., "5-shot": ..., "soft prompt (8 tokens)": ...}``,
    each the share of queries answered exactly (greedy, answer then newline).
    """
    _, answers = zero_shot_examples(task, queries)
    table = {f"{n}-shot": _accuracy(model, tokenizer, None, few_shot_prompts(task, queries, n), answers)
             for n in shots}
    table[f"soft prompt ({soft_prompt.n_tokens} tokens)"] = soft_prompt_accuracy(
        model, tokenizer, soft_prompt, task, queries)
    return table


def _accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
              soft_prompt: SoftPrompt | Tensor | None, prompts: Sequence[str], answers: Sequence[str]) -> float:
    input_ids, labels = answer_batch(tokenizer, prompts, answers)
    if soft_prompt is None:
        logits = model(input_ids=input_ids).logits
    else:
        embeddings = soft_prompt.embeddings if isinstance(soft_prompt, SoftPrompt) else soft_prompt
        logits = logits_with_soft_prompt(model, embeddings, input_ids)
    return answer_matches(logits, labels).float().mean().item()


@torch.no_grad()
def nearest_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                   soft_prompt: SoftPrompt | Float[Tensor, "n_tokens d_model"], k: int = 3) -> list[list[str]]:
    """For each soft-prompt vector, the ``k`` tokens whose input embeddings are closest (cosine).

    Lester et al. read trained soft prompts this way: the neighbours often name the task (for
    ``"uppercase"``, upper-case words), though the vectors themselves are not tokens.
    """
    embeddings = soft_prompt.embeddings if isinstance(soft_prompt, SoftPrompt) else soft_prompt
    vocab = F.normalize(model.get_input_embeddings().weight, dim=-1)       # [vocab, d_model]
    prompt = F.normalize(embeddings.detach(), dim=-1)                       # [n_tokens, d_model]
    similarity = einops.einsum(prompt, vocab, "n d, v d -> n v")
    return [[tokenizer.decode([token]) for token in row] for row in similarity.topk(k, dim=-1).indices.tolist()]


# --------------------------------------------------------------------------------------------
# Input checks


def _check_n_tokens(n_tokens: int) -> int:
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"n_tokens must be an integer >= 1 (the number of soft-prompt vectors), got {n_tokens!r}")
    return n_tokens


def _task_table(task: str) -> dict[str, str]:
    if task not in FEW_SHOT_TASKS:
        raise ValueError(f"unknown task {task!r}: choose one of {sorted(FEW_SHOT_TASKS)} "
                         "(the few-shot tasks of utils.world)")
    return FEW_SHOT_TASKS[task]


def _check_queries(task: str, queries: Sequence[str]) -> None:
    table = _task_table(task)
    if isinstance(queries, str):
        raise ValueError(f"queries must be a list of strings, got the string {queries!r}: write [{queries!r}]")
    unknown = [query for query in queries if query not in table]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a query of task {task!r}: use the task's own inputs, "
                         f"e.g. from split_queries({task!r}) (first few: {sorted(table)[:5]})")


def _check_input_embeds(input_embeds: Tensor, d_model: int) -> None:
    if input_embeds.dim() != 3 or input_embeds.shape[-1] != d_model:
        raise ValueError(f"input_embeds must be [batch, seq, d_model={d_model}], got shape {tuple(input_embeds.shape)}: "
                         "embed the token ids first (model.get_input_embeddings()(input_ids)), with a batch dimension")


def _check_soft_prompt(model: PreTrainedModel, soft_prompt: Tensor, input_ids: Tensor) -> None:
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be 2-D [batch, seq], got shape {tuple(input_ids.shape)}: "
                         "for a single sequence use input_ids.unsqueeze(0) (or tokenizer(..., return_tensors='pt'))")
    if soft_prompt.dim() != 2:
        raise ValueError(f"soft_prompt must be 2-D [n_tokens, d_model], got shape {tuple(soft_prompt.shape)}: "
                         "pass SoftPrompt.embeddings, one vector per virtual token")
    _check_n_tokens(soft_prompt.shape[0])
    d_model = model.get_input_embeddings().weight.shape[1]
    if soft_prompt.shape[1] != d_model:
        raise ValueError(f"the soft prompt's vectors have {soft_prompt.shape[1]} dimensions but the model's "
                         f"d_model is {d_model}: build the soft prompt from this model "
                         "(SoftPrompt.from_text(model, ...) or SoftPrompt.from_vocabulary(model, ...))")
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and soft_prompt.shape[0] + input_ids.shape[1] > positions:
        raise ValueError(f"{soft_prompt.shape[0]} soft tokens + {input_ids.shape[1]} input tokens exceed the "
                         f"model's {positions} positions: use a shorter soft prompt or shorter inputs")
