"""Capture and edit activations three ways: PyTorch hooks, TransformerLens and nnsight (chapter 3).

The course names the places it reads from with *sites*, the same on every architecture:

| site | what | shape | GPT-2 module | TransformerLens hook |
|---|---|---|---|---|
| ``resid_pre.{l}`` | input of block ``l`` | ``[batch, pos, d_model]`` | ``transformer.h.{l}`` (input) | ``blocks.{l}.hook_resid_pre`` |
| ``resid_post.{l}`` | output of block ``l`` | ``[batch, pos, d_model]`` | ``transformer.h.{l}`` (output) | ``blocks.{l}.hook_resid_post`` |
| ``attn_out.{l}`` | what attention adds | ``[batch, pos, d_model]`` | ``transformer.h.{l}.attn`` (output 0) | ``blocks.{l}.hook_attn_out`` |
| ``mlp_out.{l}`` | what the MLP adds | ``[batch, pos, d_model]`` | ``transformer.h.{l}.mlp`` (output) | ``blocks.{l}.hook_mlp_out`` |
| ``pattern.{l}`` | attention probabilities | ``[batch, head, query, key]`` | ``transformer.h.{l}.attn`` (output 1) | ``blocks.{l}.attn.hook_pattern`` |

GPT-NeoX (Pythia) and Llama use their own module names (``utils.architecture`` finds them).

Three ways to read them, which agree to float precision (``tests/test_hooks.py``)::

    acts = capture(model, input_ids, ["resid_pre.0", "pattern.1"])             # PyTorch hooks
    acts = capture_transformer_lens(tl_model, input_ids, ["resid_pre.0"])       # run_with_cache
    acts = capture_nnsight(nn_model, input_ids, ["resid_pre.0"])                # model.trace

and to edit them::

    with hooks(model, {"mlp_out.2": lambda out: 0 * out}):     # replace an activation
        logits = model(input_ids).logits
    with ablate_head(model, layer=1, head=3):                   # zero one attention head
        loss = loss_with(model, input_ids)
    loss = nnsight_loss_with_ablation(nn_model, input_ids, layer=1, head=3)    # the same, with nnsight

The attention pattern is read from the second output of the attention module. That module
computes it only with *eager* attention, which is how ``utils.load_model`` loads every model
(``attn_implementation="eager"``); with SDPA or flash attention, :func:`capture` says so.
Editing a pattern with a hook would not change the model's output (the attention module has
already used it), so ``pattern`` sites can be captured, not edited.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Union

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformers import PreTrainedModel

from utils import architecture

if TYPE_CHECKING:
    from nnsight import TransformersModel
    from transformer_lens import HookedTransformer

SITE_KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_out", "pattern")
#: TransformerLens hook of each site kind, inside ``blocks.{layer}``.
TRANSFORMER_LENS_HOOKS = {
    "resid_pre": "hook_resid_pre", "resid_post": "hook_resid_post", "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out", "pattern": "attn.hook_pattern",
}
#: The attention module inside a block, and its output projection (whose input holds the heads side by side).
ATTENTION = {"gpt2": "attn", "gpt_neox": "attention", "llama": "self_attn"}
ATTENTION_OUTPUT_PROJECTION = {"gpt2": "attn.c_proj", "gpt_neox": "attention.dense", "llama": "self_attn.o_proj"}
MLP = {"gpt2": "mlp", "gpt_neox": "mlp", "llama": "mlp"}

Ablation = Literal["zero", "mean"]
#: An edit function: gets the activation, returns its replacement (or ``None`` to keep it, e.g. after editing in place).
EditFn = Callable[[Tensor], Union[Tensor, None]]

_SITE = re.compile(r"^(?P<kind>[a-z_]+)\.(?P<layer>-?\d+)$")


# --------------------------------------------------------------------------------------------
# Sites


def valid_sites(n_layers: int) -> list[str]:
    """Every site of a model with ``n_layers`` blocks, e.g. ``["resid_pre.0", ..., "pattern.3"]``."""
    return [f"{kind}.{layer}" for layer in range(n_layers) for kind in SITE_KINDS]


def _site_error(site: str, n_layers: int, problem: str, extra_names: Iterable[str] = ()) -> ValueError:
    names = valid_sites(n_layers)
    close = difflib.get_close_matches(str(site), [*names, *extra_names], n=3, cutoff=0.5)
    suggestion = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ValueError(
        f"{problem}.{suggestion} Valid sites are '<kind>.<layer>' with kind one of {', '.join(SITE_KINDS)} "
        f"and layer 0 to {n_layers - 1} (this model has {n_layers} layers), e.g. 'resid_pre.0' or "
        f"'mlp_out.{n_layers - 1}'.")


def parse_site(site: str, n_layers: int) -> tuple[str, int]:
    """``"mlp_out.2"`` → ``("mlp_out", 2)``; a ``ValueError`` naming the problem and close matches otherwise.

    Negative layers count from the end (``"resid_post.-1"`` is the last block's output).
    """
    match = _SITE.match(str(site))
    if match is None or match["kind"] not in SITE_KINDS:
        raise _site_error(site, n_layers, f"unknown site {site!r}")
    layer = int(match["layer"])
    if not -n_layers <= layer < n_layers:
        raise _site_error(site, n_layers, f"site {site!r}: layer {layer} is out of range")
    return match["kind"], layer % n_layers


def _first(output: Any) -> Tensor:
    """The hidden states of a module's output (attention modules return a tuple, blocks a tensor)."""
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output: Any, new: Tensor) -> Any:
    return (new, *output[1:]) if isinstance(output, tuple) else new


# --------------------------------------------------------------------------------------------
# 1. Plain PyTorch hooks


def _register_reader(model: PreTrainedModel, site: str, store: dict[str, Tensor]) -> torch.utils.hooks.RemovableHandle:
    """Register the hook that saves ``site``'s activation into ``store[site]``; return its handle."""
    kind, layer = parse_site(site, architecture.n_layers(model))
    block = architecture.blocks(model)[layer]
    if kind == "resid_pre":  # the block's first positional argument: the residual stream coming in
        return block.register_forward_pre_hook(lambda module, args: store.__setitem__(site, args[0].detach()))
    if kind == "resid_post":
        return block.register_forward_hook(lambda module, args, output: store.__setitem__(site, _first(output).detach()))
    if kind == "mlp_out":
        mlp = architecture.block_part(model, layer, MLP)
        return mlp.register_forward_hook(lambda module, args, output: store.__setitem__(site, _first(output).detach()))

    attention = architecture.block_part(model, layer, ATTENTION)  # returns (attn_output, attn_weights)
    if kind == "attn_out":
        return attention.register_forward_hook(lambda module, args, output: store.__setitem__(site, output[0].detach()))

    def save_pattern(module: nn.Module, args: Any, output: tuple[Tensor, Tensor | None]) -> None:
        if output[1] is None:
            raise ValueError(
                f"site {site!r}: the attention module returned no attention probabilities (attention "
                f"implementation {model.config._attn_implementation!r}): load the model with "
                "attn_implementation='eager', as utils.load_model does")
        store[site] = output[1].detach()

    return attention.register_forward_hook(save_pattern)


class _StopForward(Exception):
    """Raised by a reader hook once every wanted site is stored: the rest of the forward pass would be wasted."""


class _StoreThatStops(dict):
    """A ``{site: activation}`` dict that stops the forward pass when its ``wanted``-th site arrives."""

    def __init__(self, wanted: int) -> None:
        super().__init__()
        self.wanted = wanted

    def __setitem__(self, site: str, activation: Tensor) -> None:
        super().__setitem__(site, activation)
        if len(self) == self.wanted:
            raise _StopForward


@torch.no_grad()
def capture(model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"], sites: Sequence[str], *,
            stop_early: bool = False, **forward_kwargs: Any) -> dict[str, Tensor]:
    """Run ``model`` on ``input_ids`` once and return the activation at each site, with forward hooks.

    Returns ``{site: activation}``: ``Float[Tensor, "batch pos d_model"]`` for ``resid_pre``,
    ``resid_post``, ``attn_out`` and ``mlp_out``; ``Float[Tensor, "batch head query key"]`` for
    ``pattern``. ``forward_kwargs`` (``attention_mask``, ``position_ids``...) go to the model. With
    ``stop_early``, the forward pass stops as soon as the last site is read: the later blocks and
    the unembedding, often most of the work, are skipped. The hooks are removed even if the forward
    pass fails.
    """
    if isinstance(sites, str):
        sites = [sites]
    store: dict[str, Tensor] = _StoreThatStops(len(set(sites))) if stop_early else {}
    handles = []
    try:
        for site in sites:
            handles.append(_register_reader(model, site, store))
        model(input_ids, **forward_kwargs)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return {site: store[site] for site in sites}


def _register_editor(model: PreTrainedModel, name: str, fn: EditFn) -> torch.utils.hooks.RemovableHandle:
    """Register a hook that replaces the activation at a site (or a module's output) by ``fn(activation)``."""
    n_layers = architecture.n_layers(model)
    if _SITE.match(name) is None:  # a module name, e.g. "transformer.h.0.attn.c_proj": edit its output
        modules = dict(model.named_modules())
        if name not in modules:
            raise _site_error(name, n_layers, f"{name!r} is neither a site nor a module of this model",
                              extra_names=modules)
        return modules[name].register_forward_hook(
            lambda module, args, output: _replace_first(output, _keep_if_none(fn(_first(output)), _first(output))))
    kind, layer = parse_site(name, n_layers)
    block = architecture.blocks(model)[layer]
    if kind == "resid_pre":
        return block.register_forward_pre_hook(lambda module, args: (_keep_if_none(fn(args[0]), args[0]), *args[1:]))
    if kind == "pattern":
        raise ValueError(f"site {name!r}: an attention pattern can be captured but not edited with a hook (the "
                         "attention module has already used it when its hook runs): edit the head's output "
                         "instead, e.g. with ablate_head(model, layer, head)")
    module = {"resid_post": block, "mlp_out": architecture.block_part(model, layer, MLP),
              "attn_out": architecture.block_part(model, layer, ATTENTION)}[kind]
    return module.register_forward_hook(
        lambda module, args, output: _replace_first(output, _keep_if_none(fn(_first(output)), _first(output))))


def _keep_if_none(new: Tensor | None, old: Tensor) -> Tensor:
    return old if new is None else new


@contextlib.contextmanager
def hooks(model: PreTrainedModel, edits: Mapping[str, EditFn]) -> Iterator[PreTrainedModel]:
    """Inside the ``with`` block, every forward pass replaces each activation ``x`` by ``edits[name](x)``.

    ``name`` is a site (``"resid_pre.2"``, ``"mlp_out.0"``...) or the name of any module
    (``"transformer.h.0.attn.c_proj"``, from ``model.named_modules()``: its output is edited). The
    function gets the activation (``Float[Tensor, "batch pos d_model"]`` for sites) and returns its
    replacement, or ``None`` to keep it. The hooks are removed when the block ends, even on an error.
    """
    handles = []
    try:
        for name, fn in edits.items():
            handles.append(_register_editor(model, name, fn))
        yield model
    finally:
        for handle in handles:
            handle.remove()


# --------------------------------------------------------------------------------------------
# 2. TransformerLens and nnsight


def site_to_transformer_lens(site: str, n_layers: int | None = None) -> str:
    """The TransformerLens hook name of ``site``: ``"attn_out.1"`` → ``"blocks.1.hook_attn_out"``.

    Give ``n_layers`` to check the layer (and to allow negative layers).
    """
    kind, layer = parse_site(site, n_layers if n_layers is not None else 10**9)
    return f"blocks.{layer}.{TRANSFORMER_LENS_HOOKS[kind]}"


@torch.no_grad()
def capture_transformer_lens(tl_model: HookedTransformer, input_ids: Int[Tensor, "batch pos"],
                             sites: Sequence[str]) -> dict[str, Tensor]:
    """:func:`capture` with a ``HookedTransformer``: ``run_with_cache`` keeping only the sites' hooks."""
    if isinstance(sites, str):
        sites = [sites]
    names = {site: site_to_transformer_lens(site, tl_model.cfg.n_layers) for site in sites}
    _, cache = tl_model.run_with_cache(input_ids, names_filter=list(names.values()))
    return {site: cache[name] for site, name in names.items()}


@torch.no_grad()
def capture_site_with_transformer_lens(tl_model: HookedTransformer, input_ids: Int[Tensor, "batch pos"], site: str
                                       ) -> Tensor:
    """Reference for Exercise 3.2: one site with ``run_with_cache``, caching that hook only."""
    return capture_transformer_lens(tl_model, input_ids, [site])[site]


def capture_nnsight(nn_model: TransformersModel, input_ids: Int[Tensor, "batch pos"],
                    sites: Sequence[str]) -> dict[str, Tensor]:
    """:func:`capture` with nnsight: one ``model.trace``, saving each site's module input or output.

    With nnsight 0.8 and transformers 5, a block's ``.output`` is a tensor and an attention module's
    is a tuple ``(attn_output, attn_weights)``. A block's ``.input`` is its first positional argument.
    """
    if isinstance(sites, str):
        sites = [sites]
    n_layers = architecture.n_layers(nn_model)
    parsed = {site: parse_site(site, n_layers) for site in sites}
    model_type = architecture.model_type(nn_model)
    blocks = architecture.blocks(nn_model)
    execution_order = {"resid_pre": 0, "attn_out": 1, "pattern": 1, "mlp_out": 2, "resid_post": 3}
    needed = sorted({(layer, execution_order[kind]) for kind, layer in parsed.values()})
    saved: dict[tuple[int, int], Any] = {}
    with torch.no_grad(), nn_model.trace(input_ids):
        for layer, step in needed:  # nnsight wants the modules in the order the forward pass reaches them
            block = blocks[layer]
            module = {0: block, 1: getattr(block, ATTENTION[model_type]), 2: getattr(block, MLP[model_type]),
                      3: block}[step]
            saved[layer, step] = module.input.save() if step == 0 else module.output.save()
    result = {}
    for site, (kind, layer) in parsed.items():
        value = saved[layer, execution_order[kind]]
        result[site] = value[1] if kind == "pattern" else _first(value)
    return result


def mlp_and_block_output_with_nnsight(nn_model: TransformersModel, input_ids: Int[Tensor, "batch pos"], layer: int
                                      ) -> tuple[Float[Tensor, "batch pos d_model"], Float[Tensor, "batch pos d_model"]]:
    """Reference for Exercise 3.3: what the MLP of block ``layer`` adds, and the block's output, in one trace."""
    captured = capture_nnsight(nn_model, input_ids, [f"mlp_out.{layer}", f"resid_post.{layer}"])
    return captured[f"mlp_out.{layer}"], captured[f"resid_post.{layer}"]


# --------------------------------------------------------------------------------------------
# 3. Editing: ablations and the loss


def _check_how(how: str) -> None:
    if how not in ("zero", "mean"):
        raise ValueError(f"unknown ablation how={how!r}: use 'zero' (replace by zeros) or 'mean' (replace by its "
                         "mean over the batch mean_over)")


def _check_head(n_heads: int, head: int) -> int:
    if not isinstance(head, int) or not -n_heads <= head < n_heads:
        raise ValueError(f"head {head!r} does not exist: this model has {n_heads} heads per layer, numbered 0 to "
                         f"{n_heads - 1}")
    return head % n_heads


def _mean_over_needed(how: str, mean_over: Tensor | None) -> None:
    _check_how(how)
    if how == "mean" and mean_over is None:
        raise ValueError("how='mean' needs mean_over: the input_ids (a reference batch) to average the activation over")


@contextlib.contextmanager
def editing_head_outputs(model: PreTrainedModel, layer: int,
                         edit: Callable[[Float[Tensor, "batch pos head d_head"]], Tensor]) -> Iterator[PreTrainedModel]:
    """Inside the ``with`` block, the heads' outputs ``z`` of ``layer`` are replaced by ``edit(z)``.

    ``z`` is TransformerLens's ``hook_z``: the input of the attention output projection (GPT-2
    ``attn.c_proj``), ``[batch, pos, n_heads * d_head]`` seen as ``[batch, pos, head, d_head]``, the heads
    side by side before they are mixed. ``edit`` may return ``z`` itself after reading it, or a new tensor.
    """
    layer = architecture.check_layer(model, layer)
    n_heads = model.config.num_attention_heads

    def pre_hook(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        z = einops.rearrange(args[0], "batch pos (head d_head) -> batch pos head d_head", head=n_heads)
        return (einops.rearrange(edit(z), "batch pos head d_head -> batch pos (head d_head)"), *args[1:])

    handle = architecture.block_part(model, layer, ATTENTION_OUTPUT_PROJECTION).register_forward_pre_hook(pre_hook)
    try:
        yield model
    finally:
        handle.remove()


@torch.no_grad()
def head_outputs(model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"], layer: int
                 ) -> Float[Tensor, "batch pos head d_head"]:
    """The heads' outputs at ``layer`` (TransformerLens's ``hook_z``): the input of the attention output projection."""
    captured: list[Tensor] = []

    def keep(z: Tensor) -> Tensor:
        captured.append(z)
        return z

    with editing_head_outputs(model, layer, keep):
        model(input_ids)
    return captured[0]


@contextlib.contextmanager
def ablate_head(model: PreTrainedModel, layer: int, head: int, how: Ablation = "zero",
                mean_over: Int[Tensor, "batch pos"] | None = None) -> Iterator[PreTrainedModel]:
    """Inside the ``with`` block, head ``head`` of ``layer`` writes zeros (``how="zero"``) or its mean output.

    The edit is on the heads' outputs before the attention output projection mixes them
    (:func:`editing_head_outputs`). With ``how="mean"`` the head's output is replaced by its mean over
    every position of ``mean_over`` (a batch of input_ids), a ``[d_head]`` vector.
    """
    _mean_over_needed(how, mean_over)
    layer = architecture.check_layer(model, layer)
    head = _check_head(model.config.num_attention_heads, head)
    replacement = 0.0 if how == "zero" else head_outputs(model, mean_over, layer)[:, :, head].mean(dim=(0, 1))

    def ablate(z: Tensor) -> Tensor:
        z = z.clone()
        z[:, :, head] = replacement
        return z

    with editing_head_outputs(model, layer, ablate):
        yield model


@contextlib.contextmanager
def ablate_mlp(model: PreTrainedModel, layer: int, how: Ablation = "zero",
               mean_over: Int[Tensor, "batch pos"] | None = None) -> Iterator[PreTrainedModel]:
    """Inside the ``with`` block, the MLP of ``layer`` adds zeros, or its mean output over ``mean_over`` ([d_model])."""
    _mean_over_needed(how, mean_over)
    site = f"mlp_out.{architecture.check_layer(model, layer)}"
    if how == "zero":
        replacement = None
    else:
        replacement = capture(model, mean_over, [site])[site].mean(dim=(0, 1))
    with hooks(model, {site: lambda out: torch.zeros_like(out) if replacement is None else replacement.expand_as(out)}):
        yield model


def transformer_lens_ablate_head(tl_model: HookedTransformer, layer: int, head: int, how: Ablation = "zero",
                                 mean_over: Int[Tensor, "batch pos"] | None = None) -> list[tuple[str, Callable]]:
    """:func:`ablate_head` for TransformerLens: ``fwd_hooks`` editing ``blocks.{layer}.attn.hook_z``."""
    _mean_over_needed(how, mean_over)
    name = f"blocks.{layer}.attn.hook_z"  # [batch, pos, head, d_head]
    head = _check_head(tl_model.cfg.n_heads, head)
    replacement: Tensor | float = 0.0
    if how == "mean":
        _, cache = tl_model.run_with_cache(mean_over, names_filter=name)
        replacement = cache[name][:, :, head].mean(dim=(0, 1))

    def edit(z: Tensor, hook: Any) -> Tensor:
        z = z.clone()
        z[:, :, head] = replacement
        return z

    return [(name, edit)]


def transformer_lens_ablate_mlp(tl_model: HookedTransformer, layer: int, how: Ablation = "zero",
                                mean_over: Int[Tensor, "batch pos"] | None = None) -> list[tuple[str, Callable]]:
    """:func:`ablate_mlp` for TransformerLens: ``fwd_hooks`` editing ``blocks.{layer}.hook_mlp_out``."""
    _mean_over_needed(how, mean_over)
    name = f"blocks.{layer}.hook_mlp_out"
    if how == "zero":
        return [(name, lambda out, hook: torch.zeros_like(out))]
    _, cache = tl_model.run_with_cache(mean_over, names_filter=name)
    mean = cache[name].mean(dim=(0, 1))
    return [(name, lambda out, hook: mean.expand_as(out))]


def _nnsight_ablated_module(nn_model: TransformersModel, layer: int, head: int | None) -> tuple[Any, str]:
    """The nnsight envoy to edit for an ablation, and whether its ``"input"`` or ``"output"`` is edited."""
    model_type = architecture.model_type(nn_model)
    block = architecture.blocks(nn_model)[architecture.check_layer(nn_model, layer)]
    if head is None:
        return getattr(block, MLP[model_type]), "output"
    projection = block
    for name in ATTENTION_OUTPUT_PROJECTION[model_type].split("."):
        projection = getattr(projection, name)
    return projection, "input"


def nnsight_loss_with_ablation(nn_model: TransformersModel, input_ids: Int[Tensor, "batch pos"], layer: int,
                               head: int | None = None, how: Ablation = "zero",
                               mean_over: Int[Tensor, "batch pos"] | None = None) -> float:
    """:func:`loss_with` an ablation, with nnsight: head ``head`` of ``layer`` or, with ``head=None``, its MLP.

    As :func:`ablate_head` and :func:`ablate_mlp`: the head's slice of the attention output
    projection's input, or the MLP's output, is set to zeros or to its mean over ``mean_over``,
    in place inside ``model.trace``.
    """
    _mean_over_needed(how, mean_over)
    module, where = _nnsight_ablated_module(nn_model, layer, head)
    columns = slice(None)
    if head is not None:
        config = architecture.unwrap(nn_model).config
        head = _check_head(config.num_attention_heads, head)
        d_head = config.hidden_size // config.num_attention_heads
        columns = slice(head * d_head, (head + 1) * d_head)
    replacement: Tensor | float = 0.0
    with torch.no_grad():
        if how == "mean":
            with nn_model.trace(mean_over):
                seen = getattr(module, where).save()                     # [batch, pos, d]
            replacement = seen[..., columns].mean(dim=(0, 1))
        with nn_model.trace(input_ids, labels=input_ids):
            getattr(module, where)[..., columns] = replacement
            loss = nn_model.output.loss.save()
    return float(loss)


def nnsight_loss_with_head_ablation(nn_model: TransformersModel, input_ids: Int[Tensor, "batch pos"], layer: int,
                                    head: int, how: Ablation = "zero",
                                    mean_over: Int[Tensor, "batch pos"] | None = None) -> float:
    """Reference for Exercise 3.6: :func:`nnsight_loss_with_ablation` of one head."""
    return nnsight_loss_with_ablation(nn_model, input_ids, layer, head, how, mean_over)


@contextlib.contextmanager
def resample_ablate_head(model: PreTrainedModel, layer: int, head: int, source_ids: Int[Tensor, "batch pos"]
                         ) -> Iterator[PreTrainedModel]:
    """Reference for bonus exercise 3.16: inside the ``with`` block, head ``head`` of ``layer`` writes what it
    wrote on ``source_ids`` (another batch of the inputs' shape), position by position: **resample
    ablation**, which removes what the head computed from *this* input while keeping its output in
    the range the rest of the model is used to (zero and mean outputs may be far from it)."""
    layer = architecture.check_layer(model, layer)
    head = _check_head(model.config.num_attention_heads, head)
    replacement = head_outputs(model, source_ids, layer)[:, :, head]            # [batch, pos, d_head]

    def resample(z: Tensor) -> Tensor:
        if z.shape[:2] != replacement.shape[:2]:
            raise ValueError(f"the inputs are {tuple(z.shape[:2])} (batch, pos) but source_ids are "
                             f"{tuple(replacement.shape[:2])}: resample from a batch of the same shape")
        z = z.clone()
        z[:, :, head] = replacement
        return z

    with editing_head_outputs(model, layer, resample):
        yield model


@torch.no_grad()
def loss_with(model: PreTrainedModel | HookedTransformer, input_ids: Int[Tensor, "batch pos"],
              edits: Mapping[str, EditFn] | Sequence[Any] = ()) -> float:
    """The mean next-token loss (nats) of ``model`` on ``input_ids`` with ``edits`` applied.

    For a ``transformers`` model, ``edits`` is a ``{site_or_module: fn}`` mapping (see :func:`hooks`)
    or a list of edit context managers, e.g. ``[ablate_head(model, 1, 3), ablate_mlp(model, 0)]``.
    For a ``HookedTransformer`` it is a list of ``(hook_name, fn)`` pairs, as ``run_with_hooks`` takes.
    """
    if hasattr(model, "run_with_hooks"):  # a HookedTransformer
        return float(model.run_with_hooks(input_ids, return_type="loss", fwd_hooks=list(edits)))
    with contextlib.ExitStack() as stack:
        if isinstance(edits, Mapping):
            stack.enter_context(hooks(model, edits))
        else:
            for edit in edits:
                stack.enter_context(edit)
        return float(model(input_ids, labels=input_ids).loss)


# --------------------------------------------------------------------------------------------
# 4. Exercise 3.1: capture the residual stream with a hook


@torch.no_grad()
def capture_residual_stream(model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"], layer: int
                            ) -> Float[Tensor, "batch pos d_model"]:
    """Reference for Exercise 3.1: the output of block ``layer`` (the residual stream after it), with a forward hook."""
    captured: list[Tensor] = []

    def save_output(module: nn.Module, args: tuple, output: Tensor | tuple) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = architecture.blocks(model)[layer].register_forward_hook(save_output)
    try:
        model(input_ids)
    finally:
        handle.remove()
    return captured[0]
