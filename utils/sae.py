"""Sparse autoencoders (SAEs): build one from scratch, train with sae-lens, evaluate, ship (chapter 6).

An SAE rewrites an activation ``x`` (``d_in`` wide) as a sparse, non-negative combination of
``d_sae > d_in`` learned directions, the *latents* or *features* (Bricken et al., 2023; Cunningham
et al., 2023)::

    f(x) = ReLU((x - b_dec) @ W_enc + b_enc)          # [d_sae], mostly zeros
    x̂    = f(x) @ W_dec + b_dec                        # W_dec rows have unit norm

    sae = SparseAutoencoder(d_in=128, d_sae=512)                 # from scratch (the exercises)
    log = train_sae(sae, store, steps=500, l1_coefficient=5.0)  # store: an ActivationStore or a tensor
    sae = load_shipped_sae("resid_post.2")                      # the course's, trained with sae-lens
    sae = load_published_sae("gpt2", "resid_post.2")            # a published sae-lens release, for a hub model
    metrics = evaluate_sae(model, sae, input_ids, mask)          # L0, explained variance, loss recovered

``sae`` is a ``SparseAutoencoder`` or any sae-lens ``SAE``: the evaluation functions only call
``encode`` / ``decode`` and read ``W_dec`` and the SAE's hook name (``SparseAutoencoder`` keeps the same
parameter names, so ``sae.to_sae_lens()`` and ``SparseAutoencoder.from_sae_lens(sae)`` are exact).

The shipped SAEs (``utils/assets/saes``) read the residual stream after every block and the MLP output
of block 2 of the course model, in sae-lens's on-disk format (``cfg.json`` + ``sae_weights.safetensors``
per site), with ``manifest.json`` (SHA-256 of every file) and ``evaluation.json`` (measured metrics,
and the L0 / loss-recovered frontier of a sparsity sweep). ``python -m utils.sae`` rebuilds them with
sae-lens's ``LanguageModelSAETrainingRunner`` (16 minutes on 2 shared CPU cores: five SAEs of
600 k tokens, three more for the frontier).

Choices, and why:

* **Decoder rows of unit norm.** Otherwise the L1 penalty is dodged by shrinking ``f`` and growing
  ``W_dec``. The from-scratch trainer renormalises the rows after every step and removes the gradient
  component along each row; sae-lens instead weights the L1 term by the rows' norms, and the shipped
  SAEs have their norms folded into the encoder (``fold_W_dec_norm``), so every shipped decoder row has
  norm 1 and a latent's activation is its contribution's length.
* **Dead latents are resampled** (Bricken et al., 2023): every ``resample_every`` steps, the latents that
  did not fire since the last resampling get new directions, those of inputs the SAE reconstructs worst,
  and their Adam state is reset. Simpler than ghost grads or aux-k, and a learner can watch the
  dead fraction drop at each resampling.
* **BOS positions are skipped** for training (the cached store drops them) and when the reconstruction
  is spliced into the model: the first position's residual is the same huge vector in every document.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import shutil
import tempfile
import time
import unittest.mock
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils import architecture
from utils.activation_store import ActivationStore
from utils.hooks import SITE_KINDS, TRANSFORMER_LENS_HOOKS, hooks, parse_site
from utils.models import (
    COURSE_MODEL_DIR, COURSE_MODEL_NAME, ModelNotAvailableError, file_sha256, hub_offline, load_model,
    load_tokenizer, verify_checkpoint, write_manifest,
)
from utils.progress import tqdm

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from sae_lens import SAE

SAE_DIR = Path(__file__).resolve().parent / "assets" / "saes"
EVALUATION_FILE = "evaluation.json"
CFG_FILE, WEIGHTS_FILE = "cfg.json", "sae_weights.safetensors"
REBUILD_HINT = ("restore them with `git checkout -- utils/assets/saes` or rebuild them with `python -m utils.sae` "
                "(about 16 minutes on 2 CPU cores)")
#: The sites the course ships an SAE for.
SHIPPED_SITES = ("resid_post.0", "resid_post.1", "resid_post.2", "resid_post.3", "mlp_out.2")
#: Seeds of the course-corpus documents the SAEs train on, and are evaluated on (the model trained on seed 0).
TRAIN_SEED, EVAL_SEED = 21, 22

#: Anything with an SAE's ``encode`` / ``decode`` / ``W_dec``: a :class:`SparseAutoencoder` or a sae-lens ``SAE``.
AnySAE = Union["SparseAutoencoder", "SAE"]


# --------------------------------------------------------------------------------------------
# Sites and hook names


def hook_name_of_site(site: str, n_layers: int | None = None) -> str:
    """The TransformerLens hook name sae-lens records for a course site: ``"resid_post.2"`` → ``"blocks.2.hook_resid_post"``."""
    kind, layer = parse_site(site, n_layers if n_layers is not None else 10**6)
    return f"blocks.{layer}.{TRANSFORMER_LENS_HOOKS[kind]}"


def site_of_hook_name(hook_name: str) -> str:
    """The course site of a TransformerLens hook name: ``"blocks.2.hook_mlp_out"`` → ``"mlp_out.2"``."""
    parts = str(hook_name).split(".", 2)
    kinds = {hook: kind for kind, hook in TRANSFORMER_LENS_HOOKS.items()}
    if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit() or parts[2] not in kinds:
        raise ValueError(f"hook name {hook_name!r} is not one of the course's sites: expected 'blocks.<layer>.<hook>' "
                         f"with hook one of {', '.join(kinds)}")
    return f"{kinds[parts[2]]}.{parts[1]}"


def sae_site(sae: AnySAE) -> str | None:
    """The site ``sae`` was trained on (from its hook name), or ``None`` when it does not record one."""
    hook_name = sae.hook_name if isinstance(sae, SparseAutoencoder) else sae.cfg.metadata.hook_name
    return None if hook_name is None else site_of_hook_name(hook_name)


def d_sae_of(sae: AnySAE) -> int:
    """The number of latents."""
    return sae.W_dec.shape[0]


# --------------------------------------------------------------------------------------------
# 1. An SAE from scratch


class SparseAutoencoder(nn.Module):
    """A ReLU (or TopK) sparse autoencoder with the parameter names and shapes of sae-lens's ``SAE``.

    Parameters: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]`` (rows of unit norm),
    ``b_dec [d_in]`` (subtracted before encoding, added after decoding). With ``k`` set, the activation
    keeps each row's ``k`` largest pre-activations (then ReLU) instead of a plain ReLU (Gao et al., 2024).
    ``hook_name`` records where its inputs come from (``"blocks.2.hook_resid_post"``).
    """

    def __init__(self, d_in: int, d_sae: int, *, k: int | None = None, hook_name: str | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        if k is not None and not 0 < k <= d_sae:
            raise ValueError(f"k={k} must be between 1 and d_sae={d_sae}")
        self.d_in, self.d_sae, self.k, self.hook_name = d_in, d_sae, k, hook_name
        generator = torch.Generator().manual_seed(seed)
        W_dec = F.normalize(torch.randn(d_sae, d_in, generator=generator), dim=-1)
        self.W_dec = nn.Parameter(W_dec)                       # [d_sae, d_in], unit rows
        self.W_enc = nn.Parameter(W_dec.T.clone())             # [d_in, d_sae], tied at initialisation
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def encode(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_sae"]:
        """The latents' activations: ``ReLU((x - b_dec) @ W_enc + b_enc)`` (TopK then ReLU with ``k``)."""
        return activation(self.pre_activations(x), self.k)

    def pre_activations(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_sae"]:
        """``(x - b_dec) @ W_enc + b_enc``, before the ReLU."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def decode(self, feats: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_in"]:
        """The reconstruction ``feats @ W_dec + b_dec``."""
        return feats @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_in"]:
        """The reconstruction of ``x`` (as sae-lens's ``SAE.forward``)."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Scale every decoder row back to unit norm (in place)."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_gradient_(self) -> None:
        """Drop the part of ``W_dec``'s gradient along each row: the step then turns rows without growing them."""
        if self.W_dec.grad is None:
            return
        self.W_dec.grad.copy_(remove_parallel_component(self.W_dec, self.W_dec.grad))

    def to_sae_lens(self) -> SAE:
        """The same SAE as a sae-lens ``StandardSAE`` (or ``TopKSAE`` with ``k``), same weights."""
        from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
        from sae_lens.saes.sae import SAEMetadata

        metadata = SAEMetadata(hook_name=self.hook_name)
        if self.k is None:
            sae = StandardSAE(StandardSAEConfig(d_in=self.d_in, d_sae=self.d_sae, metadata=metadata))
        else:
            sae = TopKSAE(TopKSAEConfig(d_in=self.d_in, d_sae=self.d_sae, k=self.k, metadata=metadata))
        sae.load_state_dict({name: p.detach().clone() for name, p in self.state_dict().items()})
        return sae

    @classmethod
    def from_sae_lens(cls, sae: SAE) -> SparseAutoencoder:
        """A ``SparseAutoencoder`` with the weights of a sae-lens standard or TopK ``SAE``."""
        architecture_name = sae.cfg.architecture()
        if architecture_name not in ("standard", "topk") or not sae.cfg.apply_b_dec_to_input \
                or sae.cfg.normalize_activations != "none":
            raise ValueError(f"only standard and topk sae-lens SAEs that subtract b_dec and do not normalise their inputs "
                             f"convert, this one is {architecture_name!r} (apply_b_dec_to_input="
                             f"{sae.cfg.apply_b_dec_to_input}, normalize_activations={sae.cfg.normalize_activations!r})")
        k = sae.cfg.k if architecture_name == "topk" else None
        out = cls(sae.cfg.d_in, sae.cfg.d_sae, k=k, hook_name=sae.cfg.metadata.hook_name)
        out.load_state_dict({name: sae.state_dict()[name].detach().float().clone() for name in out.state_dict()})
        return out


def activation(pre: Float[Tensor, "*batch d_sae"], k: int | None = None) -> Float[Tensor, "*batch d_sae"]:
    """ReLU, or with ``k``: keep each row's ``k`` largest pre-activations, ReLU them, zero the rest."""
    if k is None:
        return pre.relu()
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


def batch_topk(pre: Float[Tensor, "*batch d_sae"], k: float) -> Float[Tensor, "*batch d_sae"]:
    """Reference for bonus exercise 6.15, BatchTopK (Bussmann, Leask and Nanda, 2024): the ReLU of ``pre`` with only
    its ``int(k * rows)`` largest values over the whole batch kept and the rest 0, ``rows`` being the number of
    rows (every dimension but the last): ``k`` active latents per row on average, more on rows that need them.
    sae-lens's ``BatchTopK(k)`` computes the same (``tests/test_sae.py``)."""
    if k <= 0:
        raise ValueError(f"k is the mean number of active latents per row and must be positive, got {k}")
    acts = pre.relu()
    flat = acts.flatten()                                                    # [rows * d_sae]
    kept = flat.topk(min(int(k * acts.shape[:-1].numel()), len(flat)))
    return torch.zeros_like(flat).scatter(0, kept.indices, kept.values).reshape(acts.shape)


# --------------------------------------------------------------------------------------------
# Exercises 6.1-6.3: the forward pass, the loss, explained variance


def sae_forward(
    x: Float[Tensor, "batch d_in"], W_enc: Float[Tensor, "d_in d_sae"], b_enc: Float[Tensor, "d_sae"],
    W_dec: Float[Tensor, "d_sae d_in"], b_dec: Float[Tensor, "d_in"], k: int | None = None,
) -> tuple[Float[Tensor, "batch d_in"], Float[Tensor, "batch d_sae"]]:
    """Reference for Exercise 6.1: ``(reconstruction, latents)`` of an SAE with these weights.

    Subtract ``b_dec``, project with ``W_enc``, add ``b_enc``, apply ReLU (TopK then ReLU when ``k`` is
    given), decode with ``W_dec`` and add ``b_dec`` back.
    """
    pre = (x - b_dec) @ W_enc + b_enc                       # [batch, d_sae]
    feats = activation(pre, k)
    return feats @ W_dec + b_dec, feats


def sae_loss(
    x: Float[Tensor, "batch d_in"], reconstruction: Float[Tensor, "batch d_in"], feats: Float[Tensor, "batch d_sae"],
    W_dec: Float[Tensor, "d_sae d_in"], l1_coefficient: float,
) -> Float[Tensor, ""]:
    """Reference for Exercise 6.2: squared error plus ``l1_coefficient`` times the decoder-weighted L1 norm.

    Both terms are summed over their last dimension and averaged over the batch (as sae-lens does):
    ``mean_b ||x_b - x̂_b||² + λ · mean_b Σ_i f_bi ||W_dec[i]||``. Weighting by the decoder rows' norms keeps
    the penalty honest when the rows are not normalised.
    """
    squared_error = (reconstruction - x).pow(2).sum(-1).mean()
    sparsity = (feats * W_dec.norm(dim=-1)).sum(-1).mean()
    return squared_error + l1_coefficient * sparsity


def explained_variance(x: Float[Tensor, "batch d_in"], reconstruction: Float[Tensor, "batch d_in"]) -> Float[Tensor, ""]:
    """Reference for Exercise 6.3: ``1 - Σ ||x - x̂||² / Σ ||x - mean(x)||²`` over the batch.

    1 is a perfect reconstruction; 0 is no better than always answering the batch's mean vector.
    """
    residual = (x - reconstruction).pow(2).sum()
    total = (x - x.mean(0)).pow(2).sum()
    return 1 - residual / total


# --------------------------------------------------------------------------------------------
# Exercises 6.4-6.6: the decoder's gradient, a training step, JumpReLU


def remove_parallel_component(W_dec: Float[Tensor, "d_sae d_in"], grad: Float[Tensor, "d_sae d_in"]
                              ) -> Float[Tensor, "d_sae d_in"]:
    """Reference for Exercise 6.4: ``grad`` without its component along each row of ``W_dec`` (rows of any norm).

    ``g_i - (g_i · ŵ_i) ŵ_i`` with ``ŵ_i = W_dec[i] / ||W_dec[i]||``: what is left turns row ``i`` and, to first
    order, does not change its length.
    """
    unit = F.normalize(W_dec, dim=-1)                                            # [d_sae, d_in]
    along = einops.einsum(grad, unit, "sae d_in, sae d_in -> sae")                # [d_sae]
    return grad - einops.einsum(along, unit, "sae, sae d_in -> sae d_in")


def sae_training_step(sae: SparseAutoencoder, optimizer: torch.optim.Optimizer, x: Float[Tensor, "batch d_in"],
                      l1_coefficient: float
                      ) -> tuple[Float[Tensor, ""], Float[Tensor, "batch d_in"], Float[Tensor, "batch d_sae"]]:
    """Reference for Exercise 6.5: one optimizer step on :func:`sae_loss` that keeps the decoder's rows at unit norm.

    Encode and decode ``x``, take the loss, clear the old gradients and backpropagate, drop the gradient's part
    along each decoder row, step, then scale the rows back to unit norm. Returns ``(loss, reconstruction,
    latents)`` of the batch as it went in, detached.
    """
    latents = sae.encode(x)
    reconstruction = sae.decode(latents)
    loss = sae_loss(x, reconstruction, latents, sae.W_dec, l1_coefficient)
    optimizer.zero_grad()
    loss.backward()
    with torch.no_grad():
        sae.W_dec.grad.copy_(remove_parallel_component(sae.W_dec, sae.W_dec.grad))
    optimizer.step()
    sae.normalize_decoder_()
    return loss.detach(), reconstruction.detach(), latents.detach()


#: ``step(sae, optimizer, x, l1_coefficient) -> (loss, reconstruction, latents)``, as :func:`sae_training_step`.
TrainingStep = Callable[[SparseAutoencoder, torch.optim.Optimizer, Tensor, float], tuple[Tensor, Tensor, Tensor]]


def jumprelu_forward(
    x: Float[Tensor, "batch d_in"], W_enc: Float[Tensor, "d_in d_sae"], b_enc: Float[Tensor, "d_sae"],
    W_dec: Float[Tensor, "d_sae d_in"], b_dec: Float[Tensor, "d_in"], threshold: Float[Tensor, "d_sae"],
) -> tuple[Float[Tensor, "batch d_in"], Float[Tensor, "batch d_sae"]]:
    """Reference for Exercise 6.6: ``(reconstruction, latents)`` of a JumpReLU SAE (Rajamanoharan et al., 2024).

    A latent passes its ReLU'd pre-activation only where the pre-activation is above its own ``threshold``, as
    sae-lens's ``JumpReLUSAE`` does: ``ReLU(pre) · [pre > θ]``.
    """
    pre = (x - b_dec) @ W_enc + b_enc                                             # [batch, d_sae]
    latents = pre.relu() * (pre > threshold)
    return latents @ W_dec + b_dec, latents


# --------------------------------------------------------------------------------------------
# 2. Training from scratch


@dataclass
class TrainingLog:
    """What :func:`train_sae` measured at each step (lists of floats), and the resamplings it did."""

    loss: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    l0: list[float] = field(default_factory=list)
    explained_variance: list[float] = field(default_factory=list)
    resampled: list[tuple[int, int]] = field(default_factory=list)   # (step, latents resampled)
    seconds: float = 0.0


def batches_from(data: ActivationStore | Tensor | Iterable[Tensor], batch_size: int, seed: int = 0
                 ) -> Iterator[Float[Tensor, "batch d_in"]]:
    """An endless stream of shuffled ``[batch_size, d_in]`` batches from a store, a tensor or an iterable of batches."""
    epoch = 0
    while True:
        if isinstance(data, ActivationStore):
            source: Iterable[Tensor] = data.iter_batches(batch_size, shuffle=True, seed=seed + epoch, drop_last=True)
        elif isinstance(data, Tensor):
            if data.ndim != 2 or len(data) < batch_size:
                raise ValueError(f"activations must be [rows, d_in] with at least batch_size={batch_size} rows, "
                                 f"got shape {tuple(data.shape)}")
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + epoch))
            source = data[order[: len(data) // batch_size * batch_size]].split(batch_size)
        else:
            source = data
        empty = True
        for batch in source:
            empty = False
            yield batch.float()
        if empty:
            raise ValueError("the activations gave no batch: pass more rows than batch_size")
        epoch += 1


@torch.no_grad()
def resample_dead_latents(sae: SparseAutoencoder, x: Float[Tensor, "batch d_in"], dead: Tensor,
                          optimizer: torch.optim.Adam) -> int:
    """Give each ``dead`` latent the direction of an input ``sae`` reconstructs badly; return how many.

    Inputs are drawn with probability ∝ their squared error (Bricken et al., 2023). The decoder row becomes
    the unit error direction, the encoder column the same direction scaled to 0.2 × the mean alive encoder
    norm, the bias 0; the Adam moments of those entries are reset so that old momentum does not undo it.
    """
    indices = dead.nonzero().squeeze(-1)
    if len(indices) == 0:
        return 0
    error = x - sae(x)                                               # [batch, d_in]
    weights = error.pow(2).sum(-1)
    picks = torch.multinomial(weights + 1e-12, len(indices), replacement=len(indices) > len(x))
    directions = F.normalize(error[picks], dim=-1)                   # [n_dead, d_in]
    alive_norm = sae.W_enc[:, ~dead].norm(dim=0).mean() if (~dead).any() else torch.tensor(1.0)
    sae.W_dec[indices] = directions
    sae.W_enc[:, indices] = directions.T * 0.2 * alive_norm
    sae.b_enc[indices] = 0.0
    for param, index in ((sae.W_dec, (indices,)), (sae.W_enc, (slice(None), indices)), (sae.b_enc, (indices,))):
        for moment in optimizer.state.get(param, {}).values():
            if isinstance(moment, Tensor) and moment.shape == param.shape:
                moment[index] = 0.0
    return len(indices)


def train_sae(
    sae: SparseAutoencoder,
    data: ActivationStore | Tensor | Iterable[Tensor],
    steps: int,
    *,
    lr: float = 1e-3,
    l1_coefficient: float = 5.0,
    batch_size: int = 1024,
    resample_every: int | None = 250,
    seed: int = 0,
    progress: bool = True,
    on_step: Callable[[int, SparseAutoencoder], None] | None = None,
    step_fn: TrainingStep = sae_training_step,
) -> TrainingLog:
    """Train ``sae`` with Adam for ``steps`` batches of activations; return the :class:`TrainingLog`.

    The loss is :func:`sae_loss` (for a TopK SAE, ``k`` sets the sparsity: ``l1_coefficient`` is ignored).
    ``b_dec`` starts at the mean of the first batch. After every step the decoder rows are renormalised;
    every ``resample_every`` steps the latents that did not fire since the last check are resampled
    (:func:`resample_dead_latents`), except in the last fifth of training so that it can settle.
    ``on_step(step, sae)``, when given, runs after every step (to plot or evaluate as training goes);
    ``step_fn`` takes each step (:func:`sae_training_step`; the lab passes the learner's own).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    torch.manual_seed(seed)
    stream = batches_from(data, batch_size, seed)
    first = next(stream)
    if first.shape[-1] != sae.d_in:
        raise ValueError(f"the activations are {first.shape[-1]} wide but the SAE's d_in is {sae.d_in}: "
                         f"build SparseAutoencoder(d_in={first.shape[-1]}, ...)")
    with torch.no_grad():
        sae.b_dec.copy_(first.mean(0))
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    l1 = 0.0 if sae.k is not None else l1_coefficient
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    log, start = TrainingLog(), time.perf_counter()
    bar = tqdm(range(steps), desc="training SAE", disable=not progress)
    for step in bar:
        x = first if step == 0 else next(stream)
        loss, reconstruction, feats = step_fn(sae, optimizer, x, l1)
        with torch.no_grad():
            fired |= (feats > 0).any(0)
            log.loss.append(loss.item())
            log.mse.append((reconstruction - x).pow(2).sum(-1).mean().item())
            log.l0.append((feats > 0).float().sum(-1).mean().item())
            log.explained_variance.append(explained_variance(x, reconstruction).item())
        if resample_every and (step + 1) % resample_every == 0:
            if step < 0.8 * steps:
                n = resample_dead_latents(sae, x, ~fired, optimizer)
                if n:
                    log.resampled.append((step + 1, n))
            fired.zero_()
        if on_step is not None:
            on_step(step + 1, sae)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{log.loss[-1]:.3g}", l0=f"{log.l0[-1]:.1f}", ev=f"{log.explained_variance[-1]:.3f}")
    log.seconds = time.perf_counter() - start
    return log


# --------------------------------------------------------------------------------------------
# 3. Loading, and what an SAE may be applied to


def load_sae(path: str | Path) -> SAE:
    """A sae-lens ``SAE`` from a directory in sae-lens's format (``cfg.json`` + ``sae_weights.safetensors``).

    Raises ``ValueError`` naming the broken file (missing, not JSON, not safetensors, weights of the wrong
    shape) rather than sae-lens's low-level error.
    """
    from safetensors import SafetensorError
    from sae_lens import SAE

    path = Path(path)
    for name in (CFG_FILE, WEIGHTS_FILE):
        if not (path / name).exists():
            raise ValueError(f"{path / name} is missing: an SAE directory holds {CFG_FILE} and {WEIGHTS_FILE} "
                             "(written by sae.save_model(path))")
    try:
        json.loads((path / CFG_FILE).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path / CFG_FILE} is not valid JSON ({error}): the SAE's config is corrupted") from error
    try:
        sae = SAE.load_from_disk(str(path))
    except (SafetensorError, RuntimeError, OSError) as error:
        raise ValueError(f"{path / WEIGHTS_FILE} could not be read as the SAE's weights ({type(error).__name__}: "
                         f"{str(error)[:200]}): the file is corrupted or truncated; restore or retrain it") from error
    return sae.eval().requires_grad_(False)


def shipped_sae_path(site: str) -> Path:
    """The directory of the shipped SAE for ``site`` (one of :data:`SHIPPED_SITES`)."""
    if site not in SHIPPED_SITES:
        raise ValueError(f"the course ships no SAE for site {site!r}: it ships {', '.join(SHIPPED_SITES)}; "
                         "train one for another site with train_with_sae_lens(...)")
    return SAE_DIR / site


def load_shipped_sae(site: str = "resid_post.2", directory: Path = SAE_DIR) -> SAE:
    """The course's SAE for ``site`` (e.g. ``"resid_post.2"``, ``"mlp_out.2"``), its files checked against the manifest."""
    shipped_sae_path(site)
    verify_checkpoint(directory, hint=REBUILD_HINT)
    return load_sae(Path(directory) / site)


@dataclass(frozen=True)
class PublishedRelease:
    """A sae-lens release of residual-stream SAEs for one hub model.

    ``release`` is its name in sae-lens's ``pretrained_saes.yaml``; ``layers`` the model's depth; ``centred`` says the
    SAEs were trained on TransformerLens's residual stream with ``center_writing_weights``, which is the Hugging Face
    model's residual minus its mean over ``d_model``.
    """

    release: str
    layers: int
    centred: bool

    def sae_id(self, site: str) -> str:
        """The release's SAE id for a course site: its ``hook_resid_pre`` SAEs read ``resid_post.{layer - 1}``,
        and the last block's output has its own ``hook_resid_post`` SAE."""
        kind, layer = parse_site(site, self.layers)
        if kind == "resid_pre":
            return f"blocks.{layer}.hook_resid_pre"
        if kind == "resid_post":
            return f"blocks.{layer + 1}.hook_resid_pre" if layer + 1 < self.layers else f"blocks.{layer}.hook_resid_post"
        raise ValueError(f"the {self.release} release holds residual-stream SAEs only, none for {site!r}: use "
                         f"resid_pre.N or resid_post.N, or train one with train_with_sae_lens(...)")


#: The published SAEs :func:`load_published_sae` knows, by the hub name that ``MODEL`` takes.
PUBLISHED_SAES: dict[str, PublishedRelease] = {
    "gpt2": PublishedRelease("gpt2-small-res-jb", layers=12, centred=True),        # Bloom (2024), 24,576 latents
    "openai-community/gpt2": PublishedRelease("gpt2-small-res-jb", layers=12, centred=True),
}


def fold_input_centring(sae: SparseAutoencoder) -> SparseAutoencoder:
    """``sae``, trained on inputs centred over ``d_in``, made to read uncentred ones (in place; returned).

    With ``P = I - 11ᵀ/d_in`` the centring, the trained encoder computes ``(P x - b_dec) @ W_enc + b_enc``.
    That equals ``(x - b_dec) @ (P W_enc) + b_enc - mean(b_dec) 1ᵀ W_enc``, an SAE of the same form, so the new
    encoder is ``P W_enc`` and its bias absorbs the mean of ``b_dec``. The decoder is unchanged: it reconstructs
    the centred activation, which a GPT-2 residual stream cannot tell apart from the uncentred one (every reader
    of the stream is a LayerNorm, which subtracts the mean first), so splicing it in is exact in effect; only the
    explained variance counts the missing mean as error.
    """
    with torch.no_grad():
        column_sums = sae.W_enc.sum(dim=0)                                          # [d_sae]: 1ᵀ W_enc
        sae.b_enc -= sae.b_dec.mean() * column_sums
        sae.W_enc -= sae.W_enc.mean(dim=0, keepdim=True)                            # P W_enc
    return sae


def load_published_sae(model_name: str, site: str, directory: str | Path | None = None) -> SparseAutoencoder:
    """The published sae-lens SAE of hub model ``model_name`` (a key of :data:`PUBLISHED_SAES`) for ``site``.

    Read from ``directory`` when given (the SAE's folder in sae-lens's format, ``cfg.json`` and
    ``sae_weights.safetensors``, as the release stores it), otherwise downloaded with ``SAE.from_pretrained``
    (once; then read from the hub cache). The result is a :class:`SparseAutoencoder` on the course's site
    (``resid_post.2`` reads what the release calls ``blocks.3.hook_resid_pre``), with decoder rows of unit
    norm (``fold_W_dec_norm``, as the shipped SAEs) and, for a release trained on a centred stream, the
    centring folded into its encoder (:func:`fold_input_centring`), so it reads the Hugging Face model's stream.

    Raises ``ValueError`` for a model without a release or a site the release does not cover, and
    :class:`~utils.models.ModelNotAvailableError` when the SAE cannot be downloaded (offline, or no network).
    """
    if model_name not in PUBLISHED_SAES:
        raise ValueError(f"no published SAEs are known for {model_name!r}: the course knows "
                         f"{', '.join(sorted(PUBLISHED_SAES))}; train one with train_with_sae_lens(...)")
    release = PUBLISHED_SAES[model_name]
    sae_id = release.sae_id(site)
    if directory is not None:
        sae = load_sae(directory)
    else:
        sae = _download_published_sae(release.release, sae_id)
    if sae.cfg.metadata.hook_name not in (None, sae_id):
        raise ValueError(f"the SAE in {directory} reads {sae.cfg.metadata.hook_name}, but {site} is {sae_id} of the "
                         f"{release.release} release: give the folder of {sae_id}")
    sae.fold_W_dec_norm()
    converted = SparseAutoencoder.from_sae_lens(sae)
    converted.hook_name = hook_name_of_site(site, release.layers)
    return fold_input_centring(converted) if release.centred else converted


def published_saes(model_name: str, sites: Sequence[str]) -> dict[str, SparseAutoencoder] | None:
    """:func:`load_published_sae` for every site of ``sites``, or ``None`` (saying why) when ``model_name`` has no
    published release or it cannot be downloaded here: the notebooks then train small SAEs of their own."""
    if model_name not in PUBLISHED_SAES:
        return None
    release = PUBLISHED_SAES[model_name].release
    try:
        saes = {site: load_published_sae(model_name, site) for site in sites}
    except ModelNotAvailableError as reason:
        print(f"{reason}. Training small SAEs here instead.")
        return None
    print(f"loaded the {release} SAEs of {model_name} at {', '.join(sites)}")
    return saes


def _download_published_sae(release: str, sae_id: str) -> SAE:
    from sae_lens import SAE

    try:
        return SAE.from_pretrained(release, sae_id).eval().requires_grad_(False)
    except OSError as error:
        why = ("it is not in the hub cache and HF_HUB_OFFLINE is set" if hub_offline()
               else f"{type(error).__name__}; check the network")
        raise ModelNotAvailableError(f"the {release} SAE {sae_id} could not be read ({why}): download it once "
                                     "online, or pass the SAE's local folder as directory=") from error


def shipped_evaluation(directory: Path = SAE_DIR) -> dict[str, Any]:
    """The metrics measured when the shipped SAEs were built (``evaluation.json``): per site, and the frontier sweep."""
    verify_checkpoint(directory, hint=REBUILD_HINT)
    return json.loads((Path(directory) / EVALUATION_FILE).read_text())


def check_sae_fits(sae: AnySAE, model: PreTrainedModel, site: str) -> str:
    """Raise ``ValueError`` unless ``sae`` reads ``site`` of a model as wide as ``model``; return the site, normalised.

    The error names the SAE's hook and width and the model's, and how to get the right SAE.
    """
    kind, layer = parse_site(site, architecture.n_layers(model))
    site = f"{kind}.{layer}"
    if kind == "pattern":
        raise ValueError(f"site {site!r}: an SAE reads an activation of width d_model, not an attention pattern; "
                         f"use one of {', '.join(k for k in SITE_KINDS if k != 'pattern')}")
    trained_on, d_in, width = sae_site(sae), sae.W_dec.shape[1], architecture.d_model(model)
    if d_in != width:
        hook = f"{trained_on} ({hook_name_of_site(trained_on)})" if trained_on else "an unknown hook"
        raise ValueError(f"this SAE reads {d_in}-wide activations (trained on {hook}), but {site} "
                         f"({hook_name_of_site(site)}) of this model is {width} wide: use an SAE trained on this model")
    if trained_on is not None and trained_on != site:
        raise ValueError(f"this SAE was trained on {trained_on} ({hook_name_of_site(trained_on)}), not on {site} "
                         f"({hook_name_of_site(site)}): load the SAE for {site}, e.g. load_shipped_sae({site!r})")
    return site


def check_feature_index(sae: AnySAE, feature: int) -> int:
    """``feature`` as an index into the latents, or a ``ValueError`` saying how many there are."""
    n = d_sae_of(sae)
    if isinstance(feature, Tensor) and feature.numel() == 1:
        feature = int(feature.item())
    if isinstance(feature, bool) or not isinstance(feature, int) or not -n <= feature < n:
        raise ValueError(f"feature {feature!r} does not exist: this SAE has {n} latents, numbered 0 to {n - 1}")
    return feature % n


# --------------------------------------------------------------------------------------------
# 4. Evaluation


def real_positions(mask: Int[Tensor, "batch pos"]) -> Tensor:
    """The positions an SAE reads: real tokens (``mask`` 1) except each row's first, the BOS token."""
    keep = mask.bool().clone()
    keep[:, 0] = False
    return keep


@torch.no_grad()
def site_activations(model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"],
                     site: str) -> Float[Tensor, "batch pos d_model"]:
    """The activation at ``site`` on right-padded documents (BOS first, ``mask`` 1 on real tokens)."""
    from utils.hooks import capture

    return capture(model, input_ids, [site], attention_mask=mask)[site]


@torch.no_grad()
def encode_documents(model: PreTrainedModel, sae: AnySAE, input_ids: Int[Tensor, "batch pos"],
                     mask: Int[Tensor, "batch pos"], site: str | None = None) -> Float[Tensor, "batch pos d_sae"]:
    """The SAE's latents at every position of right-padded documents; zero at BOS and padding."""
    site = check_sae_fits(sae, model, site or sae_site(sae) or "")
    acts = site_activations(model, input_ids, mask, site)
    return sae.encode(acts) * real_positions(mask).unsqueeze(-1)


def next_token_loss(logits: Float[Tensor, "batch pos vocab"], input_ids: Int[Tensor, "batch pos"],
                    mask: Int[Tensor, "batch pos"]) -> float:
    """Mean cross-entropy of predicting each real token from the ones before it."""
    losses = F.cross_entropy(einops.rearrange(logits[:, :-1], "b p v -> (b p) v"), input_ids[:, 1:].flatten(),
                             reduction="none")
    weights = mask[:, 1:].flatten().float()
    return ((losses * weights).sum() / weights.sum()).item()


@torch.no_grad()
def loss_with_replacement(model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"],
                          site: str, replace: Callable[[Tensor], Tensor] | None) -> float:
    """The model's next-token loss when ``site``'s activation ``x`` is replaced by ``replace(x)`` at every position
    but BOS and padding (``None``: the clean loss)."""
    if replace is None:
        return next_token_loss(model(input_ids, attention_mask=mask).logits, input_ids, mask)
    keep = real_positions(mask).unsqueeze(-1)

    def edit(x: Tensor) -> Tensor:
        return torch.where(keep, replace(x).to(x.dtype), x)

    with hooks(model, {site: edit}):
        return next_token_loss(model(input_ids, attention_mask=mask).logits, input_ids, mask)


def sparsity_metrics(latents: Float[Tensor, "tokens d_sae"], dense_threshold: float = 0.1) -> tuple[float, float, float]:
    """Reference for Exercise 6.7: ``(l0, dead_fraction, dense_fraction)`` of the latents on a set of tokens.

    ``l0`` is the mean number of active (positive) latents per token; a latent is dead when it is active on
    no token, dense when it is active on more than ``dense_threshold`` of them.
    """
    active = latents > 0                                                          # [tokens, d_sae]
    frequency = active.float().mean(0)                                            # [d_sae]
    return (float(active.float().sum(-1).mean()), float((frequency == 0).float().mean()),
            float((frequency > dense_threshold).float().mean()))


@torch.no_grad()
def spliced_loss(model: PreTrainedModel, sae: AnySAE, input_ids: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"],
                 site: str) -> float:
    """Reference for Exercise 6.8: the next-token loss with ``site``'s activation replaced by its SAE reconstruction.

    The reconstruction replaces the activation at every real position but BOS (:func:`real_positions`; the SAE
    never saw BOS, whose activation is an outlier); the loss is :func:`next_token_loss` over the real tokens.
    """
    keep = real_positions(mask).unsqueeze(-1)                                     # [batch, pos, 1]

    def splice(activation: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        return torch.where(keep, sae.decode(sae.encode(activation)).to(activation.dtype), activation)

    with hooks(model, {site: splice}):
        logits = model(input_ids, attention_mask=mask).logits
    return next_token_loss(logits, input_ids, mask)


def loss_recovered(clean: float, spliced: float, ablated: float) -> float:
    """``(ablated - spliced) / (ablated - clean)``: 1 when splicing the SAE in costs nothing, 0 when it is as bad as ablating."""
    return (ablated - spliced) / (ablated - clean)


@dataclass(frozen=True)
class SAEMetrics:
    """How well an SAE does at its site: sparsity, reconstruction, and the model's loss with it spliced in."""

    site: str
    l0: float                      # mean number of active latents per token
    dead_fraction: float           # latents that never fired on the evaluation tokens
    dense_fraction: float          # latents that fire on more than `dense_threshold` of the tokens
    explained_variance: float
    loss_clean: float
    loss_spliced: float
    loss_zero_ablated: float
    loss_mean_ablated: float
    loss_recovered: float          # against zero ablation
    loss_recovered_vs_mean: float  # against mean ablation, a harder reference
    n_tokens: int


@torch.no_grad()
def evaluate_sae(model: PreTrainedModel, sae: AnySAE, input_ids: Int[Tensor, "batch pos"],
                 mask: Int[Tensor, "batch pos"], site: str | None = None, dense_threshold: float = 0.1) -> SAEMetrics:
    """Every metric of :class:`SAEMetrics` on right-padded documents (BOS first; see ``utils.logit_lens.corpus_batch``)."""
    site = check_sae_fits(sae, model, site or sae_site(sae) or "")
    keep = real_positions(mask)
    x = site_activations(model, input_ids, mask, site)[keep]          # [tokens, d_model]
    feats = sae.encode(x)
    l0, dead_fraction, dense_fraction = sparsity_metrics(feats, dense_threshold)
    mean = x.mean(0)
    clean = loss_with_replacement(model, input_ids, mask, site, None)
    spliced = spliced_loss(model, sae, input_ids, mask, site)
    zero = loss_with_replacement(model, input_ids, mask, site, torch.zeros_like)
    mean_ablated = loss_with_replacement(model, input_ids, mask, site, lambda a: mean.expand_as(a))
    return SAEMetrics(
        site=site, l0=l0, dead_fraction=dead_fraction, dense_fraction=dense_fraction,
        explained_variance=float(explained_variance(x, sae.decode(feats))), loss_clean=clean, loss_spliced=spliced,
        loss_zero_ablated=zero, loss_mean_ablated=mean_ablated, loss_recovered=loss_recovered(clean, spliced, zero),
        loss_recovered_vs_mean=loss_recovered(clean, spliced, mean_ablated), n_tokens=int(keep.sum()))


def evaluation_batch(tokenizer: PreTrainedTokenizerBase, n_documents: int = 200, seed: int = EVAL_SEED,
                     max_length: int = 128) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Held-out course documents, one per row after BOS, right-padded: ``(input_ids, mask)``."""
    from utils.logit_lens import corpus_batch

    return corpus_batch(tokenizer, n_documents, seed=seed, max_length=max_length)


def plot_frontier(points: Sequence[dict[str, float]], title: str = "Sparsity vs fidelity") -> go.Figure:
    """A plotly scatter of L0 (log x) against loss recovered, one point per SAE, labelled by its sparsity setting.

    ``points`` are dicts with ``l0``, ``loss_recovered`` and a ``label`` (e.g. ``"λ=5"``), as in
    ``shipped_evaluation()["frontier"]``.
    """
    import plotly.graph_objects as go

    points = sorted(points, key=lambda p: p["l0"])
    figure = go.Figure(go.Scatter(
        x=[p["l0"] for p in points], y=[p["loss_recovered"] for p in points], mode="lines+markers+text",
        text=[p.get("label", "") for p in points], textposition="top center",
        customdata=[[p.get("explained_variance", float("nan"))] for p in points],
        hovertemplate="L0 %{x:.1f}<br>loss recovered %{y:.3f}<br>explained variance %{customdata[0]:.3f}<extra></extra>"))
    figure.update_layout(title=title, xaxis_title="L0 (active latents per token, log scale)", xaxis_type="log",
                         yaxis_title="cross-entropy loss recovered", template="plotly_white", height=400)
    return figure


# --------------------------------------------------------------------------------------------
# 5. Training with sae-lens


def document_rows(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], context_size: int
                  ) -> Int[Tensor, "n context_size"]:
    """One document per row: BOS, its tokens (cut at ``context_size``), then BOS-token padding.

    The course model was trained with every document attending only to itself from position 0; sae-lens
    runs a HookedTransformer without attention masks, so packing several documents in a row would show it
    activations it never computes in use. One document per row, padded at the end, keeps every real
    position exact; the BOS and padding rows are then dropped by ``exclude_special_tokens=[bos]``.
    """
    bos = tokenizer.bos_token_id
    rows = []
    for text in texts:
        ids = [bos, *tokenizer(text)["input_ids"]][:context_size]
        rows.append(ids + [bos] * (context_size - len(ids)))
    return torch.tensor(rows)


#: What sae-lens warns of when it trains on a small in-memory data set, by design here: it makes
#: several passes over the documents, and copies the tensors it batches.
_EXPECTED_SAE_LENS_WARNINGS: tuple[str, ...] = (
    "The training dataset contains fewer samples", "All samples in the training dataset have been exhausted",
    "To copy construct from a tensor",
)
#: What sae-lens's runner logs (on stderr) because the course passes its in-memory dataset and model:
#: that is the offline way on purpose, so the reminder that the run is not reproducible from the
#: configuration alone is noise (it is reproducible from the arguments of :func:`train_with_sae_lens`).
_EXPECTED_SAE_LENS_LOG = ("You just passed in a dataset which will override", "You just passed in a model which will override")


#: The sae-lens modules whose ``tqdm.auto`` bars a training run shows (the trainer, the norm estimate).
SAE_LENS_BAR_MODULES = ("sae_lens.training.sae_trainer", "sae_lens.training.activation_scaler")


@contextlib.contextmanager
def _course_progress_bars(module_names: Sequence[str]) -> Iterator[None]:
    """While the block runs, the named modules draw their bars with :mod:`utils.progress`'s tqdm:
    sae-lens's own ``tqdm.auto`` bars go to stderr in a kernel without ipywidgets (the book's pages
    would show them as stderr, one line per redraw), and sae-lens has no option to turn them off."""
    with contextlib.ExitStack() as stack:
        for name in module_names:
            stack.enter_context(unittest.mock.patch.object(importlib.import_module(name), "tqdm", tqdm))
        yield


class _DropMessages(logging.Filter):
    """A logging filter that drops the records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: Sequence[str]) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def train_with_sae_lens(
    tl_model: Any, tokenizer: PreTrainedTokenizerBase, site: str, *, d_sae: int = 512, l1_coefficient: float = 4.0,
    training_tokens: int = 600_000, n_documents: int = 30_000, seed: int = TRAIN_SEED, lr: float = 2e-3,
    batch_size: int = 1024, context_size: int = 96, output_dir: str | Path | None = None,
) -> SAE:
    """Train a standard (ReLU + L1) SAE at ``site`` with sae-lens's ``LanguageModelSAETrainingRunner``, offline.

    ``tl_model`` is a ``HookedTransformer`` (``load_model(name, backend="transformer_lens")``); the dataset is an
    in-memory ``datasets.Dataset`` of course documents (:func:`document_rows`), wandb is off. Returns the
    inference ``SAE`` with its decoder norms folded into the encoder (unit decoder rows), saved to
    ``output_dir`` when given.
    """
    from datasets import Dataset
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig, SAE
    from sae_lens import StandardTrainingSAEConfig
    from utils.world import generate_corpus

    hook_name = hook_name_of_site(site, tl_model.cfg.n_layers)
    texts = [doc.text for doc in generate_corpus(n_documents, seed=seed)]
    dataset = Dataset.from_dict({"tokens": document_rows(tokenizer, texts, context_size).tolist()})
    cfg = LanguageModelSAERunnerConfig(
        sae=StandardTrainingSAEConfig(d_in=tl_model.cfg.d_model, d_sae=d_sae, l1_coefficient=l1_coefficient,
                                      l1_warm_up_steps=training_tokens // batch_size // 10,
                                      normalize_activations="expected_average_only_in"),
        n_batches_for_norm_estimate=20,
        model_name=COURSE_MODEL_NAME, hook_name=hook_name, dataset_path="utils.world.generate_corpus",
        is_dataset_tokenized=True, streaming=False, context_size=context_size, prepend_bos=False,
        exclude_special_tokens=[tokenizer.bos_token_id], model_from_pretrained_kwargs={},
        training_tokens=training_tokens, train_batch_size_tokens=batch_size, store_batch_size_prompts=32,
        n_batches_in_buffer=max(64, 4 * batch_size // context_size), lr=lr, lr_warm_up_steps=20,
        lr_scheduler_name="constant", device=str(next(tl_model.parameters()).device), seed=seed,
        logger=LoggingConfig(log_to_wandb=False), checkpoint_path=None, n_eval_batches=1, verbose=False)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        for message in _EXPECTED_SAE_LENS_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        cfg.output_path = tmp
        sae_lens_log, quiet = logging.getLogger("sae_lens"), _DropMessages(_EXPECTED_SAE_LENS_LOG)
        sae_lens_log.addFilter(quiet)
        try:
            with _course_progress_bars(SAE_LENS_BAR_MODULES):
                LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=tl_model).run()
        finally:
            sae_lens_log.removeFilter(quiet)
        sae = SAE.load_from_disk(tmp, fold_W_dec_norm=True)
    if output_dir is not None:
        sae.save_model(output_dir)
    return sae.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------
# Rebuilding the shipped SAEs: python -m utils.sae


def _metrics_json(metrics: SAEMetrics) -> dict[str, Any]:
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in asdict(metrics).items()}


def build_shipped_saes(out: Path = SAE_DIR, *, l1_coefficient: float = 4.0, d_sae: int = 512,
                       training_tokens: int = 600_000, frontier_site: str = "resid_post.2",
                       frontier_l1: Sequence[float] = (1.5, 8.0, 16.0),
                       sites: Sequence[str] = SHIPPED_SITES) -> dict[str, Any]:
    """Train the course's SAEs with sae-lens, evaluate them, and write them with their manifest to ``out``."""
    hf_model, tokenizer = load_model(COURSE_MODEL_NAME), load_tokenizer(COURSE_MODEL_NAME)
    tl_model = load_model(COURSE_MODEL_NAME, backend="transformer_lens")
    input_ids, mask = evaluation_batch(tokenizer)
    staging = Path(tempfile.mkdtemp(prefix="saes-", dir=Path(out).parent))
    evaluation: dict[str, Any] = {"sites": {}, "frontier": []}
    try:
        for site in sites:
            start = time.perf_counter()
            sae = train_with_sae_lens(tl_model, tokenizer, site, d_sae=d_sae, l1_coefficient=l1_coefficient,
                                      training_tokens=training_tokens, output_dir=staging / site)
            seconds = time.perf_counter() - start
            metrics = evaluate_sae(hf_model, sae, input_ids, mask)
            evaluation["sites"][site] = {**_metrics_json(metrics), "train_seconds": round(seconds, 1)}
            print(f"{site}: {evaluation['sites'][site]}", flush=True)
        shipped = evaluation["sites"].get(frontier_site)
        if shipped is not None:
            evaluation["frontier"].append({"label": f"λ={l1_coefficient:g} (shipped)", "l1_coefficient": l1_coefficient,
                                           **{k: v for k, v in shipped.items() if k != "train_seconds"}})
        for l1 in frontier_l1:
            sae = train_with_sae_lens(tl_model, tokenizer, frontier_site, d_sae=d_sae, l1_coefficient=l1,
                                      training_tokens=training_tokens)
            point = _metrics_json(evaluate_sae(hf_model, sae, input_ids, mask))
            evaluation["frontier"].append({"label": f"λ={l1:g}", "l1_coefficient": l1, **point})
            print(f"frontier λ={l1}: {point}", flush=True)
        (staging / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=1) + "\n")
        files = [EVALUATION_FILE] + [f"{site}/{name}" for site in sites for name in (WEIGHTS_FILE, CFG_FILE)]
        write_manifest(staging, files=files, command="python -m utils.sae", sites=list(sites), d_sae=d_sae,
                       l1_coefficient=l1_coefficient, training_tokens=training_tokens, train_seed=TRAIN_SEED,
                       eval_seed=EVAL_SEED, torch_threads=torch.get_num_threads(),
                       model_sha256=file_sha256(COURSE_MODEL_DIR / "model.safetensors"))
        staging.chmod(0o755)   # mkdtemp makes it private
        if Path(out).exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return evaluation


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m utils.sae``: train, evaluate and write the course's SAEs to utils/assets/saes."""
    parser = argparse.ArgumentParser(prog="python -m utils.sae", description=main.__doc__)
    parser.add_argument("--out", type=Path, default=SAE_DIR)
    parser.add_argument("--l1", type=float, default=4.0, help="L1 coefficient of the shipped SAEs")
    parser.add_argument("--tokens", type=int, default=600_000, help="training tokens per SAE")
    parser.add_argument("--sites", nargs="+", default=list(SHIPPED_SITES))
    parser.add_argument("--frontier-l1", type=float, nargs="*", default=[1.5, 8.0, 16.0])
    args = parser.parse_args(argv)
    start = time.perf_counter()
    build_shipped_saes(args.out, l1_coefficient=args.l1, training_tokens=args.tokens, sites=args.sites,
                       frontier_l1=args.frontier_l1)
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
