"""Checkers for the exercises of chapter 3 (activation caching and hooks), kept apart from the library code they check.

Each ``check_<exercise>(learner_fn, ...)`` runs the learner's function and the library's reference
on inputs chosen so that every plausible mistake shows (see ``utils.checks``), and prints one line.
``tests/test_mutation.py`` and ``tests/test_wrong_answers.py`` prove that each rejects wrong answers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file
from torch import Tensor
from transformers import PreTrainedModel

from utils import architecture, checks
from utils.activation_store import cache_to_shards
from utils.architecture import n_layers, unwrap
from utils.attention import induction_scores, previous_token_scores
from utils.checks import (
    Case, CheckResult, CheckTimeout, RaisingCase, Varies, check_function, compare, report, time_limited,
)
from utils.hooks import capture_residual_stream
from utils.models import tiny_random_model


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
    """Exercise 3.2: ``learner_fn(pattern [batch, head, query, key]) -> [head]`` on random causal patterns."""
    cases = [Case("batch of 3, 4 heads, 9 positions", _random_patterns(3, 4, 9, seed=1)),
             Case("batch of 1, 2 heads, 5 positions", _random_patterns(1, 2, 5, seed=2))]
    return check_function(
        learner_fn, previous_token_scores, cases, exercise="3.2 (previous_token_scores)", atol=1e-5,
        hint="the attention from query q to key q - 1 is pattern[..., q, q - 1]: the diagonal just below the main one "
             "of each [query, key] matrix (Tensor.diagonal with a negative offset, on the last two dimensions); "
             "average it over the batch and over the queries 1..pos-1 only (query 0 has no previous token), keeping "
             "the head dimension")


def check_induction_scores(learner_fn: Callable[[Tensor, int], Tensor]) -> CheckResult:
    """Exercise 3.3: ``learner_fn(pattern [batch, head, query, key], length) -> [head]`` on random causal patterns."""
    cases = [Case("length 5: batch of 3, 4 heads, 11 positions", _random_patterns(3, 4, 11, seed=3), 5),
             Case("length 3: batch of 2, 2 heads, 7 positions", _random_patterns(2, 2, 7, seed=4), 3)]
    return check_function(
        learner_fn, induction_scores, cases, exercise="3.3 (induction_scores)", atol=1e-5,
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
    """Exercise 3.4 on ``model`` (two layers, two shard sizes) and a tiny random Llama, in temporary directories."""
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
            return report("3.4 (cache_to_shards)", False, f"input '{name}': {problem}", hint=hint)
    return report("3.4 (cache_to_shards)", True, f"passed on {len(cases)} inputs")
