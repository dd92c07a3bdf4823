"""The tuned lens (Belrose et al., 2023): one learned affine map per layer before the logit lens (chapter 4).

The logit lens assumes every layer writes in the basis the final layer reads. The tuned lens relaxes
that: for each layer ``l`` of the residual stack (but the last) it learns a *translator*
``A_l x + b_l``, initialised at the identity, trained so that ``logit_lens(A_l x + b_l)`` matches the
model's final distribution (minimising ``KL(final || lens)`` on course text)::

    lens = load_tuned_lens(model)                              # the shipped one, for the course model
    lens = train_tuned_lens(model, tokenizer, steps=100)       # any other model (a hub MODEL)
    logits = lens(model, residual_stack(model, input_ids))     # [n_layers + 1, batch, pos, vocab]

``python -m utils.tuned_lens`` retrains the shipped lens of the course model
(``utils/assets/tuned_lens``: weights, and a manifest with the training run and the SHA-256 of the
course model it was trained on).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils import architecture
from utils.logit_lens import corpus_batch, kl_to_final, logit_lens, residual_stack
from utils.models import (
    COURSE_MODEL_DIR, COURSE_MODEL_NAME, file_sha256, frozen, load_model, load_tokenizer, verify_checkpoint,
    write_manifest,
)

TUNED_LENS_DIR = Path(__file__).resolve().parent / "assets" / "tuned_lens"
WEIGHTS_FILE = "tuned_lens.safetensors"
REBUILD_HINT = ("restore it with `git checkout -- utils/assets/tuned_lens` or retrain it with "
                "`python -m utils.tuned_lens` (about a minute of CPU)")
#: Seeds of the course-corpus documents the lens trains on and is evaluated on (the course model trained on seed 0).
TRAIN_SEED, EVAL_SEED = 11, 12


class TunedLens(nn.Module):
    """One affine translator per residual-stack layer but the last, each ``[d_model, d_model]`` plus a bias.

    ``translators[l]`` maps the stream after ``l`` blocks; the last layer needs none (it *is* what the final
    norm reads). Initialised at the identity with zero bias: untrained, the tuned lens is the logit lens.
    """

    def __init__(self, n_layers: int, d_model: int) -> None:
        super().__init__()
        self.translators = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(n_layers))
        with torch.no_grad():
            for translator in self.translators:
                translator.weight.copy_(torch.eye(d_model))
                translator.bias.zero_()

    @classmethod
    def for_model(cls, model: PreTrainedModel) -> TunedLens:
        """An identity tuned lens shaped for ``model``, with its dtype and device."""
        lens = cls(architecture.n_layers(model), architecture.d_model(model))
        return lens.to(device=model.device, dtype=model.dtype)

    def translate(self, residual: Float[Tensor, "layer_plus_one *rest d_model"]
                  ) -> Float[Tensor, "layer_plus_one *rest d_model"]:
        """Apply each layer's translator to its slice of a residual stack (the last layer unchanged)."""
        if residual.shape[0] != len(self.translators) + 1:
            raise ValueError(f"residual has {residual.shape[0]} layers, but this tuned lens was made for a model with "
                             f"{len(self.translators)} blocks ({len(self.translators) + 1} layers in its residual stack): "
                             "pass residual_stack(model, input_ids) of the model the lens was trained on")
        translated = [translator(layer) for translator, layer in zip(self.translators, residual[:-1])]
        return torch.stack([*translated, residual[-1]])

    def forward(self, model: PreTrainedModel, residual: Float[Tensor, "layer_plus_one *rest d_model"]
                ) -> Float[Tensor, "layer_plus_one *rest vocab"]:
        """The tuned lens's logits: each layer translated, then the final norm and the unembedding."""
        return logit_lens(model, self.translate(residual))


def tuned_lens_loss(lens: TunedLens, model: PreTrainedModel, residual: Float[Tensor, "layer_plus_one n d_model"]
                    ) -> Float[Tensor, ""]:
    """The training loss: ``KL(final || tuned lens)`` summed over the layers, averaged over the ``n`` positions."""
    return kl_to_final(lens(model, residual)).sum()


def _real_positions(residual: Float[Tensor, "layer_plus_one batch pos d_model"], mask: Int[Tensor, "batch pos"]
                    ) -> Float[Tensor, "layer_plus_one n d_model"]:
    return residual[:, mask.bool()]


def train_tuned_lens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, steps: int = 250,
                     documents_per_step: int = 32, lr: float = 1e-3, seed: int = TRAIN_SEED,
                     max_length: int = 128) -> TunedLens:
    """Train a tuned lens for ``model`` on fresh course-corpus documents (``documents_per_step`` per Adam step).

    The model is frozen: each step runs it once (no gradients) to get the residual stack, then trains the
    translators on ``KL(final || tuned lens)``. The losses are kept in ``lens.losses``.
    """
    torch.manual_seed(seed)
    lens = TunedLens.for_model(model)
    optimizer = torch.optim.Adam(lens.parameters(), lr=lr)
    losses = []
    for step in tqdm(range(steps), desc="tuned lens", leave=False):
        input_ids, mask = corpus_batch(tokenizer, documents_per_step, seed=seed * 100_000 + step, max_length=max_length)
        with torch.no_grad():
            residual = _real_positions(residual_stack(model, input_ids.to(model.device)), mask.to(model.device))
        optimizer.zero_grad()
        with frozen(model):                     # the final norm and unembedding are the model's: no gradient there
            loss = tuned_lens_loss(lens, model, residual)
            loss.backward()
        optimizer.step()
        losses.append(loss.item())
    lens.losses = losses
    return lens.eval().requires_grad_(False)


@torch.no_grad()
def compare_lenses(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, lens: TunedLens, n_documents: int = 100,
                   seed: int = EVAL_SEED) -> dict[str, Float[Tensor, "layer_plus_one"]]:
    """``KL(final || lens)`` by layer of the logit lens and of ``lens`` on ``n_documents`` held-out course documents."""
    input_ids, mask = corpus_batch(tokenizer, n_documents, seed=seed)
    residual = _real_positions(residual_stack(model, input_ids.to(model.device)), mask.to(model.device))
    return {"logit lens": kl_to_final(logit_lens(model, residual)), "tuned lens": kl_to_final(lens(model, residual))}


def save_tuned_lens(lens: TunedLens, directory: Path = TUNED_LENS_DIR, **fields: object) -> dict:
    """Write the translators (safetensors) and a manifest (``fields`` plus the files' SHA-256) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in lens.state_dict().items()}, directory / WEIGHTS_FILE)
    return write_manifest(directory, files=(WEIGHTS_FILE,), n_layers=len(lens.translators),
                          d_model=lens.translators[0].in_features, **fields)


def load_tuned_lens(model: PreTrainedModel, directory: Path = TUNED_LENS_DIR) -> TunedLens:
    """The shipped tuned lens of the course model, its file checked against its manifest.

    Raises ``ValueError`` when ``model`` is not the model the lens was trained on (other shape, or the course
    model's weights changed since): train one with :func:`train_tuned_lens` instead.
    """
    manifest = verify_checkpoint(directory, hint=REBUILD_HINT)
    shape = (architecture.n_layers(model), architecture.d_model(model))
    if (manifest["n_layers"], manifest["d_model"]) != shape:
        raise ValueError(f"the tuned lens in {directory} was trained on a model with {manifest['n_layers']} layers of "
                         f"width {manifest['d_model']}, this one has {shape[0]} of width {shape[1]}: train a lens for it "
                         "with train_tuned_lens(model, tokenizer)")
    if manifest["model_sha256"] != file_sha256(COURSE_MODEL_DIR / "model.safetensors"):
        raise ValueError(f"the tuned lens in {directory} was trained on another version of the course model: "
                         "retrain it with `python -m utils.tuned_lens`")
    lens = TunedLens(*shape)
    lens.load_state_dict(load_file(directory / WEIGHTS_FILE))
    return lens.to(device=model.device, dtype=model.dtype).eval().requires_grad_(False)


def shipped_or_trained_tuned_lens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, model_name: str,
                                  steps_elsewhere: int = 100) -> TunedLens:
    """The shipped lens for the course model; for any other ``model_name``, one trained here for ``steps_elsewhere`` steps."""
    if model_name == COURSE_MODEL_NAME:
        return load_tuned_lens(model)
    return train_tuned_lens(model, tokenizer, steps=steps_elsewhere)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m utils.tuned_lens``: train the course model's tuned lens and write it to utils/assets/tuned_lens."""
    parser = argparse.ArgumentParser(prog="python -m utils.tuned_lens", description=main.__doc__)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--out", type=Path, default=TUNED_LENS_DIR)
    args = parser.parse_args(argv)
    model, tokenizer = load_model(COURSE_MODEL_NAME), load_tokenizer(COURSE_MODEL_NAME)
    start = time.perf_counter()
    lens = train_tuned_lens(model, tokenizer, steps=args.steps)
    seconds = time.perf_counter() - start
    kls = compare_lenses(model, tokenizer, lens)
    manifest = save_tuned_lens(
        lens, args.out, command="python -m utils.tuned_lens", steps=args.steps, documents_per_step=32, lr=1e-3,
        train_seed=TRAIN_SEED, seconds=round(seconds, 1), torch_threads=torch.get_num_threads(),
        first_loss=lens.losses[0], final_loss=sum(lens.losses[-20:]) / 20,
        model_sha256=file_sha256(COURSE_MODEL_DIR / "model.safetensors"),
        held_out_kl={name: [round(v, 4) for v in kl.tolist()] for name, kl in kls.items()})
    print(f"trained in {manifest['seconds']} s; KL(final || lens) by layer on held-out documents:")
    for name, kl in kls.items():
        print(f"  {name}: {', '.join(f'{v:.3f}' for v in kl.tolist())}")


if __name__ == "__main__":
    main()
