"""Load the course model (or any GPT-2, Pythia or Llama checkpoint) with the three libraries the course uses.

``load_model(MODEL)`` is the one line every notebook starts with::

    model = load_model("course")                               # transformers GPT2LMHeadModel
    model = load_model("course", backend="nnsight")            # nnsight TransformersModel
    model = load_model("course", backend="transformer_lens")   # TransformerLens HookedTransformer
    model = load_model("gpt2")                                 # the real GPT-2, where the hub is reachable

``name`` is ``"course"`` (the checkpoint shipped in ``utils/assets/course_model``), a local
directory in Hugging Face format, or a hub name. All three backends hold the same weights: the
residual stream and the logits agree to float precision (``tests/test_models.py`` checks it).

The course checkpoint carries ``manifest.json`` (how it was trained and the SHA-256 of its files);
``load_model("course")`` verifies it so that a corrupted or half-written checkpoint fails loudly.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from transformers import (
    AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

if TYPE_CHECKING:
    from nnsight import TransformersModel
    from transformer_lens import HookedTransformer, HookedTransformerConfig

COURSE_MODEL_NAME = "course"
COURSE_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "course_model"
MANIFEST_FILE = "manifest.json"
#: The files whose checksums the manifest records (those present are recorded).
CHECKSUMMED_FILES = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json")
RETRAIN_HINT = ("restore the shipped files with `git checkout -- utils/assets/course_model` "
                "or retrain with `python -m utils.course_model train`")

Backend = Literal["hf", "nnsight", "transformer_lens"]
BACKENDS: tuple[Backend, ...] = ("hf", "nnsight", "transformer_lens")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match its manifest."""


class ModelNotAvailableError(OSError):
    """A hub model was asked for on a machine that cannot download it."""


class ModelTooLargeError(MemoryError):
    """A model's weights alone would not fit the memory this machine has free."""


# --------------------------------------------------------------------------------------------
# The manifest


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(checkpoint_dir: Path, *, files: Sequence[str] = CHECKSUMMED_FILES, **fields: Any) -> dict[str, Any]:
    """Write ``manifest.json`` into ``checkpoint_dir``: ``fields`` plus the checksums of its files.

    ``files`` lists the files to checksum (those present are recorded); the first one, the weights
    (``model.safetensors`` for a model), must exist. Returns the manifest as a dict. ``fields`` must be
    JSON-serialisable (how the model was trained: tokens, steps, losses, seconds, command, config...).
    """
    checkpoint_dir = Path(checkpoint_dir)
    checksums = {
        name: {"sha256": file_sha256(checkpoint_dir / name), "bytes": (checkpoint_dir / name).stat().st_size}
        for name in files if (checkpoint_dir / name).exists()
    }
    if files[0] not in checksums:
        raise CheckpointError(f"{checkpoint_dir} has no {files[0]}: save the weights before writing their manifest")
    manifest = {**fields, "files": checksums}
    (checkpoint_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(checkpoint_dir: Path = COURSE_MODEL_DIR, hint: str = RETRAIN_HINT) -> dict[str, Any]:
    """The manifest of a checkpoint directory (raises :class:`CheckpointError`, ending with ``hint``, when it is missing)."""
    path = Path(checkpoint_dir) / MANIFEST_FILE
    if not path.exists():
        raise CheckpointError(f"{path} is missing: {hint}")
    return json.loads(path.read_text())


def verify_checkpoint(checkpoint_dir: Path = COURSE_MODEL_DIR, hint: str = RETRAIN_HINT) -> dict[str, Any]:
    """Check every file listed in the manifest against its SHA-256; return the manifest.

    Raises :class:`CheckpointError` naming the first missing or modified file, and ``hint``: how to
    restore it (by default, the course model's).
    """
    checkpoint_dir = Path(checkpoint_dir)
    manifest = read_manifest(checkpoint_dir, hint)
    for name, expected in manifest["files"].items():
        path = checkpoint_dir / name
        if not path.exists():
            raise CheckpointError(f"{path} is missing from the checkpoint: {hint}")
        if file_sha256(path) != expected["sha256"]:
            raise CheckpointError(
                f"{path} does not match the SHA-256 in {MANIFEST_FILE} (modified, truncated or a Git LFS "
                f"pointer?): {hint}")
    return manifest


# --------------------------------------------------------------------------------------------
# Finding a checkpoint


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` asks for no downloads."""
    return any(os.environ.get(flag, "").strip().lower() in {"1", "true", "yes", "on"}
               for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def resolve_checkpoint(name: str | Path) -> str:
    """Where ``name`` is loaded from: the course directory, a local directory or a hub name.

    ``"course"`` is verified against its manifest. A hub name on an offline machine (``HF_HUB_OFFLINE=1``)
    raises :class:`ModelNotAvailableError` at once, unless it is already in the local hub cache.
    """
    if str(name) == COURSE_MODEL_NAME:
        verify_checkpoint(COURSE_MODEL_DIR)
        return str(COURSE_MODEL_DIR)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise CheckpointError(f"{path} is a directory without config.json: pass a directory written by "
                                  "`model.save_pretrained(...)` (Hugging Face format)")
        return str(path.resolve())
    if str(name).startswith((".", "/", "~")):
        raise CheckpointError(f"{name} does not exist: pass an existing checkpoint directory, 'course' or a hub name")
    if hub_offline() and not _in_hub_cache(str(name)):
        raise ModelNotAvailableError(
            f"'{name}' is a hub model and this machine is offline (HF_HUB_OFFLINE=1) without a cached copy: "
            f"use MODEL = 'course' here, or run the notebook where the hub is reachable (e.g. Colab)")
    return str(name)


# --------------------------------------------------------------------------------------------
# Loading


def load_tokenizer(name: str | Path = COURSE_MODEL_NAME) -> PreTrainedTokenizerBase:
    """The tokenizer of checkpoint ``name``, with a pad token (the EOS token, as GPT-2 does) for batching."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(name))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# peft reads `model.is_gradient_checkpointing` when it wraps a model (get_peft_model,
# PeftModel.from_pretrained), and transformers 5 marks that property deprecated: a FutureWarning with
# transformers' own path that a learner cannot act on (peft's to change). Only that warning is dropped.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def load_hf_model(name: str | Path = COURSE_MODEL_NAME, *, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A ``transformers`` causal LM in eval mode with eager attention (so attention weights can be returned)."""
    checkpoint = resolve_checkpoint(name)
    check_fits_in_memory(name, AutoConfig.from_pretrained(checkpoint), dtype, device)
    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    if Path(checkpoint).is_dir():  # a local checkpoint loads in a blink: its progress bar is noise
        hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype, attn_implementation="eager")
    except OSError as error:
        raise ModelNotAvailableError(f"could not load '{name}' ({error}): check the name, or use MODEL = 'course'") from error
    finally:
        if bars_were_enabled:
            hf_logging.enable_progress_bar()
    if model.loss_type is None:
        # transformers guesses the loss from the class name; "GPT2LMHeadModel" names none, so the
        # first loss computed warns "`loss_type=None` ... Using the default loss: ForCausalLMLoss".
        # Name that loss, the one a causal LM trains with, so it is used without the warning.
        model.loss_type = "ForCausalLM"
    return model.to(device).eval()


def parameter_count(config: PretrainedConfig) -> int:
    """The number of parameters of a causal LM with ``config``, counted without allocating its weights."""
    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())


def free_memory_bytes(device: str | torch.device = "cpu") -> int:
    """Bytes of memory free for new tensors on ``device``: the machine's available RAM, or the GPU's free memory."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def check_fits_in_memory(name: str | Path, config: PretrainedConfig, dtype: torch.dtype = torch.float32,
                         device: str | torch.device = "cpu") -> int:
    """The bytes ``name``'s weights need in ``dtype``; raises :class:`ModelTooLargeError` when that is more than
    ``device`` has free, before anything is downloaded or allocated."""
    count = parameter_count(config)
    needed = count * torch.empty((), dtype=dtype).element_size()
    free = free_memory_bytes(device)
    if needed > free:
        raise ModelTooLargeError(
            f"'{name}' has {count:,} parameters: its weights alone need {_readable(needed)} in "
            f"{str(dtype).removeprefix('torch.')}, and {torch.device(device)} has {_readable(free)} free. Choose a "
            "smaller MODEL (e.g. 'gpt2' or 'EleutherAI/pythia-160m'), load it in half precision "
            "(dtype=torch.bfloat16 halves it) or run on a machine with more memory")
    return needed


def _readable(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


# --------------------------------------------------------------------------------------------
# Work sized to the model: what a notebook trains on another model, it trains for a bounded time

#: A run sized by :func:`sized_training` may cost this many times the course model's run.
TRAINING_BUDGET = 2.0


@functools.cache
def course_parameter_count() -> int:
    """The shipped course model's number of parameters, from its config."""
    return parameter_count(AutoConfig.from_pretrained(COURSE_MODEL_DIR))


def size_relative_to_course_model(model: torch.nn.Module) -> float:
    """``model``'s parameter count over the course model's: about how many times a forward pass costs more."""
    return sum(p.numel() for p in model.parameters()) / course_parameter_count()


def sized_training(model: torch.nn.Module, steps: int, batch_size: int, *, what: str,
                   budget: float = TRAINING_BUDGET, min_steps: int = 5, min_batch: int = 4) -> tuple[int, int]:
    """``(steps, batch_size)`` for a run that takes ``steps`` steps of ``batch_size`` examples on the course model.

    A step costs about the model's parameter count per token, so on a model ``r`` times the course model's
    size the run would cost ``r`` times as much. Where that is more than ``budget`` times the course model's
    run, the run is cut to fit: the batch first (down to ``min_batch``), then the steps (down to
    ``min_steps``), and a line names ``what`` was cut and how to ask for more. On the course model, or any
    model no larger than ``budget`` times it, the run is returned unchanged.
    """
    if steps < 1 or batch_size < 1 or budget <= 0:
        raise ValueError(f"steps ({steps}), batch_size ({batch_size}) and budget ({budget}) must be positive")
    ratio = size_relative_to_course_model(model)
    share = budget / ratio                                       # of the course model's run that fits the budget
    if share >= 1:
        return steps, batch_size
    sized_batch = min(batch_size, max(min_batch, math.ceil(batch_size * share)))
    sized_steps = min(steps, max(min_steps, round(steps * share * batch_size / sized_batch)))
    print(f"{what}: this model is {ratio:,.0f} times the course model's size, so {sized_steps} steps of {sized_batch} "
          f"examples instead of {steps} of {batch_size} (about {budget:g} times the course model's cost; expect a "
          "weaker result, or pass a larger budget= for a longer run)")
    return sized_steps, sized_batch


#: A sweep sized by :func:`sized_prompts` may cost this many times the course model's.
SWEEP_BUDGET = 2.0


def sized_prompts(model: torch.nn.Module, n: int, *, what: str, budget: float = SWEEP_BUDGET, minimum: int = 8,
                  quiet: bool = False) -> int:
    """How many of ``n`` prompts (texts, tokens) a sweep or an evaluation runs on ``model``.

    A forward pass costs about the model's parameter count per token, so on a model ``r`` times the course
    model's size a sweep over ``n`` prompts costs ``r`` times as much. Where that is more than ``budget`` times
    the course model's sweep, the prompts are cut to ``ceil(n * budget / r)``, never below ``minimum`` (nor
    above ``n``), and a line names ``what`` was cut and how to ask for more. On the course model, or any model
    no larger than ``budget`` times it, ``n`` is returned unchanged. ``quiet`` leaves the line out (a checker's
    own cases).
    """
    if n < 1 or minimum < 1 or budget <= 0:
        raise ValueError(f"n ({n}), minimum ({minimum}) and budget ({budget}) must be positive")
    ratio = size_relative_to_course_model(model)
    if ratio <= budget:
        return n
    sized = min(n, max(minimum, math.ceil(n * budget / ratio)))
    if sized < n and not quiet:
        print(f"{what}: this model is {ratio:,.0f} times the course model's size, so {sized:,} instead of {n:,} "
              f"(expect noisier numbers, or pass a larger budget= for more)")
    return sized


def load_model(name: str | Path = COURSE_MODEL_NAME, backend: Backend = "hf", *,
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               ) -> PreTrainedModel | TransformersModel | HookedTransformer:
    """Load checkpoint ``name`` with ``backend``: ``"hf"``, ``"nnsight"`` or ``"transformer_lens"``.

    - ``"hf"``: a ``transformers`` model (``GPT2LMHeadModel`` for the course model), eval mode.
    - ``"nnsight"``: ``nnsight.TransformersModel`` (text generation; the class ``LanguageModel`` used to be)
      wrapping that model, with its tokenizer.
    - ``"transformer_lens"``: a ``HookedTransformer`` with the same weights, *unprocessed* (no layer-norm
      folding or centring), so its hook values equal the ``transformers`` activations.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(map(repr, BACKENDS))}")
    hf_model = load_hf_model(name, device=device, dtype=dtype)
    if backend == "hf":
        return hf_model
    tokenizer = load_tokenizer(name)
    if backend == "nnsight":
        from nnsight import TransformersModel

        return TransformersModel(hf_model, tokenizer=tokenizer, task="text-generation")
    return to_hooked_transformer(hf_model, tokenizer)


# --------------------------------------------------------------------------------------------
# TransformerLens, offline


def hooked_transformer_config(hf_config: PretrainedConfig, *, device: str | torch.device = "cpu",
                              dtype: torch.dtype = torch.float32) -> HookedTransformerConfig:
    """The ``HookedTransformerConfig`` equivalent to a GPT-2, GPT-NeoX or Llama ``transformers`` config.

    Built from the config object alone, so it never contacts the hub (TransformerLens's own
    ``from_pretrained`` looks names up in its list of official models).
    """
    from transformer_lens import HookedTransformerConfig

    architecture = (hf_config.architectures or [type(hf_config).__name__])[0]
    common = dict(
        d_model=hf_config.hidden_size, n_heads=hf_config.num_attention_heads,
        d_head=hf_config.hidden_size // hf_config.num_attention_heads, n_layers=hf_config.num_hidden_layers,
        d_vocab=hf_config.vocab_size, n_ctx=hf_config.max_position_embeddings, device=str(device), dtype=dtype,
        original_architecture=architecture, model_name=getattr(hf_config, "name_or_path", "") or architecture,
        init_weights=False,
    )
    if hf_config.model_type == "gpt2":
        family = dict(
            d_mlp=hf_config.n_inner or 4 * hf_config.n_embd, act_fn=hf_config.activation_function,
            eps=hf_config.layer_norm_epsilon, normalization_type="LN", positional_embedding_type="standard",
            use_attn_scale=hf_config.scale_attn_weights,
            scale_attn_by_inverse_layer_idx=hf_config.scale_attn_by_inverse_layer_idx,
        )
    elif hf_config.model_type == "gpt_neox":
        d_head = common["d_head"]
        family = dict(
            d_mlp=hf_config.intermediate_size, act_fn=hf_config.hidden_act, eps=hf_config.layer_norm_eps,
            normalization_type="LN", positional_embedding_type="rotary",
            rotary_dim=round(_neox_rotary_pct(hf_config) * d_head), rotary_adjacent_pairs=False,
            rotary_base=_rope_theta(hf_config), parallel_attn_mlp=hf_config.use_parallel_residual,
            default_prepend_bos=False,
        )
    elif hf_config.model_type == "llama":
        n_kv = hf_config.num_key_value_heads
        family = dict(
            d_mlp=hf_config.intermediate_size, act_fn=hf_config.hidden_act, eps=hf_config.rms_norm_eps,
            normalization_type="RMS", final_rms=True, gated_mlp=True, positional_embedding_type="rotary",
            rotary_dim=common["d_head"], rotary_adjacent_pairs=False, rotary_base=_rope_theta(hf_config),
            n_key_value_heads=n_kv if n_kv != hf_config.num_attention_heads else None,
        )
    else:
        raise NotImplementedError(
            f"no TransformerLens conversion for model type {hf_config.model_type!r}: the course supports "
            "gpt2, gpt_neox (Pythia) and llama; use backend='hf' or 'nnsight' for other models")
    return HookedTransformerConfig(**common, **family)


def _rope_theta(hf_config: PretrainedConfig) -> float:
    parameters = getattr(hf_config, "rope_parameters", None) or {}
    return float(parameters.get("rope_theta", getattr(hf_config, "rope_theta", 10_000.0)))


def _neox_rotary_pct(hf_config: PretrainedConfig) -> float:
    parameters = getattr(hf_config, "rope_parameters", None) or {}
    return float(parameters.get("partial_rotary_factor", getattr(hf_config, "rotary_pct", 1.0)))


def to_hooked_transformer(hf_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None) -> HookedTransformer:
    """A ``HookedTransformer`` holding ``hf_model``'s weights, unprocessed, in eval mode, on its device."""
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions import (
        convert_gpt2_weights, convert_llama_weights, convert_neox_weights,
    )

    cfg = hooked_transformer_config(hf_model.config, device=hf_model.device, dtype=hf_model.dtype)
    convert = {"gpt2": convert_gpt2_weights, "gpt_neox": convert_neox_weights, "llama": convert_llama_weights}
    state_dict = convert[hf_model.config.model_type](hf_model, cfg)
    with warnings.catch_warnings():
        # TransformerLens 3 marks HookedTransformer deprecated in favour of TransformerBridge, but it is the
        # HookedRootModule that sae-lens trains on, and its hook names are the ones the field's papers use.
        warnings.filterwarnings("ignore", "HookedTransformer is deprecated", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state_dict, fold_ln=False, center_writing_weights=False, center_unembed=False,
        fold_value_biases=False, refactor_factored_attn_matrices=False)
    return model.to(hf_model.device).eval()


# --------------------------------------------------------------------------------------------
# Tiny random models of each family (tests and checkers: the hub architectures, without the hub)

TINY_FAMILIES = ("gpt2", "gpt_neox", "llama")


def tiny_random_config(family: str, vocab_size: int = 320) -> PretrainedConfig:
    """A 2-layer, d_model 64, 4-head config of ``family`` (Llama with 2 key-value heads: grouped queries)."""
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    shared = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0)
    if family == "gpt2":
        return GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=128, **shared)
    if family == "gpt_neox":
        return GPTNeoXConfig(num_hidden_layers=2, num_attention_heads=4, hidden_size=64, intermediate_size=256,
                             max_position_embeddings=128, rotary_pct=0.25, **shared)
    if family == "llama":
        return LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64,
                           intermediate_size=128, max_position_embeddings=128, **shared)
    raise ValueError(f"unknown family {family!r}: use one of {', '.join(TINY_FAMILIES)}")


def tiny_random_model(family: str, seed: int = 0, vocab_size: int = 320) -> PreTrainedModel:
    """A randomly initialised tiny causal LM of ``family`` in eval mode (weights fixed by ``seed``)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_random_config(family, vocab_size), attn_implementation="eager")
    return model.eval()


#: Real models' shapes (layers, heads, widths, context) with the course tokenizer's vocabulary: a
#: notebook run on a random checkpoint of such a shape costs what it would on the real model.
REAL_MODEL_SHAPES: dict[str, dict[str, Any]] = {
    "gpt2-small": dict(model_type="gpt2", n_layer=12, n_head=12, n_embd=768, n_positions=1024),
    "pythia-160m": dict(model_type="gpt_neox", num_hidden_layers=12, num_attention_heads=12, hidden_size=768,
                        intermediate_size=3072, max_position_embeddings=2048, rotary_pct=0.25),
}


def random_checkpoint_of_shape(shape: str, directory: str | Path, seed: int = 0) -> Path:
    """Write a randomly initialised checkpoint of a real model's shape (:data:`REAL_MODEL_SHAPES`),
    with the course tokenizer, to ``directory`` in the hub's format; ``load_model(directory)`` loads it.

    For measuring what a notebook costs at the size of a real model (``benchmarks/time_notebooks.py
    --shape gpt2-small``), offline: the weights are noise, the cost is real. About 350 MB on disk.
    """
    if shape not in REAL_MODEL_SHAPES:
        raise ValueError(f"unknown shape {shape!r}: use one of {', '.join(REAL_MODEL_SHAPES)}")
    tokenizer = load_tokenizer(COURSE_MODEL_NAME)
    fields = dict(REAL_MODEL_SHAPES[shape])
    config = AutoConfig.for_model(fields.pop("model_type"), vocab_size=len(tokenizer),
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **fields)
    torch.manual_seed(seed)
    directory = Path(directory)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module) -> Iterator[None]:
    """Within the block no parameter of ``modules`` requires a gradient, and each module is in eval mode.

    For training something else against a fixed model (a soft prompt, a tuned lens) or taking gradients
    with respect to activations only. Afterwards the ``requires_grad`` flags and the modes are restored,
    and the block must have left no gradient on the modules (AssertionError otherwise: something trained
    the frozen model).
    """
    parameters = [(name, parameter) for module in modules for name, parameter in module.named_parameters()]
    flags = [parameter.requires_grad for _, parameter in parameters]
    grads_before = [None if parameter.grad is None else parameter.grad.clone() for _, parameter in parameters]
    modes = [(module, module.training) for module in modules]
    for module in modules:
        module.requires_grad_(False).eval()
    try:
        yield
    finally:
        for (_, parameter), flag in zip(parameters, flags):
            parameter.requires_grad_(flag)
        for module, mode in modes:
            module.train(mode)
    touched = [name for (name, parameter), before in zip(parameters, grads_before)
               if not _same_grad(before, parameter.grad)]
    if touched:
        raise AssertionError(f"the frozen model's parameters got gradients ({touched[0]}, ...): only what is "
                             "being trained may get gradients")


def _same_grad(before: torch.Tensor | None, after: torch.Tensor | None) -> bool:
    """Whether a parameter's gradient is what it was (a gradient left by earlier training does not count)."""
    if before is None or after is None:
        return before is None and after is None
    return torch.equal(before, after)
