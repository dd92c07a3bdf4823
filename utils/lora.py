"""Chapter 2 reference: LoRA from scratch, checked against ``peft``, and merging adapters.

**LoRA** (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") fine-tunes a
model without changing its weights. Each chosen linear layer keeps its frozen weight
``W0 [d_out, d_in]`` and learns a low-rank update instead::

    h = W0 x + b + (alpha / r) * B A x          A: [r, d_in]    B: [d_out, r]    r << d_in, d_out
    ΔW = (alpha / r) * B @ A                    [d_out, d_in], the same shape as W0

``A`` starts random (``kaiming_uniform_(a=sqrt(5))``, the init of ``nn.Linear``, as in peft) and
``B`` starts at zero, so at step 0 the model computes exactly what the base model computes.
Only ``A`` and ``B`` are trained: ``r * (d_in + d_out)`` numbers per layer instead of
``d_in * d_out``. On the course model's ``attn.c_attn`` (128 -> 384) that is 4,096 numbers at
``r = 8`` instead of 49,152. ``alpha / r`` (the *scaling*) keeps the update's size about the same
when you change ``r``. After training, ``ΔW`` can be added into ``W0`` (*merged*): the model is
then exactly as fast as before and no longer needs this module.

**The classic bug.** GPT-2 (and so the course model) does not use ``nn.Linear`` for
``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc`` and ``mlp.c_proj`` but ``transformers``' ``Conv1D``,
which stores its weight *transposed*, ``[d_in, d_out]``, and computes ``y = x @ W + b``.
GPT-NeoX (Pythia) and Llama use ``nn.Linear`` (``[d_out, d_in]``, ``y = x @ W.T + b``). Every
function here keeps ``ΔW`` in ``nn.Linear``'s layout ``[d_out, d_in]`` (as ``peft`` does) and
transposes it only where it touches a ``Conv1D`` weight (:func:`to_layer_layout`). A square layer
(``c_proj``: 128 -> 128) hides the bug: the shapes agree, only the values are wrong.

**Task vectors and merging.** An adapter's ``ΔW`` for every module is a *task vector* (Ilharco
et al. 2023, "Editing Models with Task Arithmetic"). Two adapters trained for two tasks can be
merged by a weighted sum (:func:`merge_task_vectors_linear`) or by spherical interpolation
(:func:`slerp`, Shoemake 1985, popularised for model merging by mergekit), and added into the
base model's weights (:func:`apply_task_vector`).

The public functions::

    names = add_lora(model, ["c_attn", "c_proj", "c_fc"], r=8, alpha=16)   # wraps 16 layers in LoRALinear
    count_parameters(model)                       # (65536, 1152384): (trainable, total)
    lora_modules(model)                           # {'transformer.h.0.attn.c_attn': LoRALinear(...), ...}
    merge_lora(model); unmerge_lora(model)        # add ΔW into the base weights / take it out again
    save_adapter(model, "adapter/")               # adapter_model.safetensors + adapter_config.json
    load_adapter(fresh_model, "adapter/")         # also loads adapters that peft saved
    remove_lora(model, merge=True)                # the plain transformers model again
    vector = task_vector(model)                   # {module name: ΔW [d_out, d_in]}
    merge_task_vectors_linear([v1, v2], [0.5, 0.5]); merge_task_vectors_slerp(v1, v2, t=0.5)
    apply_task_vector(base_model, vector)         # a copy of the base model with ΔW added

State dicts and saved adapters use ``peft``'s key names
(``base_model.model.transformer.h.0.attn.c_attn.lora_A.weight``) and ``peft``'s config names
(``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``), so ``PeftModel.from_pretrained``
loads an adapter saved here and :func:`load_adapter` loads one that ``peft`` saved.
``tests/test_lora.py`` checks that logits and merged weights agree with ``peft``.

Limits: one adapter per model at a time; no DoRA, rsLoRA, per-module ranks or LoRA on embeddings.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D


__all__ = [
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_WEIGHTS_FILE",
    "LoRALinear",
    "PARALLEL_THRESHOLD",
    "PEFT_PREFIX",
    "adapter_config",
    "add_lora",
    "apply_task_vector",
    "count_parameters",
    "is_transposed",
    "linear_module_names",
    "linear_weight",
    "load_adapter",
    "load_lora_state_dict",
    "lora_forward",
    "lora_modules",
    "lora_parameter_count",
    "lora_state_dict",
    "merge_lora",
    "merge_task_vectors_linear",
    "merge_task_vectors_slerp",
    "merged_weight",
    "remove_lora",
    "save_adapter",
    "slerp",
    "task_vector",
    "task_vector_cosine",
    "to_layer_layout",
    "unmerge_lora",
]

#: The layers LoRA can wrap: ``nn.Linear`` (weight ``[d_out, d_in]``) and GPT-2's ``Conv1D`` (``[d_in, d_out]``).
LinearLayer = Union[nn.Linear, Conv1D]
#: State-dict keys start with this, as in a peft adapter (``PeftModel.base_model.model`` is the transformers model).
PEFT_PREFIX = "base_model.model."
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
#: :func:`slerp` interpolates linearly when ``|cos(angle)|`` is above this (mergekit's value).
PARALLEL_THRESHOLD = 0.9995
#: Vectors with a norm below this have no direction: :func:`slerp` interpolates them linearly.
_TINY_NORM = 1e-12


# --------------------------------------------------------------------------------------------
# The two weight layouts


def _check_linear_layer(layer: Any, what: str = "the base layer") -> None:
    if not isinstance(layer, (nn.Linear, Conv1D)):
        raise ValueError(
            f"{what} is a {type(layer).__name__}: LoRA here wraps torch.nn.Linear or transformers' Conv1D "
            "(GPT-2's attention and MLP layers) only; pick a linear layer, e.g. model.transformer.h[0].attn.c_attn")


def is_transposed(layer: LinearLayer) -> bool:
    """True for GPT-2's ``Conv1D``, whose weight is stored ``[d_in, d_out]`` (``y = x @ W + b``);
    False for ``nn.Linear`` (``[d_out, d_in]``, ``y = x @ W.T + b``)."""
    _check_linear_layer(layer)
    return isinstance(layer, Conv1D)


def linear_weight(layer: LinearLayer) -> Float[Tensor, "d_out d_in"]:
    """The layer's weight in ``nn.Linear``'s layout ``[d_out, d_in]``, whichever layout it stores."""
    return layer.weight.T if is_transposed(layer) else layer.weight


def to_layer_layout(layer: LinearLayer, matrix: Float[Tensor, "d_out d_in"]) -> Tensor:
    """``matrix`` (``nn.Linear`` layout ``[d_out, d_in]``) in the layout of ``layer.weight``:
    transposed to ``[d_in, d_out]`` for a ``Conv1D``, unchanged for an ``nn.Linear``."""
    return matrix.T if is_transposed(layer) else matrix


def _features(layer: LinearLayer) -> tuple[int, int]:
    """``(d_in, d_out)`` of an ``nn.Linear`` or a ``Conv1D``, read from the weight's shape."""
    d_out, d_in = linear_weight(layer).shape
    return d_in, d_out


# --------------------------------------------------------------------------------------------
# The LoRA layer


def _check_hyperparameters(r: Any, alpha: Any, dropout: Any) -> None:
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ValueError(f"r must be a positive integer (the rank of the update, e.g. 8), got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha must be a positive number (the update is scaled by alpha / r; e.g. alpha=16), "
                         f"got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a probability in [0, 1) (0 switches it off), got {dropout!r}")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` or ``Conv1D`` plus a trainable low-rank update ``(alpha / r) B A``.

    ``forward(x)`` computes ``base_layer(x) + dropout(x) @ A.T @ B.T * scaling``::

        x [..., d_in] --base_layer------------------------------> [..., d_out]
                      --dropout--> @ A.T [..., r] --> @ B.T [..., d_out] * scaling --(+)

    Attributes:
        base_layer: the wrapped layer; its parameters have ``requires_grad=False``.
        lora_A: ``[r, d_in]``, trainable, ``kaiming_uniform_(a=sqrt(5))`` (peft's and ``nn.Linear``'s init).
        lora_B: ``[d_out, r]``, trainable, zeros: the layer starts equal to its base.
        r, alpha, scaling: the rank, alpha and ``alpha / r``.
        merged: True after :meth:`merge` (``ΔW`` is inside the base weight; ``forward`` does not add it again).

    Args:
        base_layer: an ``nn.Linear`` or a ``transformers.pytorch_utils.Conv1D``.
        r: the rank, a positive integer.
        alpha: a positive number; the update is scaled by ``alpha / r``.
        dropout: dropout probability on the input of the LoRA path only, in ``[0, 1)``.
        generator: a ``torch.Generator`` for ``A``'s init (``None``: torch's global random state).
    """

    def __init__(self, base_layer: LinearLayer, r: int = 8, alpha: float = 16, dropout: float = 0.0, *,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        _check_linear_layer(base_layer)
        _check_hyperparameters(r, alpha, dropout)
        self.base_layer = base_layer.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        weight = base_layer.weight
        lora_A = torch.empty(self.r, self.in_features)                 # on the CPU, where the generator lives
        nn.init.kaiming_uniform_(lora_A, a=math.sqrt(5), generator=generator)
        self.lora_A = nn.Parameter(lora_A.to(device=weight.device, dtype=weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, self.r, device=weight.device, dtype=weight.dtype))
        self.merged = False

    @property
    def in_features(self) -> int:
        """``d_in``, for an ``nn.Linear`` and for a ``Conv1D`` base layer alike."""
        return _features(self.base_layer)[0]

    @property
    def out_features(self) -> int:
        """``d_out``, for an ``nn.Linear`` and for a ``Conv1D`` base layer alike."""
        return _features(self.base_layer)[1]

    @property
    def dropout_p(self) -> float:
        """The dropout probability of the LoRA path (0.0 when it is off)."""
        return self.dropout.p if isinstance(self.dropout, nn.Dropout) else 0.0

    def forward(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_out"]:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"LoRALinear expects inputs [..., {self.in_features}] (d_in = {self.in_features}), "
                             f"got shape {tuple(x.shape)}: is this the right layer for this tensor?")
        output = self.base_layer(x)                                     # [*batch, d_out]
        if self.merged:                                                 # ΔW is already inside base_layer.weight
            return output
        down = self.dropout(x) @ self.lora_A.T                          # [*batch, r]
        up = down @ self.lora_B.T                                       # [*batch, d_out]
        return output + up * self.scaling

    def delta_weight(self) -> Float[Tensor, "d_out d_in"]:
        """``ΔW = (alpha / r) B @ A``, in ``nn.Linear``'s layout ``[d_out, d_in]`` whatever the base layer."""
        return einops.einsum(self.lora_B, self.lora_A, "d_out r, r d_in -> d_out d_in") * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Add ``ΔW`` into the base weight (transposed for a ``Conv1D``). Merging twice does nothing.

        While merged, ``forward`` is the base layer alone, so ``A`` and ``B`` get no gradients: merge
        after training, and :meth:`unmerge` before training again.
        """
        if not self.merged:
            self.base_layer.weight.copy_(merged_weight(self.base_layer, self.lora_A, self.lora_B, self.scaling))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ``ΔW`` from the base weight again (undoes :meth:`merge` up to rounding); nothing if not merged."""
        if self.merged:
            self.base_layer.weight -= to_layer_layout(self.base_layer, self.delta_weight())
            self.merged = False

    def extra_repr(self) -> str:
        return (f"{self.in_features} -> {self.out_features}, r={self.r}, alpha={self.alpha}, "
                f"scaling={self.scaling:g}, merged={self.merged}")


# --------------------------------------------------------------------------------------------
# Exercises 2.2 and 2.3: the references


def lora_forward(
    layer: LinearLayer,
    x: Float[Tensor, "*batch d_in"],
    lora_A: Float[Tensor, "r d_in"],
    lora_B: Float[Tensor, "d_out r"],
    scaling: float,
) -> Float[Tensor, "*batch d_out"]:
    """Reference for Exercise 2.2: the frozen layer's output plus the low-rank update.

    ``layer(x) + x @ A.T @ B.T * scaling`` (no dropout). Calling ``layer(x)`` instead of writing
    ``x @ layer.weight.T + layer.bias`` is what makes this right for GPT-2's transposed ``Conv1D`` too.
    """
    down = x @ lora_A.T                                                 # [*batch, r]
    up = down @ lora_B.T                                                # [*batch, d_out]
    return layer(x) + up * scaling


def merged_weight(
    layer: LinearLayer, lora_A: Float[Tensor, "r d_in"], lora_B: Float[Tensor, "d_out r"], scaling: float,
) -> Tensor:
    """Reference for Exercise 2.3: the layer's weight with ``ΔW`` added, *in the layer's own layout*.

    ``ΔW = scaling * B @ A`` is ``[d_out, d_in]``, ``nn.Linear``'s layout. A ``Conv1D`` stores
    ``[d_in, d_out]``, so there the result is ``W + ΔW.T``. Returns a new tensor of
    ``layer.weight``'s shape; ``layer`` is not changed.
    """
    delta = lora_B @ lora_A * scaling                                   # [d_out, d_in]
    if isinstance(layer, Conv1D):                                       # GPT-2: W is [d_in, d_out]
        delta = delta.T
    return layer.weight + delta


# --------------------------------------------------------------------------------------------
# Adding LoRA to a model


def _matches(name: str, target: str) -> bool:
    """peft's rule: a target matches a module named exactly ``target`` or ending with ``"." + target``."""
    return name == target or name.endswith("." + target)


def _matched_names(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """The layers LoRA can wrap whose name matches one of ``targets`` (:func:`_matches`), in model order."""
    return [name for name in linear_module_names(model) if any(_matches(name, target) for target in targets)]


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's LoRA layers by module name, in model order (``{}`` when it has none)."""
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}


def linear_module_names(model: nn.Module) -> list[str]:
    """Names of the layers LoRA can wrap (``nn.Linear`` and ``Conv1D``), in model order.

    Layers already wrapped in a :class:`LoRALinear` are listed under the wrapper's name.
    """
    inside_lora = tuple(f"{name}." for name in lora_modules(model))
    return [name for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, Conv1D, LoRALinear)) and not name.startswith(inside_lora)]


def _suffixes(names: Iterable[str]) -> list[str]:
    """``['c_attn', 'c_fc', 'c_proj', 'lm_head']`` from the full module names: the last part of each, once."""
    return sorted({name.rsplit(".", 1)[-1] for name in names})


def _as_targets(target_modules: Sequence[str] | str) -> list[str]:
    targets = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    if not targets or not all(isinstance(target, str) and target for target in targets):
        raise ValueError(f"target_modules must be a non-empty list of module names, e.g. ['c_attn', 'c_proj'], "
                         f"got {target_modules!r}")
    return targets


def _unmatched_target_error(model: nn.Module, target: str, linear_names: list[str]) -> ValueError:
    message = (f"target module {target!r} matches no nn.Linear or Conv1D layer of this {type(model).__name__}. "
               f"The layers LoRA can wrap end with: {', '.join(_suffixes(linear_names))}")
    others = [(name, module) for name, module in model.named_modules() if _matches(name, target)]
    if others:
        name, module = others[0]
        message += (f". {name!r} is a {type(module).__name__}, not a linear layer: target the layers inside it, "
                    f"e.g. {[n for n in linear_names if n.startswith(name + '.')][:2]}")
    return ValueError(message + " (a target matches a module named exactly so or ending with '.' + target)")


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def add_lora(
    model: nn.Module,
    target_modules: Sequence[str],
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    seed: int = 0,
) -> list[str]:
    """Wrap every layer whose name ends with one of ``target_modules`` in a :class:`LoRALinear`, in place.

    Matching is peft's: ``"c_attn"`` matches ``"transformer.h.0.attn.c_attn"`` (a name equal to the
    target or ending with ``"." + target``); ``"attn.c_proj"`` matches the attention's ``c_proj``
    but not the MLP's. Every parameter of the model is frozen; only the new ``A`` and ``B`` train.
    ``A`` is drawn from a generator seeded with ``seed``, so two calls give identical adapters.
    A single string is one name (peft would read a string as a regular expression).

    Returns:
        The names of the wrapped layers, in model order.

    Raises:
        ValueError: a target matches no ``nn.Linear``/``Conv1D`` layer (the message lists the ones
            there are), the model already has LoRA layers, or ``r``/``alpha``/``dropout`` are invalid.
            Nothing is changed then.
    """
    targets = _as_targets(target_modules)
    _check_hyperparameters(r, alpha, dropout)
    if lora_modules(model):
        raise ValueError(f"this model already has LoRA layers ({', '.join(list(lora_modules(model))[:2])}, ...): "
                         "this module holds one adapter at a time; call remove_lora(model) first")
    linear_names = linear_module_names(model)
    for target in targets:
        if not any(_matches(name, target) for name in linear_names):
            raise _unmatched_target_error(model, target, linear_names)
    names = _matched_names(model, targets)
    model.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    for name in names:
        _set_submodule(model, name, LoRALinear(model.get_submodule(name), r, alpha, dropout, generator=generator))
    return names


def lora_parameter_count(model: nn.Module, target_modules: Sequence[str], r: int) -> int:
    """How many parameters ``add_lora(model, target_modules, r)`` would train, from the layers' shapes
    alone: ``r * (d_in + d_out)`` for each matched layer (``A`` is ``[r, d_in]``, ``B`` is ``[d_out, r]``)."""
    names = _matched_names(model, _as_targets(target_modules))
    return sum(r * sum(_features(model.get_submodule(name))) for name in names)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` numbers of parameters; a tied weight (GPT-2's ``lm_head``/``wte``) counts once.

    After ``add_lora(model, targets, r)`` the trainable count is ``sum(r * (d_in + d_out))`` over the
    wrapped layers: 65,536 for the course model with ``["c_attn", "c_proj", "c_fc"]`` and ``r = 8``.
    """
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)


def _require_lora(model: nn.Module) -> dict[str, LoRALinear]:
    modules = lora_modules(model)
    if not modules:
        raise ValueError(f"this {type(model).__name__} has no LoRA layers: call add_lora(model, target_modules) "
                         "or load_adapter(model, directory) first")
    return modules


def _check_untied(model: nn.Module, layers: Mapping[str, nn.Module]) -> None:
    """Refuse to change a weight that another module shares (GPT-2 ties ``lm_head.weight`` to ``wte.weight``)."""
    owners: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(parameter), []).append(name)
    for name, layer in layers.items():
        weight = layer.base_layer.weight if isinstance(layer, LoRALinear) else layer.weight
        shared = [owner for owner in owners.get(id(weight), []) if not owner.startswith(name + ".")]
        if shared:
            raise ValueError(f"{name}'s weight is tied to {shared[0]} (the same tensor): adding ΔW into it would "
                             f"change {shared[0]} too; keep this adapter unmerged, or untie the weights first")


def merge_lora(model: nn.Module) -> list[str]:
    """Add every LoRA layer's ``ΔW`` into its base weight (:meth:`LoRALinear.merge`); returns their names."""
    modules = _require_lora(model)
    _check_untied(model, modules)
    for module in modules.values():
        module.merge()
    return list(modules)


def unmerge_lora(model: nn.Module) -> list[str]:
    """Take every LoRA layer's ``ΔW`` out of its base weight (:meth:`LoRALinear.unmerge`); returns their names."""
    modules = _require_lora(model)
    for module in modules.values():
        module.unmerge()
    return list(modules)


def remove_lora(model: nn.Module, merge: bool = True) -> list[str]:
    """Put the base layers back in place of the LoRA layers, in place; returns their names.

    ``merge=True`` (like peft's ``merge_and_unload``) keeps the adapter's effect: ``ΔW`` is added into
    the base weights first. ``merge=False`` (peft's ``unload``) throws the adapter away and restores
    the base weights. Parameters stay frozen: call ``model.requires_grad_(True)`` to train them all.
    """
    modules = _require_lora(model)
    if merge:
        _check_untied(model, modules)
    for name, module in modules.items():
        if merge:
            module.merge()
        else:
            module.unmerge()
        _set_submodule(model, name, module.base_layer)
    return list(modules)


# --------------------------------------------------------------------------------------------
# Saving and loading adapters (peft's format)


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only the adapter: ``A`` and ``B`` of every LoRA layer, detached copies, with peft's key names.

    ``{"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight": [r, d_in], "...lora_B.weight": [d_out, r], ...}``
    (peft keeps ``A`` and ``B`` as ``nn.Linear`` layers inside a ``PeftModel``, hence the prefix and ``.weight``).
    """
    state: dict[str, Tensor] = {}
    for name, module in _require_lora(model).items():
        state[f"{PEFT_PREFIX}{name}.lora_A.weight"] = module.lora_A.detach().clone()
        state[f"{PEFT_PREFIX}{name}.lora_B.weight"] = module.lora_B.detach().clone()
    return state


@torch.no_grad()
def load_lora_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Copy ``A`` and ``B`` from ``state_dict`` (keys as :func:`lora_state_dict` writes them, or peft's
    ``get_peft_model_state_dict``) into the model's LoRA layers. Every key and shape is checked before
    anything is copied: a missing or unexpected key, or a tensor of another shape, raises ``ValueError``."""
    parameters = {f"{PEFT_PREFIX}{name}.lora_{which}.weight": getattr(module, f"lora_{which}")
                  for name, module in _require_lora(model).items() for which in "AB"}
    for key, parameter in parameters.items():                          # shapes first: the likeliest cause
        if key in state_dict and tuple(state_dict[key].shape) != tuple(parameter.shape):
            module, which = key[len(PEFT_PREFIX):].rsplit(".", 2)[:2]
            raise ValueError(f"{module}: the adapter's {which} has shape {tuple(state_dict[key].shape)} but this "
                             f"model's needs {tuple(parameter.shape)}: the adapter was made for a model of another "
                             "size or with another rank r")
    missing = [key for key in parameters if key not in state_dict]
    unexpected = [key for key in state_dict if key not in parameters]
    if missing or unexpected:
        raise ValueError(f"the adapter does not fit this model's LoRA layers: missing {missing[:2]}, unexpected "
                         f"{unexpected[:2]} ({len(missing)} missing, {len(unexpected)} unexpected); was it made for "
                         "another model, or with other target_modules?")
    for key, parameter in parameters.items():
        parameter.copy_(state_dict[key])


def _target_modules(model: nn.Module, names: list[str]) -> list[str]:
    """The shortest faithful ``target_modules`` for the LoRA layers ``names``: their last parts
    (``['c_attn', 'c_fc']``) when those select exactly these layers, else the full names."""
    suffixes = _suffixes(names)
    selected = [name for name in linear_module_names(model) if any(_matches(name, s) for s in suffixes)]
    return suffixes if selected == names else names


def adapter_config(model: nn.Module) -> dict[str, Any]:
    """The ``adapter_config.json`` of the model's adapter, in peft's format, read from its LoRA layers."""
    modules = _require_lora(model)
    settings = {(module.r, module.alpha, module.dropout_p) for module in modules.values()}
    if len(settings) > 1:
        raise ValueError(f"the LoRA layers have different (r, alpha, dropout): {sorted(settings)}; peft's adapter "
                         "format stores one setting for all of them (use add_lora, which makes them equal)")
    r, alpha, dropout = settings.pop()
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": getattr(getattr(model, "config", None), "_name_or_path", None) or None,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": _target_modules(model, list(modules)),
        "fan_in_fan_out": all(is_transposed(module.base_layer) for module in modules.values()),
        "bias": "none",
        "init_lora_weights": True,
        "inference_mode": True,
    }


def save_adapter(model: nn.Module, directory: str | Path) -> Path:
    """Save the adapter as peft does: ``adapter_model.safetensors`` (:func:`lora_state_dict`) and
    ``adapter_config.json`` (:func:`adapter_config`: r, lora_alpha, lora_dropout, target_modules...).

    The config is read from the LoRA layers themselves, so it cannot disagree with the weights.
    ``peft.PeftModel.from_pretrained(base_model, directory)`` loads the result. Returns the directory.
    """
    directory = Path(directory)
    config = adapter_config(model)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: tensor.contiguous().cpu() for key, tensor in lora_state_dict(model).items()}
    save_file(state, directory / ADAPTER_WEIGHTS_FILE, metadata={"format": "pt"})
    (directory / ADAPTER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return directory


#: peft options that change what an adapter computes and that this module does not implement.
_UNSUPPORTED = {"use_dora": False, "use_rslora": False, "rank_pattern": {}, "alpha_pattern": {}, "bias": "none",
                "modules_to_save": None, "lora_bias": False}


def load_adapter(model: nn.Module, directory: str | Path, seed: int = 0) -> list[str]:
    """Add LoRA layers to ``model`` as ``adapter_config.json`` describes and load their ``A`` and ``B``.

    Reads adapters written by :func:`save_adapter` or by peft's ``save_pretrained``. If the weights do
    not fit (another model size, another rank), raises ``ValueError`` and leaves the model as it was.
    ``seed`` seeds the initial ``A`` (:func:`add_lora`), which the file's values then replace.
    Returns the names of the LoRA layers.
    """
    directory = Path(directory)
    config_path, weights_path = directory / ADAPTER_CONFIG_FILE, directory / ADAPTER_WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ValueError(f"{path} does not exist: an adapter directory holds {ADAPTER_CONFIG_FILE} and "
                             f"{ADAPTER_WEIGHTS_FILE} (written by save_adapter or peft's save_pretrained)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{config_path} describes a {config['peft_type']} adapter, not LoRA")
    unsupported = [key for key, default in _UNSUPPORTED.items() if config.get(key, default) not in (default, None, {})]
    if unsupported:
        raise ValueError(f"{config_path} uses peft options this from-scratch LoRA does not implement: {unsupported}; "
                         "load it with peft.PeftModel.from_pretrained instead")
    if isinstance(config.get("target_modules"), str):
        raise ValueError(f"{config_path}: target_modules is a regular expression ({config['target_modules']!r}); "
                         "only lists of module names are supported")
    flags = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    names = add_lora(model, config["target_modules"], r=config["r"], alpha=config["lora_alpha"],
                     dropout=config.get("lora_dropout", 0.0), seed=seed)
    try:
        load_lora_state_dict(model, load_file(weights_path))
    except ValueError:
        remove_lora(model, merge=False)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(flags[name])
        raise
    return names


# --------------------------------------------------------------------------------------------
# Task vectors and merging


def task_vector(model: nn.Module) -> dict[str, Float[Tensor, "d_out d_in"]]:
    """Each LoRA layer's ``ΔW = (alpha / r) B @ A`` (detached), in ``nn.Linear`` layout, by module name."""
    return {name: module.delta_weight().detach().clone() for name, module in _require_lora(model).items()}


def task_vector_cosine(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """The cosine of the angle between two task vectors, each flattened over all its modules into one
    vector: near 0 when the two updates change unrelated directions, near 1 when they agree."""
    _check_same_modules([a, b])
    flat_a = torch.cat([a[name].flatten() for name in a])
    flat_b = torch.cat([b[name].flatten() for name in a])
    return F.cosine_similarity(flat_a, flat_b, dim=0).item()


def _check_same_modules(vectors: Sequence[Mapping[str, Tensor]]) -> None:
    first = vectors[0]
    for i, vector in enumerate(vectors[1:], start=1):
        if set(vector) != set(first):
            only_first, only_this = sorted(set(first) - set(vector)), sorted(set(vector) - set(first))
            raise ValueError(f"task vectors 0 and {i} cover different modules (only in 0: {only_first[:2]}, only in "
                             f"{i}: {only_this[:2]}): merge adapters trained with the same target_modules")
        for name, delta in vector.items():
            if delta.shape != first[name].shape:
                raise ValueError(f"{name}: task vector 0 has shape {tuple(first[name].shape)} but task vector {i} has "
                                 f"{tuple(delta.shape)}: they come from models of different sizes")


def merge_task_vectors_linear(
    vectors: Sequence[Mapping[str, Tensor]], weights: Sequence[float],
) -> dict[str, Float[Tensor, "d_out d_in"]]:
    """The weighted sum ``sum_i weights[i] * vectors[i]``, module by module (task arithmetic).

    Weights need not sum to 1: ``(1, 1)`` adds both tasks, ``(0.5, 0.5)`` averages them, a negative
    weight subtracts a task ("forgetting by negation").
    """
    if len(vectors) == 0 or len(vectors) != len(weights):
        raise ValueError(f"give one weight per task vector (got {len(vectors)} vectors and {len(weights)} weights)")
    _check_same_modules(vectors)
    return {name: sum(weight * vector[name] for weight, vector in zip(weights, vectors)) for name in vectors[0]}


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Reference for Exercise 2.10: spherical interpolation from ``a`` (``t = 0``) to ``b`` (``t = 1``).

    Both tensors are flattened and treated as vectors. The *direction* moves along the great circle
    between the unit vectors ``â`` and ``b̂`` at constant angular speed, and the *length* moves
    linearly from ``|a|`` to ``|b|``::

        θ = arccos(â · b̂)
        direction = (sin((1 - t) θ) â + sin(t θ) b̂) / sin θ          (a unit vector)
        slerp(a, b, t) = ((1 - t) |a| + t |b|) · direction

    So two orthogonal unit vectors at ``t = 0.5`` give a unit vector at 45° to both, where linear
    interpolation gives one of length ``1/√2``: averaging two task vectors that point different ways
    shrinks them, slerp does not. When ``|cos θ| > 0.9995`` (nearly parallel, or opposite: ``sin θ ≈ 0``)
    or a vector is zero, it falls back to linear interpolation ``(1 - t) a + t b``.

    mergekit's ``slerp`` applies the same two ``sin`` weights to ``a`` and ``b`` themselves rather than
    to their directions; the two agree when ``|a| = |b|``. Returns a tensor of ``a``'s shape.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs two tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if not 0 <= t <= 1:
        raise ValueError(f"t must be in [0, 1] (0 gives a, 1 gives b), got {t}")
    a_flat, b_flat = a.flatten(), b.flatten()
    a_norm, b_norm = a_flat.norm(), b_flat.norm()
    if min(a_norm, b_norm) < _TINY_NORM:                               # a zero vector has no direction
        return torch.lerp(a, b, t)
    a_unit, b_unit = a_flat / a_norm, b_flat / b_norm
    cos_theta = (a_unit @ b_unit).clamp(-1.0, 1.0)
    if cos_theta.abs() > PARALLEL_THRESHOLD:                           # sin θ ≈ 0: the formula divides by ~0
        return torch.lerp(a, b, t)
    theta = torch.arccos(cos_theta)
    direction = (torch.sin((1 - t) * theta) * a_unit + torch.sin(t * theta) * b_unit) / torch.sin(theta)
    norm = (1 - t) * a_norm + t * b_norm
    return (norm * direction).reshape(a.shape)


def merge_task_vectors_slerp(
    a: Mapping[str, Tensor], b: Mapping[str, Tensor], t: float, *,
    interpolate: Callable[[Tensor, Tensor, float], Tensor] = slerp,
) -> dict[str, Float[Tensor, "d_out d_in"]]:
    """:func:`slerp` (or ``interpolate``) of two task vectors, module by module (each module's ``ΔW``
    flattened on its own)."""
    _check_same_modules([a, b])
    return {name: interpolate(a[name], b[name], t) for name in a}


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _linear_layer(model: nn.Module, name: str) -> LinearLayer:
    """``model``'s ``nn.Linear``/``Conv1D`` called ``name``, or a ValueError naming what is wrong."""
    if not _has_module(model, name):
        available = linear_module_names(model)
        raise ValueError(f"the task vector names module {name!r}, which this {type(model).__name__} does not have; "
                         f"its linear layers are e.g. {available[:3]}: was the vector made from another "
                         "architecture?")
    layer = model.get_submodule(name)
    _check_linear_layer(layer, what=f"module {name!r}")
    return layer


@torch.no_grad()
def apply_task_vector(
    model: nn.Module, vector: Mapping[str, Tensor], scale: float = 1.0, *, inplace: bool = False,
) -> nn.Module:
    """The model with ``scale * ΔW`` added into each named layer's weight (transposed for ``Conv1D``).

    ``model`` must be a plain model without LoRA layers (the base model, or one after
    :func:`remove_lora`). By default it is not changed: a deep copy is returned; ``inplace=True``
    changes and returns ``model`` itself. Every module name and shape is checked before any weight
    changes: a vector from a model of another size raises ``ValueError`` naming the module and both shapes.
    """
    if lora_modules(model):
        raise ValueError("this model has LoRA layers: apply a task vector to the plain base model, or call "
                         "remove_lora(model) first (a task vector is already ΔW; adding it to a LoRA model would "
                         "stack two updates)")
    for name, delta in vector.items():                                 # shapes first: the likeliest problem
        if _has_module(model, name):
            layer = _linear_layer(model, name)
            d_in, d_out = _features(layer)
            if tuple(delta.shape) != (d_out, d_in):
                raise ValueError(f"{name}: the task vector's ΔW has shape {tuple(delta.shape)} but this "
                                 f"{type(layer).__name__} ({d_in} -> {d_out}) needs [d_out, d_in] = {(d_out, d_in)}: "
                                 "the vector comes from a model of another size")
    layers = {name: _linear_layer(model, name) for name in vector}    # raises for a module the model lacks
    _check_untied(model, layers)
    target = model if inplace else copy.deepcopy(model)
    for name, delta in vector.items():
        layer = target.get_submodule(name)
        layer.weight += to_layer_layout(layer, scale * delta.to(layer.weight))
    return target
