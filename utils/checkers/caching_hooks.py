"""Checkers for the exercises of chapter 3 (activation caching and hooks), kept apart from the library code they check.

Each ``check_<exercise>(learner_fn, ...)`` runs the learner's function and the library's reference
on inputs chosen so that every plausible mistake shows (see ``utils.checks``), and prints one line.
``tests/test_mutation.py`` and ``tests/test_wrong_answers.py`` prove that each rejects wrong answers.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file
from torch import Tensor
from transformers import PreTrainedModel

from utils import architecture, checks
from utils.activation_store import cache_to_shards
from utils.architecture import n_layers, unwrap
from utils.attention import (
    composition_scores, copy_losses_with_heads_ablated, induction_scores, k_composition_scores, losses_by_copy,
    pattern_from_cache, previous_token_scores, repeated_sequences,
)
from utils.checks import (
    Case, CheckResult, CheckTimeout, RaisingCase, Varies, check_function, compare, report, time_limited,
)
from utils.hooks import (
    ablate_head, capture_residual_stream, capture_site_with_transformer_lens, mlp_and_block_output_with_nnsight,
    nnsight_loss_with_head_ablation, resample_ablate_head, transformer_lens_ablate_head,
)
from utils.models import (
    SWEEP_BUDGET, load_tokenizer, size_relative_to_course_model, tiny_random_model, to_hooked_transformer,
)

if TYPE_CHECKING:
    from nnsight import TransformersModel
    from transformer_lens import HookedTransformer


# ---------------------------------------------------------------------------------------------
# Exercises on utils.hooks


def check_capture_residual_stream(learner_fn: Callable, model: PreTrainedModel) -> CheckResult:
    """Exercise 3.1 on ``model`` (first and last layer, batch 1 and 2) and tiny random Pythia and Llama models."""
    def case(name: str, checked_model: PreTrainedModel, layer: int, batch: int, pos: int) -> Case:
        generator = torch.Generator().manual_seed(batch * 100 + pos + layer)
        input_ids = torch.randint(checked_model.config.vocab_size, (batch, pos), generator=generator)
        return Case(name, checked_model, input_ids, layer)

    last = architecture.n_layers(model) - 1
    cases = [case("your model, layer 0, batch of 2", model, 0, 2, 6),
             case(f"your model, last layer ({last}), batch of 1", model, last, 1, 5),
             case("tiny random Pythia (GPT-NeoX), layer 1", tiny_random_model("gpt_neox"), 1, 2, 5),
             case("tiny random Llama, layer 0", tiny_random_model("llama"), 0, 1, 4),
             RaisingCase("a token id past the vocabulary: the forward pass raises, and the hook must go all the same",
                         model, torch.tensor([[0, model.config.vocab_size]]), 0)]
    with torch.no_grad():
        return check_function(
            learner_fn, capture_residual_stream, cases, exercise="3.1 (capture_residual_stream)",
            properties=[Varies("layer", lambda layer: layer + 1, "reads another layer")],
            atol=1e-5, rtol=1e-4,
            hint="register_forward_hook on architecture.blocks(model)[layer] (not layer - 1 or + 1); in the hook "
                 "save `output` (the block's output, not its input; a tensor: take output[0] if it is a tuple); "
                 "run the model, remove the hook with its handle in a finally block, and return the saved tensor. "
                 "(output_hidden_states is no shortcut: its last entry is after the final norm ln_f, not the last "
                 "block's output, so it fails only at the last layer)")


# ---------------------------------------------------------------------------------------------
# Exercises on utils.attention


def _random_patterns(batch: int, heads: int, pos: int, seed: int) -> Float[Tensor, "batch head query key"]:
    """Causal attention patterns with random scores: rows sum to 1 over the keys at or before the query."""
    scores = torch.randn(batch, heads, pos, pos, generator=torch.Generator().manual_seed(seed)) * 2
    future = torch.triu(torch.ones(pos, pos, dtype=torch.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


def check_previous_token_scores(learner_fn: Callable[[Tensor], Tensor]) -> CheckResult:
    """Exercise 3.10: ``learner_fn(pattern [batch, head, query, key]) -> [head]`` on random causal patterns."""
    cases = [Case("batch of 3, 4 heads, 9 positions", _random_patterns(3, 4, 9, seed=1)),
             Case("batch of 1, 2 heads, 5 positions", _random_patterns(1, 2, 5, seed=2))]
    return check_function(
        learner_fn, previous_token_scores, cases, exercise="3.10 (previous_token_scores)", atol=1e-5,
        hint="the attention from query q to key q - 1 is pattern[..., q, q - 1]: the diagonal just below the main one "
             "of each [query, key] matrix (Tensor.diagonal with a negative offset, on the last two dimensions); "
             "average it over the batch and over the queries 1..pos-1 only (query 0 has no previous token), keeping "
             "the head dimension")


def check_induction_scores(learner_fn: Callable[[Tensor, int], Tensor]) -> CheckResult:
    """Exercise 3.11: ``learner_fn(pattern [batch, head, query, key], length) -> [head]`` on random causal patterns."""
    cases = [Case("length 5: batch of 3, 4 heads, 11 positions", _random_patterns(3, 4, 11, seed=3), 5),
             Case("length 3: batch of 2, 2 heads, 7 positions", _random_patterns(2, 2, 7, seed=4), 3)]
    return check_function(
        learner_fn, induction_scores, cases, exercise="3.11 (induction_scores)", atol=1e-5,
        hint="positions are BOS=0, the first copy 1..L, the second copy L+1..2L; the query q of the second copy holds "
             "the token of position q - L, and an induction head attends to the token AFTER it, at q - L + 1; "
             "average over the batch and the L queries of the second copy only")


# ---------------------------------------------------------------------------------------------
# Exercises on utils.activation_store


def _read_shards(directory: Path) -> list[tuple[str, Tensor]]:
    """``(file name, activations)`` of every ``shard_*.safetensors`` in ``directory``, in name order."""
    shards = []
    for path in sorted(directory.glob("shard_*.safetensors")):
        tensors = load_file(str(path))
        if "activations" not in tensors:
            raise ValueError(f"{path.name} holds {sorted(tensors)}, not a tensor named 'activations'")
        shards.append((path.name, tensors["activations"]))
    return shards


def _shards_problem(learner_fn: Callable[..., int], model: PreTrainedModel, windows: Tensor, layer: int,
                    shard_rows: int, batch_size: int, workdir: Path, directory: str | Path) -> str | None:
    """``None`` when ``learner_fn`` writes the reference's rows into ``directory``, in the reference's
    files, batch by batch; else what is wrong, in the learner's terms (which file, which shard, how
    many rows)."""
    with _largest_batch(model) as largest:
        returned = learner_fn(model, windows, layer, directory, shard_rows=shard_rows, batch_size=batch_size)
    if largest[0] > batch_size:
        return (f"your function ran the model on {largest[0]} windows at once, with batch_size={batch_size}: run it "
                "on at most batch_size windows at a time, so that memory stays bounded")
    yours = Path(directory)
    names = sorted(p.name for p in yours.glob("*")) if yours.is_dir() else []
    numbered = [f"shard_{i:05d}.safetensors" for i in range(len(names))]
    if not names or names != numbered:
        found = f"the directory holds {_some_names(names)}"
        wrong = next(((name, right) for name, right in zip(names, numbered) if name != right), None)
        if wrong:
            found += f" ({wrong[0]} where {wrong[1]} was expected)"
        return found + ": name the shards shard_{i:05d}.safetensors, numbered from 0, and write nothing else there"
    shards = _read_shards(yours)
    cache_to_shards(model, windows, layer, workdir / "reference", shard_rows=shard_rows, batch_size=batch_size,
                    progress=False)
    expected_shards = _read_shards(workdir / "reference")
    rows, expected_rows = sum(len(a) for _, a in shards), sum(len(a) for _, a in expected_shards)
    if rows != expected_rows:
        return (f"the shards hold {rows} rows in all, expected {expected_rows} (one per token that is not "
                f"BOS, {windows.numel()} tokens of which {int((windows == unwrap(model).config.bos_token_id).sum())} "
                "are BOS)")
    for (name, activations), (_, expected) in zip(shards, expected_shards):
        if len(activations) != len(expected):
            return (f"{name} holds {_count(len(activations), 'row')}, expected {len(expected)}: every shard but the last "
                    f"holds exactly shard_rows={shard_rows} rows, the last one the rows that are left")
    problem = compare(torch.cat([a for _, a in shards]), torch.cat([a for _, a in expected_shards]),
                      atol=1e-5, rtol=1e-4)
    if problem is not None:
        return f"the rows, in shard order: {problem}"
    if returned != expected_rows:
        return f"your function returned {returned!r}, expected the number of rows written, {expected_rows}"
    return None


def _count(n: int, noun: str) -> str:
    """``"1 row"``, ``"3 rows"``."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _some_names(names: list[str], shown: int = 3) -> str:
    """``"3 files: a, b, c"``, the first ``shown`` names of a long list followed by ``..."``."""
    if not names:
        return "no file"
    listed = ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
    return f"{_count(len(names), 'file')}: {listed}"


@contextmanager
def _largest_batch(model: PreTrainedModel) -> Iterator[list[int]]:
    """Yield ``[n]``, kept up to date with the most windows that one forward pass of ``model`` ran on."""
    largest = [0]

    def record(module: torch.nn.Module, args: tuple) -> None:
        largest[0] = max(largest[0], args[0].shape[0])

    handle = unwrap(model).get_input_embeddings().register_forward_pre_hook(record)
    try:
        yield largest
    finally:
        handle.remove()


def check_cache_to_shards(learner_fn: Callable[..., int], model: PreTrainedModel, windows: Int[Tensor, "n context"]
                          ) -> CheckResult:
    """Exercise 3.14 on ``model`` (two layers, two shard sizes) and a tiny random Llama, in temporary directories."""
    hint = ("per batch, take the block's output (block_output) and append the rows of the tokens that are not BOS, in "
            "order, to the pending rows; while at least shard_rows are pending, save the first shard_rows as "
            "shard_{i:05d}.safetensors and keep the rest; after the loop save what is left (the last, smaller shard)")
    llama = tiny_random_model("llama")
    llama_windows = torch.randint(1, llama.config.vocab_size, (5, 12), generator=torch.Generator().manual_seed(0))
    llama_windows[:, 0] = llama.config.bos_token_id
    # the directory: a path string of folders yet to make, a folder that exists already, a Path
    cases = [(f"your model, layer 0, {len(windows)} windows, shard_rows=100, batch_size=3, directory a str "
              "'.../cache/layer_0' whose folders do not exist yet", model, windows, 0, 100, 3, "cache/layer_0"),
             ("your model, last layer, shard_rows=37, batch_size=4, directory an empty folder that exists", model,
              windows, n_layers(model) - 1, 37, 4, "existing"),
             ("tiny random Llama, layer 1, shard_rows=16, batch_size=2", llama, llama_windows, 1, 16, 2, "llama")]
    for name, case_model, case_windows, layer, shard_rows, batch_size, folder in cases:
        with tempfile.TemporaryDirectory() as workdir:
            directory: str | Path = Path(workdir) / folder
            if folder == "existing":
                directory.mkdir()
            elif "/" in folder:
                directory = str(directory)
            try:
                with time_limited(checks.TIME_LIMIT_SECONDS):
                    problem = _shards_problem(learner_fn, case_model, case_windows, layer, shard_rows, batch_size,
                                              Path(workdir), directory)
            except NotImplementedError:
                raise
            except CheckTimeout as timeout:
                problem = f"your function {timeout}"
            except Exception as error:  # the learner's bug: report it, no traceback
                problem = f"your function raised {type(error).__name__}: {error}"
        if problem is not None:
            return report("3.14 (cache_to_shards)", False, f"input '{name}': {problem}", hint=hint)
    return report("3.14 (cache_to_shards)", True, f"passed on {len(cases)} inputs")


# ---------------------------------------------------------------------------------------------
# Exercises on TransformerLens and nnsight: the other models they run on


@functools.cache
def _tiny_transformer_lens(family: str) -> HookedTransformer:
    """A tiny random model of ``family`` as a ``HookedTransformer`` (built once per process)."""
    return to_hooked_transformer(tiny_random_model(family))


@functools.cache
def _tiny_nnsight(family: str) -> TransformersModel:
    """A tiny random model of ``family`` wrapped by nnsight (the tokenizer is only carried along)."""
    from nnsight import TransformersModel

    return TransformersModel(tiny_random_model(family), tokenizer=load_tokenizer(), task="text-generation")


def _random_ids(vocab_size: int, batch: int, pos: int, seed: int) -> Int[Tensor, "batch pos"]:
    """Token ids drawn uniformly from ``1..vocab_size-1``, reproducibly."""
    return torch.randint(1, vocab_size, (batch, pos), generator=torch.Generator().manual_seed(seed))


def _n_layers(model: object) -> int:
    config = getattr(model, "cfg", None)
    return config.n_layers if config is not None else n_layers(model)


def _vocab_size(model: object) -> int:
    config = getattr(model, "cfg", None)
    return config.d_vocab if config is not None else unwrap(model).config.vocab_size


def check_capture_site_with_transformer_lens(learner_fn: Callable, tl_model: HookedTransformer) -> CheckResult:
    """Exercise 3.2 on ``tl_model`` (every kind of site) and a tiny random Pythia."""
    vocab, last = _vocab_size(tl_model), tl_model.cfg.n_layers - 1
    ids = _random_ids(vocab, 2, 6, seed=5)
    pythia = _tiny_transformer_lens("gpt_neox")
    cases = [Case("your model, resid_pre.0", tl_model, ids, "resid_pre.0"),
             Case(f"your model, resid_post.{last}", tl_model, ids, f"resid_post.{last}"),
             Case(f"your model, attn_out.{last}", tl_model, ids, f"attn_out.{last}"),
             Case("your model, mlp_out.0", tl_model, ids, "mlp_out.0"),
             Case(f"your model, pattern.{last}, a batch of 1", tl_model, ids[:1], f"pattern.{last}"),
             Case("tiny random Pythia (GPT-NeoX), resid_post.1", pythia, _random_ids(pythia.cfg.d_vocab, 2, 5, 6),
                  "resid_post.1")]
    with torch.no_grad():
        return check_function(
            learner_fn, capture_site_with_transformer_lens, cases, exercise="3.2 (capture_site_with_transformer_lens)",
            atol=1e-5, rtol=1e-4,
            hint="split the site at its dot into a kind and a layer; the hook is f'blocks.{layer}.' followed by "
                 "hook_resid_pre, hook_resid_post, hook_attn_out, hook_mlp_out or, for the pattern, attn.hook_pattern "
                 "(the pattern lives inside the attention module); run_with_cache with names_filter=[that name] and "
                 "return cache[name]")


def check_mlp_and_block_output_with_nnsight(learner_fn: Callable, nn_model: TransformersModel) -> CheckResult:
    """Exercise 3.3 on ``nn_model`` (first and last layer) and a tiny random Llama, in nnsight."""
    vocab, last = _vocab_size(nn_model), n_layers(nn_model) - 1
    llama = _tiny_nnsight("llama")
    cases = [Case("your model, layer 0", nn_model, _random_ids(vocab, 2, 6, seed=7), 0),
             Case(f"your model, last layer ({last}), a batch of 1", nn_model, _random_ids(vocab, 1, 5, seed=8), last),
             Case("tiny random Llama, layer 1", llama, _random_ids(_vocab_size(llama), 2, 5, seed=9), 1)]
    with torch.no_grad():
        return check_function(
            learner_fn, mlp_and_block_output_with_nnsight, cases, exercise="3.3 (mlp_and_block_output_with_nnsight)",
            properties=[Varies("layer", lambda layer: layer - 1, "reads another layer")], atol=1e-5, rtol=1e-4,
            hint="inside `with nn_model.trace(input_ids):` take block = architecture.blocks(nn_model)[layer]; save "
                 "block.mlp.output first and block.output second (the order the forward pass reaches them), each with "
                 ".save(); return the two saved values after the with block, as (mlp_out, block_out)")


# ---------------------------------------------------------------------------------------------
# Ablation exercises: the learner's context manager or hooks, run on a forward pass


def _logits_inside(ablation: Callable[..., AbstractContextManager]) -> Callable[..., Tensor]:
    """``logits(model, input_ids, layer, head, how, mean_over)``: the model's logits inside
    ``with ablation(model, layer, head, how, mean_over):`` (what the checker compares)."""
    def logits(model: PreTrainedModel, input_ids: Tensor, layer: int, head: int, how: str = "zero",
               mean_over: Tensor | None = None) -> Tensor:
        with ablation(model, layer, head, how, mean_over):
            return model(input_ids).logits
    return logits


def _ablation_cases(model: object, tiny: object, mean_over_seed: int) -> list[Case]:
    """Zero and mean ablations of a first-layer and a last-layer head on the learner's model, and one on ``tiny``."""
    vocab, last, n_heads = _vocab_size(model), _n_layers(model) - 1, _n_heads(model)
    ids, reference = _random_ids(vocab, 2, 7, seed=10), _random_ids(vocab, 3, 6, seed=mean_over_seed)
    tiny_vocab = _vocab_size(tiny)
    return [Case("your model, layer 0, head 1, zero", model, ids, 0, 1, "zero", None),
            Case(f"your model, layer {last}, last head ({n_heads - 1}), mean over another batch", model, ids, last,
                 n_heads - 1, "mean", reference),
            Case("your model, layer 0, head 0, mean, a batch of 1", model, ids[:1], 0, 0, "mean", reference),
            Case("a tiny random model of another architecture, layer 1, head 2, mean", tiny,
                 _random_ids(tiny_vocab, 2, 5, seed=11), 1, 2, "mean", _random_ids(tiny_vocab, 4, 3, seed=12))]


def _n_heads(model: object) -> int:
    config = getattr(model, "cfg", None)
    return config.n_heads if config is not None else unwrap(model).config.num_attention_heads


_ABLATION_PROPERTIES = [Varies("head", lambda head: head - 1, "ablates another head"),
                        Varies("how", lambda how: "mean" if how == "zero" else "zero", "ignores how"),
                        Varies("mean_over", lambda ids: None if ids is None else ids.flip(0)[:1],
                               "averages over another batch (or over the inputs themselves)")]


def check_ablate_head(learner_fn: Callable[..., AbstractContextManager], model: PreTrainedModel) -> CheckResult:
    """Exercise 3.4: the logits inside ``with learner_fn(model, layer, head, how, mean_over):``, on
    ``model`` and a tiny random Llama; the hook must be gone after the block, even when the forward pass fails."""
    cases = _ablation_cases(model, tiny_random_model("llama"), mean_over_seed=13)
    cases.append(RaisingCase("a token id past the vocabulary: the forward pass raises inside the with block, and "
                             "the hook must go all the same", model, torch.tensor([[0, _vocab_size(model)]]), 0, 1))
    with torch.no_grad():
        return check_function(
            _logits_inside(learner_fn), _logits_inside(ablate_head), cases, exercise="3.4 (ablate_head)",
            properties=_ABLATION_PROPERTIES, atol=1e-4, rtol=1e-4,
            hint="register a forward PRE-hook on the attention output projection "
                 "(architecture.block_part(model, layer, ATTENTION_OUTPUT_PROJECTION)); in it, clone args[0] "
                 "[batch, pos, n_heads * d_head] and set columns head * d_head:(head + 1) * d_head to 0, or to the mean of "
                 "those columns over every batch row and position of a forward pass on mean_over (computed once, "
                 "before the with block's body); return the new args tuple; yield, and remove the handle in finally")


def check_transformer_lens_ablate_head(learner_fn: Callable[..., list], tl_model: HookedTransformer) -> CheckResult:
    """Exercise 3.5: the logits of ``tl_model.run_with_hooks`` with the learner's ``fwd_hooks``, on
    ``tl_model`` and a tiny random Pythia."""
    def logits(ablation: Callable[..., list]) -> Callable[..., Tensor]:
        def run(tl: HookedTransformer, input_ids: Tensor, layer: int, head: int, how: str = "zero",
                mean_over: Tensor | None = None) -> Tensor:
            return tl.run_with_hooks(input_ids, fwd_hooks=list(ablation(tl, layer, head, how, mean_over)))
        return run

    cases = _ablation_cases(tl_model, _tiny_transformer_lens("gpt_neox"), mean_over_seed=14)
    with torch.no_grad():
        return check_function(
            logits(learner_fn), logits(transformer_lens_ablate_head), cases,
            exercise="3.5 (transformer_lens_ablate_head)", properties=_ABLATION_PROPERTIES, atol=1e-4, rtol=1e-4,
            hint="return [(f'blocks.{layer}.attn.hook_z', edit)] where edit(z, hook) gets z [batch, pos, head, d_head], "
                 "clones it, sets z[:, :, head] to 0 or to the mean of cache[that hook][:, :, head] over batch and "
                 "positions (run_with_cache on mean_over with names_filter, once, outside edit) and returns it")


def check_nnsight_loss_with_head_ablation(learner_fn: Callable[..., float], nn_model: TransformersModel) -> CheckResult:
    """Exercise 3.6 on ``nn_model`` and a tiny random Llama, in nnsight."""
    cases = _ablation_cases(nn_model, _tiny_nnsight("llama"), mean_over_seed=15)
    with torch.no_grad():
        return check_function(
            learner_fn, nnsight_loss_with_head_ablation, cases, exercise="3.6 (nnsight_loss_with_head_ablation)",
            properties=_ABLATION_PROPERTIES, atol=1e-4, rtol=1e-4,
            hint="the head's columns head * d_head:(head + 1) * d_head of the output projection's INPUT "
                 "(block.attn.c_proj.input on GPT-2); for the mean, one trace on mean_over that saves that input, then "
                 "the mean of those columns over dims (0, 1); then a trace with labels=input_ids that assigns the "
                 "replacement to those columns and saves nn_model.output.loss; return it as a float")


# ---------------------------------------------------------------------------------------------
# Patterns, repeated sequences, losses by copy, composition


def _query_key_cache(tl_model: HookedTransformer, input_ids: Tensor, layer: int) -> dict[str, Tensor]:
    """The queries and keys of ``layer`` from a TransformerLens cache, and nothing else (no pattern to copy)."""
    wanted = [f"blocks.{layer}.attn.hook_{kind}" for kind in ("q", "k", "rot_q", "rot_k")]
    _, cache = tl_model.run_with_cache(input_ids, names_filter=lambda name: name in wanted)
    return {name: cache[name] for name in wanted if name in cache}


def check_pattern_from_cache(learner_fn: Callable[..., Tensor], tl_model: HookedTransformer) -> CheckResult:
    """Exercise 3.7 on queries and keys of ``tl_model`` and of tiny random Pythia (rotary) and Llama
    (rotary, grouped-query attention), each a plain dict with no pattern in it."""
    last = tl_model.cfg.n_layers - 1
    pythia, llama = _tiny_transformer_lens("gpt_neox"), _tiny_transformer_lens("llama")
    with torch.no_grad():
        cases = [Case("your model, layer 0", _query_key_cache(tl_model, _random_ids(_vocab_size(tl_model), 2, 7, 16), 0), 0),
                 Case(f"your model, layer {last}", _query_key_cache(tl_model, _random_ids(_vocab_size(tl_model), 1, 6, 17),
                                                                    last), last),
                 Case("tiny random Pythia, layer 1 (rotary: hook_rot_q and hook_rot_k)",
                      _query_key_cache(pythia, _random_ids(pythia.cfg.d_vocab, 2, 6, 18), 1), 1),
                 Case("tiny random Llama, layer 0 (rotary, and 2 key heads for 4 query heads)",
                      _query_key_cache(llama, _random_ids(llama.cfg.d_vocab, 2, 5, 19), 0), 0)]
        return check_function(
            learner_fn, pattern_from_cache, cases, exercise="3.7 (pattern_from_cache)", atol=1e-5, rtol=1e-4,
            hint="take blocks.{layer}.attn.hook_rot_q / hook_rot_k when the cache has them, else hook_q / hook_k "
                 "([batch, pos, head, d_head]); repeat each key head (repeat_interleave on the head dimension) until "
                 "there are as many as query heads; scores = einsum over d_head -> [batch, head, query, key], divided "
                 "by sqrt(d_head); -inf where key > query; softmax over the keys")


def check_repeated_sequences(learner_fn: Callable[..., Tensor]) -> CheckResult:
    """Exercise 3.8: the exact rows of the reference, whose draw the exercise prescribes (``torch.randint``
    of pool indices from a ``torch.Generator`` seeded with ``seed``)."""
    cases = [Case("a pool of 7 ids, 4 rows of length 5, bos 0", torch.tensor([3, 9, 4, 11, 20, 8, 6]), 4, 5, 0, seed=0),
             Case("a pool of 3 ids, 1 row of length 8, bos 2, seed 3", torch.tensor([5, 1, 7]), 1, 8, 2, seed=3),
             Case("a pool of 50 ids, 6 rows of length 2, bos 99", torch.arange(100, 150), 6, 2, 99, seed=1)]
    return check_function(
        learner_fn, repeated_sequences, cases, exercise="3.8 (repeated_sequences)",
        properties=[Varies("seed", lambda seed: seed + 1, "ignores the seed"),
                    Varies("pool", lambda pool: pool[:-1], "leaves out the pool's last id")],
        hint="indices = torch.randint(len(pool), (n, length), generator=torch.Generator().manual_seed(seed)); "
             "copies = pool[indices]; return a column of bos, the copies, and the copies again, concatenated along dim 1")


def check_losses_by_copy(learner_fn: Callable[..., tuple[float, float]]) -> CheckResult:
    """Exercise 3.9 on random losses (every position different, so an off-by-one shows)."""
    def losses(batch: int, length: int, seed: int) -> Float[Tensor, "batch two_length"]:
        return torch.rand(batch, 2 * length, generator=torch.Generator().manual_seed(seed)) * 5

    cases = [Case("length 5, batch of 3", losses(3, 5, 0), 5), Case("length 3, batch of 1", losses(1, 3, 1), 3),
             Case("length 8, batch of 2", losses(2, 8, 2), 8)]
    return check_function(
        learner_fn, losses_by_copy, cases, exercise="3.9 (losses_by_copy)", atol=1e-5,
        hint="entry i of a row is the loss of predicting token i + 1; the first copy is tokens 1..L and the second "
             "L+1..2L; leave out w1 of each copy (entries 0 and L), so average entries 1..L-1 and L+1..2L-1, over the "
             "batch too, and return two floats")


def check_copy_losses_with_heads_ablated(learner_fn: Callable[..., tuple[float, float]], model: PreTrainedModel
                                         ) -> CheckResult:
    """Exercise 3.12 on ``model`` (no head, one head, two heads of two layers, zero and mean) and a tiny random Llama."""
    vocab, last, length = _vocab_size(model), n_layers(model) - 1, 6
    tokens = repeated_sequences(torch.arange(1, vocab), 4, length, unwrap(model).config.bos_token_id, seed=20)
    reference = repeated_sequences(torch.arange(1, vocab), 3, length, unwrap(model).config.bos_token_id, seed=21)
    llama = tiny_random_model("llama")
    llama_tokens = repeated_sequences(torch.arange(1, llama.config.vocab_size), 2, 4, 0, seed=22)
    cases = [Case("your model, no head ablated", model, tokens, length, []),
             Case("your model, head 0.1 zero-ablated", model, tokens, length, [(0, 1)]),
             Case(f"your model, heads 0.2 and {last}.0 mean-ablated", model, tokens, length, [(0, 2), (last, 0)],
                  "mean", reference),
             Case("tiny random Llama, heads 0.0 and 1.3 zero-ablated", llama, llama_tokens, 4, [(0, 0), (1, 3)])]
    with torch.no_grad():
        return check_function(
            learner_fn, copy_losses_with_heads_ablated, cases, exercise="3.12 (copy_losses_with_heads_ablated)",
            properties=[Varies("heads", lambda heads: heads[:1], "ablates only the first head")], atol=1e-4, rtol=1e-4,
            hint="inside `with ablate_heads(model, heads, how, mean_over):` (or one ablate_head per head in an ExitStack) "
                 "compute token_losses(model, tokens) and return losses_by_copy of them; every head of the list is "
                 "ablated at once, and the hooks must be gone afterwards")


def check_k_composition_scores(learner_fn: Callable[..., Tensor], tl_model: HookedTransformer) -> CheckResult:
    """Exercise 3.13 on ``tl_model`` (two pairs of layers) and tiny random Pythia and Llama."""
    last = tl_model.cfg.n_layers - 1
    cases = [Case(f"your model, layer 0 into layer {last}", tl_model, 0, last),
             Case("tiny random Pythia, layer 0 into layer 1", _tiny_transformer_lens("gpt_neox"), 0, 1),
             Case("tiny random Llama (2 key heads for 4 query heads), layer 0 into layer 1",
                  _tiny_transformer_lens("llama"), 0, 1)]
    if last >= 2:
        cases.insert(1, Case("your model, layer 1 into layer 2", tl_model, 1, 2))
    with torch.no_grad():
        return check_function(
            learner_fn, k_composition_scores, cases, exercise="3.13 (k_composition_scores)", atol=1e-4, rtol=1e-3,
            hint="W_OV of an earlier head is W_V[earlier, h] @ W_O[earlier, h] and W_QK of a later head "
                 "W_Q[later, h] @ W_K[later, h].T (each [d_model, d_model]); the K score of a pair is the Frobenius "
                 "norm of W_OV @ W_QK.T divided by the product of the two matrices' own norms; return "
                 "[earlier head, later head]")


def check_composition_scores(learner_fn: Callable[..., Tensor], tl_model: HookedTransformer) -> CheckResult:
    """Bonus exercise 3.15: Q, K and V composition on ``tl_model`` (K alone on a model more than ``SWEEP_BUDGET``
    times the course model's size, where each score takes seconds, with Q and V on a tiny random GPT-2), and K on
    a tiny random Pythia."""
    if size_relative_to_course_model(tl_model) <= SWEEP_BUDGET:
        cases = [Case(f"your model, {mode}", tl_model, mode) for mode in ("Q", "K", "V")]
    else:
        cases = [Case("your model, K", tl_model, "K"),
                 *(Case(f"tiny random GPT-2, {mode}", _tiny_transformer_lens("gpt2"), mode) for mode in ("Q", "V"))]
    cases.append(Case("tiny random Pythia, K", _tiny_transformer_lens("gpt_neox"), "K"))
    with torch.no_grad():
        return check_function(
            learner_fn, composition_scores, cases, exercise="3.15 (composition_scores)", atol=1e-4, rtol=1e-3,
            hint="for each earlier layer and each later layer, the score of (W_OV of the earlier head) times a matrix "
                 "of the later head: W_QK for Q, W_QK transposed for K, W_OV for V; entries where the second layer is "
                 "not later stay 0; compare with tl_model.all_composition_scores(mode)")


def check_resample_ablate_head(learner_fn: Callable[..., AbstractContextManager], model: PreTrainedModel) -> CheckResult:
    """Bonus exercise 3.16: the logits inside ``with learner_fn(model, layer, head, source_ids):`` on
    ``model`` and a tiny random Llama; the hook must be gone afterwards, even when the forward pass fails."""
    def logits(ablation: Callable[..., AbstractContextManager]) -> Callable[..., Tensor]:
        def run(model: PreTrainedModel, input_ids: Tensor, layer: int, head: int, source_ids: Tensor) -> Tensor:
            with ablation(model, layer, head, source_ids):
                return model(input_ids).logits
        return run

    vocab, last = _vocab_size(model), n_layers(model) - 1
    llama = tiny_random_model("llama")
    cases = [Case("your model, layer 0, head 1", model, _random_ids(vocab, 3, 6, 23), 0, 1, _random_ids(vocab, 3, 6, 24)),
             Case(f"your model, layer {last}, head 0, a batch of 1", model, _random_ids(vocab, 1, 5, 25), last, 0,
                  _random_ids(vocab, 1, 5, 26)),
             Case("tiny random Llama, layer 1, head 3", llama, _random_ids(llama.config.vocab_size, 2, 4, 27), 1, 3,
                  _random_ids(llama.config.vocab_size, 2, 4, 28)),
             RaisingCase("a token id past the vocabulary: the forward pass raises inside the with block, and the hook "
                         "must go all the same", model, torch.tensor([[0, vocab]]), 0, 1, torch.tensor([[0, 1]]))]
    with torch.no_grad():
        return check_function(
            logits(learner_fn), logits(resample_ablate_head), cases, exercise="3.16 (resample_ablate_head)",
            properties=[Varies("source_ids", lambda ids: ids.flip(0), "pairs each input with another source row"),
                        Varies("head", lambda head: head - 1, "resamples another head")],
            atol=1e-4, rtol=1e-4,
            hint="first run the model on source_ids and keep the head's output (its slice of the attention output "
                 "projection's input, [batch, pos, d_head]); then a pre-hook that replaces that slice of the input "
                 "by what you kept, position by position and row by row; yield, and remove it in finally")
