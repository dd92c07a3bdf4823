"""Chapter 2 reference: fine-tune the course model on chat data, with LoRA or with every weight.

The base model has never seen a ``User: ... / Assistant: ...`` turn. Fine-tuning on
:func:`utils.world.instructions.chat_dataset` teaches it the format, to answer from what it already
knows (capitals, plurals, opposites, stories), and to refuse one labelled class of requests. The
pieces, one section each:

1. **Batches.** :func:`chat_batch` tokenizes examples as ``BOS prompt response EOS`` and builds the
   labels with :func:`response_labels` (the lab's exercise): the loss is on the response only.
2. **Training.** :func:`train_model` runs AdamW (one :func:`training_step` at a time) on whatever
   parameters require a gradient, so the same loop trains a from-scratch LoRA
   (``utils.lora.add_lora``), a ``peft`` LoRA or DoRA
   (:func:`peft_adapter`), or the whole model (:func:`full_finetuning_copy`), and reports the cost:
   trainable parameters, optimizer-state bytes, seconds and tokens per second.
3. **Evaluation.** :func:`evaluate_chat` generates a response to held-out instructions and scores
   it against the generator's labels (format, accuracy per kind, refusal on harmful and on harmless
   requests); :func:`base_corpus_loss` measures forgetting on the pre-training corpus, per token
   (:func:`corpus_loss`).
4. **Adapters.** :func:`train_lora_adapter` trains one from an :class:`AdapterRecipe`.
   ``python -m utils.finetune`` trains the shipped adapters (:data:`SHIPPED_ADAPTERS`: the
   instruction adapter that chapter 5 studies, and two single-skill adapters) and writes each, with
   its manifest and evaluation, to ``utils/assets/adapters/<name>/``; :func:`load_adapted_model`
   loads the course model with one.
5. **Merging.** :func:`merged_skill_models` adds two skills' task vectors into the base weights
   (summed, averaged, SLERP) and :func:`skill_accuracy` measures each skill.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import einops
import peft
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils.course_model.evaluate import teacher_forced_logits
from utils.decoding import generate_text
from utils.lora import (
    ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, add_lora, apply_task_vector, count_parameters, load_adapter,
    merge_task_vectors_linear, merge_task_vectors_slerp, remove_lora, save_adapter, slerp,
)
from utils.models import (
    COURSE_MODEL_DIR, COURSE_MODEL_NAME, load_model, load_tokenizer, sized_training, verify_checkpoint, write_manifest,
)
from utils.progress import tqdm
from utils.world import generate_corpus
from utils.world.corpus import EVAL_SEED_OFFSET
from utils.world.instructions import (
    SKILLS, ChatExample, chat_dataset, chat_eval_set, score_response, summarize_scores,
)

#: Label value that ``transformers`` (and ``F.cross_entropy``) leave out of the loss.
IGNORE_INDEX = -100
#: The LoRA of the shipped adapter: every linear map of GPT-2's blocks (suffix matching).
GPT2_TARGETS: tuple[str, ...] = ("c_attn", "c_proj", "c_fc")
#: Every linear map of the blocks, per architecture (``model.config.model_type``).
BLOCK_LINEAR_TARGETS: dict[str, tuple[str, ...]] = {
    "gpt2": GPT2_TARGETS,
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}
ADAPTERS_DIR = COURSE_MODEL_DIR.parent / "adapters"


# --------------------------------------------------------------------------------------------
# 1. Batches: the loss on the response only


def response_labels(
    input_ids: Int[Tensor, "batch seq"], prompt_lengths: Int[Tensor, "batch"], attention_mask: Int[Tensor, "batch seq"],
) -> Int[Tensor, "batch seq"]:
    """Reference for the lab's exercise: the labels that put the loss on the response tokens only.

    ``labels[b, i] = input_ids[b, i]`` where position ``i`` belongs to the response (``i >=
    prompt_lengths[b]``, the BOS and prompt excluded) and is not padding; ``IGNORE_INDEX``
    elsewhere. The labels are *not* shifted: ``model(input_ids, labels=labels)`` compares position
    ``i``'s logits with ``labels[:, i + 1]`` itself.
    """
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)                     # [seq]
    in_response = positions >= einops.rearrange(prompt_lengths, "batch -> batch 1")             # [batch, seq]
    return input_ids.masked_fill(~in_response | (attention_mask == 0), IGNORE_INDEX)


@dataclass(frozen=True)
class ChatBatch:
    """Tokenized examples, right-padded: ``input_ids``, ``attention_mask`` and ``labels``, each ``[n, seq]``."""

    input_ids: Int[Tensor, "n seq"]
    attention_mask: Int[Tensor, "n seq"]
    labels: Int[Tensor, "n seq"]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, index: Int[Tensor, "k"]) -> ChatBatch:
        return ChatBatch(self.input_ids[index], self.attention_mask[index], self.labels[index])

    @property
    def response_tokens(self) -> int:
        """How many tokens carry a loss."""
        return int((self.labels != IGNORE_INDEX).sum())


def chat_batch(tokenizer: PreTrainedTokenizerBase, examples: Sequence[ChatExample]) -> ChatBatch:
    """Tokenize each example as ``BOS, prompt, response and its newline, EOS``, with labels on the response.

    The prompt and the response are tokenized separately, so the boundary is where generation
    starts: after ``"Assistant:"``, the model writes ``" "`` plus the response. Rows are padded on
    the right with EOS (masked out).
    """
    if not examples:
        raise ValueError("no examples: pass a non-empty list of ChatExample (utils.world.instructions.chat_dataset)")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    prompts = [[bos, *tokenizer(e.prompt, add_special_tokens=False)["input_ids"]] for e in examples]
    responses = [[*tokenizer(" " + e.response + "\n", add_special_tokens=False)["input_ids"], eos] for e in examples]
    rows = [prompt + response for prompt, response in zip(prompts, responses)]
    width = max(map(len, rows))
    input_ids = torch.tensor([row + [eos] * (width - len(row)) for row in rows])                  # [n, width]
    attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    prompt_lengths = torch.tensor([len(prompt) for prompt in prompts])
    return ChatBatch(input_ids, attention_mask, response_labels(input_ids, prompt_lengths, attention_mask))


# --------------------------------------------------------------------------------------------
# 2. Training


@dataclass(frozen=True)
class TrainingRun:
    """What a training run cost and how its loss went."""

    losses: list[float]
    seconds: float
    tokens_per_second: float            # all tokens of the batches (prompt included), forward and backward
    trainable_parameters: int
    total_parameters: int
    optimizer_state_bytes: int          # AdamW keeps two tensors per trainable parameter

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / len(self.losses)


def training_step(model: PreTrainedModel, rows: ChatBatch, optimizer: torch.optim.Optimizer) -> float:
    """One optimisation step on ``rows``: the model's mean loss over their response tokens (the
    labels, ``IGNORE_INDEX`` elsewhere; transformers shifts them), its gradient, ``optimizer``'s
    update. Returns the loss before the update (nats)."""
    loss = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask, labels=rows.labels).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_model(model: PreTrainedModel, batch: ChatBatch, *, steps: int = 200, lr: float = 3e-3,
                batch_size: int = 32, seed: int = 0, desc: str = "fine-tuning",
                step: Callable[[PreTrainedModel, ChatBatch, torch.optim.Optimizer], float] = training_step,
                ) -> TrainingRun:
    """AdamW on every parameter of ``model`` that requires a gradient, on random rows of ``batch``.

    Each step draws ``batch_size`` rows (a seeded permutation, so two runs with the same ``seed``
    see the same rows in the same order) and takes one ``step`` (:func:`training_step`; the lab
    passes the learner's) on the mean loss of their response tokens. The model is left in eval mode.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("no parameter of the model requires a gradient: add LoRA (utils.lora.add_lora), wrap it "
                         "with peft, or unfreeze it (full_finetuning_copy) before training")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    losses, tokens = [], 0
    model.train()
    started = time.perf_counter()
    for _ in tqdm(range(steps), desc=desc, leave=False):
        rows = batch.rows(torch.randperm(len(batch), generator=generator)[:batch_size])
        losses.append(step(model, rows, optimizer))
        tokens += int(rows.attention_mask.sum())
    seconds = time.perf_counter() - started
    model.eval()
    trainable, total = count_parameters(model)
    state_bytes = sum(t.numel() * t.element_size() for state in optimizer.state.values()
                      for t in state.values() if torch.is_tensor(t) and t.ndim > 0)
    return TrainingRun(losses, seconds, tokens / seconds, trainable, total, state_bytes)


def full_finetuning_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A copy of ``model`` with every parameter trainable (the baseline LoRA is compared with)."""
    copied = copy.deepcopy(model)
    copied.requires_grad_(True)
    return copied


def block_linear_targets(model: PreTrainedModel) -> tuple[str, ...]:
    """The LoRA targets that cover every linear map of ``model``'s blocks (GPT-2, GPT-NeoX, Llama)."""
    model_type = model.config.model_type
    if model_type not in BLOCK_LINEAR_TARGETS:
        raise ValueError(f"no default LoRA targets for a {model_type!r} model (known: {sorted(BLOCK_LINEAR_TARGETS)}): "
                         "pass targets yourself, chosen from utils.lora.linear_module_names(model)")
    return BLOCK_LINEAR_TARGETS[model_type]


def peft_adapter(model: PreTrainedModel, *, r: int = 8, alpha: float = 16, dropout: float = 0.0,
                 targets: Sequence[str] | None = None, use_dora: bool = False) -> peft.PeftModel:
    """A ``peft`` LoRA (or DoRA, ``use_dora=True``) on a copy of ``model``: the library version of ``add_lora``.

    ``targets`` defaults to every linear map of the blocks (:func:`block_linear_targets`).
    """
    targets = block_linear_targets(model) if targets is None else targets
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                             use_dora=use_dora, fan_in_fan_out=model.config.model_type == "gpt2")
    return peft.get_peft_model(copy.deepcopy(model), config)


# --------------------------------------------------------------------------------------------
# 3. Evaluation


def chat_responses(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[ChatExample],
                   max_new_tokens: int = 48) -> list[str]:
    """The model's greedy response to each example's prompt, up to the end of its line (one batch)."""
    return [text.strip() for text in generate_text(model, tokenizer, [e.prompt for e in examples], max_new_tokens,
                                                   stop="\n")]


def evaluate_chat(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[ChatExample],
                  max_new_tokens: int = 48) -> dict[str, float]:
    """Format rate, accuracy per kind and refusal rates of the model's responses (see ``summarize_scores``)."""
    responses = chat_responses(model, tokenizer, examples, max_new_tokens)
    return summarize_scores(examples, [score_response(e, r) for e, r in zip(examples, responses)])


def corpus_loss(logits: Sequence[Float[Tensor, "seq vocab"]], sequences: Sequence[Sequence[int]]) -> float:
    """The mean next-token loss (nats) of a corpus, per token: every predicted token of every
    sequence counts once, so a long document weighs more than a short one (not a mean of the
    documents' means). ``logits[i]`` are the model's logits for ``sequences[i]``, unpadded."""
    total = sum(F.cross_entropy(row[:-1], torch.tensor(sequence[1:]), reduction="sum") for row, sequence in
                zip(logits, sequences))
    return float(total) / sum(len(sequence) - 1 for sequence in sequences)


@torch.no_grad()
def base_corpus_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int = 200, seed: int = 0) -> float:
    """Mean next-token loss (nats) on ``n`` held-out documents of the pre-training corpus: forgetting shows here."""
    sequences = corpus_sequences(tokenizer, n, seed)
    return corpus_loss(teacher_forced_logits(model, sequences), sequences)


def corpus_sequences(tokenizer: PreTrainedTokenizerBase, n: int = 200, seed: int = 0) -> list[list[int]]:
    """The token ids (BOS first) of ``n`` held-out documents of the pre-training corpus."""
    documents = generate_corpus(n, seed=EVAL_SEED_OFFSET + seed)
    return [[tokenizer.bos_token_id, *tokenizer(d.text, add_special_tokens=False)["input_ids"]] for d in documents]


# --------------------------------------------------------------------------------------------
# 4. LoRA adapters: a recipe, the shipped instruction adapter


@dataclass(frozen=True)
class AdapterRecipe:
    """Everything that decides a trained LoRA adapter. The defaults make the shipped instruction adapter."""

    r: int = 8
    alpha: float = 16
    targets: tuple[str, ...] | None = None    # None: every linear map of the blocks (block_linear_targets)
    examples: int = 8000
    steps: int = 1200
    lr: float = 5e-3
    batch_size: int = 32
    seed: int = 0
    kinds: tuple[str, ...] | None = None     # None: every kind of chat example


def train_lora_adapter(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                       recipe: AdapterRecipe = AdapterRecipe()) -> tuple[PreTrainedModel, TrainingRun]:
    """A copy of ``model`` with a from-scratch LoRA (``utils.lora.add_lora``) trained on chat examples."""
    adapted = copy.deepcopy(model)
    targets = block_linear_targets(model) if recipe.targets is None else recipe.targets
    add_lora(adapted, targets, r=recipe.r, alpha=recipe.alpha, seed=recipe.seed)
    data = chat_batch(tokenizer, chat_dataset(recipe.examples, seed=recipe.seed, kinds=recipe.kinds))
    run = train_model(adapted, data, steps=recipe.steps, lr=recipe.lr, batch_size=recipe.batch_size,
                      seed=recipe.seed, desc=f"LoRA r={recipe.r}")
    return adapted, run


#: The adapters the course ships (``utils/assets/adapters/<name>/``): the instruction adapter that
#: chapter 5 studies, and one adapter per skill for the merging experiment.
SHIPPED_ADAPTERS: dict[str, AdapterRecipe] = {
    "instruct": AdapterRecipe(),
    "geography": AdapterRecipe(kinds=SKILLS["geography"], examples=2000, steps=300),
    "grammar": AdapterRecipe(kinds=SKILLS["grammar"], examples=2000, steps=300),
}


def write_adapter(name: str, out_dir: Path | None = None, n_eval: int = 300) -> dict:
    """Train the shipped adapter ``name`` (its recipe in :data:`SHIPPED_ADAPTERS`) on the course model,
    evaluate it, and write ``adapter_model.safetensors``, ``adapter_config.json`` (peft's format),
    ``evaluation.json`` and ``manifest.json`` (the recipe, the run, the SHA-256 of the adapter files)."""
    if name not in SHIPPED_ADAPTERS:
        raise ValueError(f"unknown adapter {name!r}: the shipped ones are {sorted(SHIPPED_ADAPTERS)}")
    recipe, out_dir = SHIPPED_ADAPTERS[name], Path(out_dir or ADAPTERS_DIR / name)
    model, tokenizer = load_model("course"), load_tokenizer("course")
    adapted, run = train_lora_adapter(model, tokenizer, recipe)
    save_adapter(adapted, out_dir)
    examples = chat_eval_set(n_eval, seed=0)
    evaluation = {
        "n": n_eval,
        "base": evaluate_chat(model, tokenizer, examples),
        "adapted": evaluate_chat(adapted, tokenizer, examples),
        "base_corpus_loss": {"base": base_corpus_loss(model, tokenizer), "adapted": base_corpus_loss(adapted, tokenizer)},
    }
    (out_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=1) + "\n")
    return write_manifest(
        out_dir, files=(ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE), command=f"python -m utils.finetune {name}",
        recipe=asdict(recipe), seconds=round(run.seconds, 1), first_loss=run.losses[0],
        final_loss=sum(run.losses[-20:]) / 20, trainable_parameters=run.trainable_parameters)


def load_adapted_model(name: str = "instruct", *, merge: bool = True, adapter_dir: Path | None = None
                       ) -> PreTrainedModel:
    """The course model with a shipped adapter, its files checked against the adapter's manifest.

    ``merge=True`` folds the adapter into the weights (a plain ``GPT2LMHeadModel``, as fast as the
    base model); ``merge=False`` keeps the LoRA layers (``utils.lora.LoRALinear``).
    """
    adapter_dir = Path(adapter_dir or ADAPTERS_DIR / name)
    verify_checkpoint(adapter_dir, hint=f"the shipped adapters are {sorted(SHIPPED_ADAPTERS)}; restore them with "
                                        "`git checkout -- utils/assets/adapters` or rebuild one with "
                                        f"`python -m utils.finetune {name}`")
    model = load_model("course")
    load_adapter(model, adapter_dir)
    if merge:
        remove_lora(model, merge=True)
    return model


def shipped_or_trained_adapter(name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                               model_name: str, *, merge: bool = True, steps_elsewhere: int = 60) -> PreTrainedModel:
    """The shipped adapter ``name`` on the course model; on any other model (``model_name`` is not
    ``"course"``), the same recipe trained here for ``steps_elsewhere`` steps, fewer and smaller on a
    larger model (:func:`~utils.models.sized_training`), since the shipped adapters fit only the course
    model's weights."""
    if model_name == COURSE_MODEL_NAME:
        return load_adapted_model(name, merge=merge)
    if name not in SHIPPED_ADAPTERS:
        raise ValueError(f"unknown adapter {name!r}: the shipped ones are {sorted(SHIPPED_ADAPTERS)}")
    recipe = SHIPPED_ADAPTERS[name]
    print(f"no shipped '{name}' adapter for {model_name}: training one here for {steps_elsewhere} steps of "
          f"{recipe.batch_size} examples (the course model's had {recipe.steps}), so expect a weaker one")
    steps, batch_size = sized_training(model, steps_elsewhere, recipe.batch_size, what=f"the '{name}' adapter")
    adapted, _ = train_lora_adapter(model, tokenizer, replace(recipe, steps=steps, batch_size=batch_size))
    if merge:
        remove_lora(adapted, merge=True)
    return adapted

# --------------------------------------------------------------------------------------------
# 5. Merging adapters trained on different skills


def skill_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int = 60, seed: int = 0
                   ) -> dict[str, float]:
    """Accuracy on ``n`` held-out chat examples of each skill of ``utils.world.instructions.SKILLS``."""
    return {skill: evaluate_chat(model, tokenizer, chat_eval_set(n, seed=seed, kinds=kinds))["accuracy"]
            for skill, kinds in SKILLS.items()}


def merged_skill_models(
    model: PreTrainedModel, vectors: Sequence[Mapping[str, Tensor]], *,
    linear: Callable[[Sequence[Mapping[str, Tensor]], Sequence[float]], dict[str, Tensor]] = merge_task_vectors_linear,
    interpolate: Callable[[Tensor, Tensor, float], Tensor] = slerp,
) -> dict[str, PreTrainedModel]:
    """Copies of ``model`` with two task vectors merged three ways: summed (task arithmetic), averaged,
    and SLERP at ``t = 0.5`` (``utils.lora``). ``linear`` and ``interpolate`` do the merging (the
    library's by default; the lab passes the learner's)."""
    first, second = vectors
    merged = {"sum": linear(vectors, [1.0, 1.0]),
              "average": linear(vectors, [0.5, 0.5]),
              "slerp": merge_task_vectors_slerp(first, second, 0.5, interpolate=interpolate)}
    return {name: apply_task_vector(model, vector) for name, vector in merged.items()}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m utils.finetune [name ...]``: train and write the shipped adapters (default: all)."""
    parser = argparse.ArgumentParser(prog="python -m utils.finetune", description=main.__doc__)
    parser.add_argument("names", nargs="*", metavar="name", help=f"adapters to train: {', '.join(SHIPPED_ADAPTERS)}")
    names = parser.parse_args(argv).names or list(SHIPPED_ADAPTERS)
    for name in names:
        manifest = write_adapter(name)
        evaluation = json.loads((ADAPTERS_DIR / name / "evaluation.json").read_text())
        print(f"{name}: {manifest['seconds']} s, final loss {manifest['final_loss']:.3f}, "
              f"held-out accuracy {evaluation['adapted']['accuracy']:.3f}")


if __name__ == "__main__":
    main()
