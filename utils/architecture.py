"""Where the parts of a decoder-only transformer live, for GPT-2, GPT-NeoX (Pythia) and Llama.

The course's code never writes ``model.transformer.h`` directly: it asks ``blocks(model)``, so the
same notebook runs on the course model (GPT-2 architecture), Pythia and Llama. Each function takes
a ``transformers`` model or an ``nnsight.TransformersModel`` wrapping one.

| part | GPT-2 | GPT-NeoX | Llama |
|---|---|---|---|
| blocks | ``transformer.h`` | ``gpt_neox.layers`` | ``model.layers`` |
| token embedding | ``transformer.wte`` | ``gpt_neox.embed_in`` | ``model.embed_tokens`` |
| final norm | ``transformer.ln_f`` | ``gpt_neox.final_layer_norm`` | ``model.norm`` |
| unembedding | ``lm_head`` | ``lm_head`` (``embed_out`` before transformers 5) | ``lm_head`` |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from torch import nn
from transformers import PreTrainedModel


class Layout(NamedTuple):
    """Attribute paths of the parts of one architecture."""

    blocks: str
    token_embedding: str
    final_norm: str
    unembedding: str


LAYOUTS: dict[str, Layout] = {
    "gpt2": Layout("transformer.h", "transformer.wte", "transformer.ln_f", "lm_head"),
    "gpt_neox": Layout("gpt_neox.layers", "gpt_neox.embed_in", "gpt_neox.final_layer_norm", "lm_head"),
    "llama": Layout("model.layers", "model.embed_tokens", "model.norm", "lm_head"),
}


def unwrap(model: Any) -> PreTrainedModel:
    """The ``transformers`` model inside ``model`` (itself, or the one an nnsight ``TransformersModel`` wraps)."""
    inner = model if isinstance(model, PreTrainedModel) else getattr(model, "_module", None)  # nnsight keeps it in _module
    if not isinstance(inner, PreTrainedModel):
        raise TypeError(
            f"expected a transformers model or an nnsight TransformersModel, got {type(model).__name__}: "
            "load one with utils.load_model(MODEL) (backend 'hf' or 'nnsight'); for a HookedTransformer "
            "use its own attributes (model.blocks, model.ln_final, model.unembed)")
    return inner


def layout(model: Any) -> Layout:
    """The attribute paths of ``model``'s parts, looked up by its ``config.model_type``."""
    model_type = unwrap(model).config.model_type
    if model_type not in LAYOUTS:
        raise NotImplementedError(
            f"unknown architecture {model_type!r}: the course supports {', '.join(LAYOUTS)}; "
            "add its module paths to utils.architecture.LAYOUTS")
    return LAYOUTS[model_type]


def model_type(model: Any) -> str:
    """The ``config.model_type`` of a supported model: ``"gpt2"``, ``"gpt_neox"`` or ``"llama"``."""
    layout(model)  # raises NotImplementedError naming the supported architectures
    return unwrap(model).config.model_type


def _get(model: Any, path: str) -> nn.Module:
    """``model.<path>``; on an nnsight model this is the module's envoy, usable inside ``trace``.

    A ``ValueError`` names the path and the architecture when the module is not there (a model
    whose part was removed or renamed), instead of an ``AttributeError`` deep inside a function.
    """
    module = model
    for part in path.split("."):
        if not hasattr(module, part):
            raise ValueError(
                f"this {unwrap(model).config.model_type} model has no module at {path}, where the course expects "
                f"it: load an unmodified model with utils.load_model(MODEL), or, if this architecture keeps it "
                "elsewhere, fix its path in utils.architecture.LAYOUTS")
        module = getattr(module, part)
    return module


def blocks(model: Any) -> nn.ModuleList:
    """The list of transformer blocks (``len(blocks(model)) == n_layers(model)``)."""
    return _get(model, layout(model).blocks)


def token_embedding(model: Any) -> nn.Embedding:
    """The token embedding; its ``weight`` is ``[d_vocab, d_model]``."""
    return _get(model, layout(model).token_embedding)


def final_norm(model: Any) -> nn.Module:
    """The norm applied to the residual stream before the unembedding (LayerNorm or RMSNorm)."""
    return _get(model, layout(model).final_norm)


def unembedding(model: Any) -> nn.Linear:
    """The unembedding (``lm_head``); its ``weight`` is ``[d_vocab, d_model]``."""
    path = layout(model).unembedding
    if not hasattr(unwrap(model), path):
        raise NotImplementedError(f"this model has no language-model head ({path}): load it with AutoModelForCausalLM, "
                                  "e.g. utils.load_model(MODEL)")
    return _get(model, path)


def n_layers(model: Any) -> int:
    """The number of transformer blocks."""
    return unwrap(model).config.num_hidden_layers


def d_model(model: Any) -> int:
    """The width of the residual stream."""
    return unwrap(model).config.hidden_size


def check_layer(model: Any, layer: int) -> int:
    """``layer`` as a non-negative index, or a ``ValueError`` that says which layers exist."""
    count = n_layers(model)
    if not isinstance(layer, int) or not -count <= layer < count:
        raise ValueError(f"layer {layer!r} does not exist: this model has {count} layers, "
                         f"numbered 0 to {count - 1} (negative numbers count from the end)")
    return layer % count


def block_part(model: Any, layer: int, paths: Mapping[str, str]) -> nn.Module:
    """The submodule of block ``layer`` at ``paths[model_type]``, e.g. ``{"gpt2": "attn.c_proj", ...}``."""
    return blocks(model)[check_layer(model, layer)].get_submodule(paths[model_type(model)])
