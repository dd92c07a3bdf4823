"""The tuned lens (Belrose et al., 2023): one learned affine map per layer before the logit lens (chapter 4).

The logit lens assumes every layer writes in the basis the final layer reads. The tuned lens relaxes
that: for each layer ``l`` of the residual stack (but the last) it learns a *translator*
``A_l x + b_l``, initialised at the identity, trained so that ``logit_lens(A_l x + b_l)`` matches the
model's final distribution (minimising ``KL(final || lens)`` on course text)::

    lens = load_tuned_lens(model)                              # the shipped one, for the course model
    lens = load_published_tuned_lens(model, "gpt2")            # the tuned-lens project's, for a hub model
    lens = train_tuned_lens(model, tokenizer, steps=100)       # any other model
    logits = lens(model, residual_stack(model, input_ids))     # [n_layers + 1, batch, pos, vocab]

``python -m utils.tuned_lens`` retrains the shipped lens of the course model
(``utils/assets/tuned_lens``: weights, and a manifest with the training run and the SHA-256 of the
course model it was trained on).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils import architecture
from utils.logit_lens import corpus_batch, kl_to_final, logit_lens, residual_stack
from utils.models import (
    COURSE_MODEL_DIR, COURSE_MODEL_NAME, ModelNotAvailableError, file_sha256, frozen, hub_offline, load_model,
    load_tokenizer, sized_training, verify_checkpoint, write_manifest,
)
from utils.progress import tqdm

TUNED_LENS_DIR = Path(__file__).resolve().parent / "assets" / "tuned_lens"
WEIGHTS_FILE = "tuned_lens.safetensors"
REBUILD_HINT = ("restore it with `git checkout -- utils/assets/tuned_lens` or retrain it with "
                "`python -m utils.tuned_lens` (about a minute of CPU)")
#: Seeds of the course-corpus documents the lens trains on and is evaluated on (the course model trained on seed 0).
TRAIN_SEED, EVAL_SEED = 11, 12
#: Adam steps of the shipped lens (``python -m utils.tuned_lens``).
SHIPPED_STEPS = 250


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


def tuned_lens_step(lens: TunedLens, model: PreTrainedModel, residual: Float[Tensor, "layer_plus_one n d_model"],
                    optimizer: torch.optim.Optimizer) -> float:
    """Reference for Exercise 4.9: one optimizer step of the translators on :func:`tuned_lens_loss`, at the
    residual stack of ``n`` positions.

    The model is frozen (:func:`~utils.models.frozen`): its final norm and unembedding map the translated
    stream to logits, but no gradient reaches its weights. Returns the loss before the step, as a float.
    """
    optimizer.zero_grad()
    with frozen(model):
        loss = tuned_lens_loss(lens, model, residual)
        loss.backward()
    optimizer.step()
    return loss.item()


def least_squares_translator(x: Float[Tensor, "n d_model"], target: Float[Tensor, "n d_model"]
                             ) -> tuple[Float[Tensor, "d_model d_model"], Float[Tensor, "d_model"]]:
    """Reference for Exercise 4.14: the affine map ``x @ A + b`` closest to ``target`` in squared error (least squares).

    A translator without training, fitted to the final *stream* rather than to the final distribution: the
    tuned lens's objective weighs directions by what the unembedding reads, this one weighs every direction alike.
    """
    with_ones = torch.cat([x, torch.ones_like(x[:, :1])], dim=-1)                     # [n, d_model + 1]
    solution = torch.linalg.lstsq(with_ones.double(), target.double()).solution.to(x.dtype)   # [d_model + 1, d_model]
    return solution[:-1], solution[-1]


#: A tuned-lens training step: ``step(lens, model, residual, optimizer) -> loss`` (:func:`tuned_lens_step`).
TunedLensStep = Callable[[TunedLens, PreTrainedModel, Tensor, torch.optim.Optimizer], float]


def _real_positions(residual: Float[Tensor, "layer_plus_one batch pos d_model"], mask: Int[Tensor, "batch pos"]
                    ) -> Float[Tensor, "layer_plus_one n d_model"]:
    return residual[:, mask.bool()]


def train_tuned_lens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, steps: int = 250,
                     documents_per_step: int = 32, lr: float = 1e-3, seed: int = TRAIN_SEED,
                     max_length: int = 128, step: TunedLensStep = tuned_lens_step) -> TunedLens:
    """Train a tuned lens for ``model`` on fresh course-corpus documents (``documents_per_step`` per Adam step).

    The model is frozen: each step runs it once (no gradients) to get the residual stack, then takes one
    ``step`` (:func:`tuned_lens_step`; the lab passes the learner's) of the translators on
    ``KL(final || tuned lens)``. The losses are kept in ``lens.losses``.
    """
    torch.manual_seed(seed)
    lens = TunedLens.for_model(model)
    optimizer = torch.optim.Adam(lens.parameters(), lr=lr)
    losses = []
    for index in tqdm(range(steps), desc="tuned lens", leave=False):
        input_ids, mask = corpus_batch(tokenizer, documents_per_step, seed=seed * 100_000 + index, max_length=max_length)
        with torch.no_grad():
            residual = _real_positions(residual_stack(model, input_ids.to(model.device)), mask.to(model.device))
        losses.append(step(lens, model, residual, optimizer))
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


#: The Hugging Face space where the tuned-lens project (Belrose et al.) publishes trained lenses, one folder
#: ``lens/<hub model name>`` per model (``lens/gpt2`` for GPT-2 small).
PUBLISHED_LENSES = "AlignmentResearch/tuned-lens"
PUBLISHED_FILES = ("config.json", "params.pt")
#: The folder of a checkpoint directory where a lens saved with the model is looked for.
PUBLISHED_SUBFOLDER = "tuned_lens"


def published_lens_directory(name: str | Path) -> Path:
    """The folder holding the tuned-lens project's ``config.json`` and ``params.pt`` for model ``name``.

    ``name`` is a local folder in that format (or a checkpoint folder with one in ``tuned_lens/``, as
    :func:`save_published_tuned_lens` writes it), or a hub model name whose lens is downloaded from
    :data:`PUBLISHED_LENSES` (once; then it is read from the hub cache). Raises
    :class:`~utils.models.ModelNotAvailableError` when there is none, or none reachable offline.
    """
    local = Path(name).expanduser()
    if local.is_dir():
        for folder in (local, local / PUBLISHED_SUBFOLDER):
            if all((folder / file).exists() for file in PUBLISHED_FILES):
                return folder
        raise ModelNotAvailableError(f"{local} holds no published tuned lens (config.json and params.pt, the "
                                     f"tuned-lens project's format, in it or in its {PUBLISHED_SUBFOLDER}/ folder)")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        paths = [hf_hub_download(PUBLISHED_LENSES, file, subfolder=f"lens/{name}", repo_type="space",
                                 local_files_only=hub_offline()) for file in PUBLISHED_FILES]
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise ModelNotAvailableError(f"no published tuned lens for '{name}' could be read from the {PUBLISHED_LENSES} "
                                     f"space ({type(error).__name__})") from error
    return Path(paths[0]).parent


def load_published_tuned_lens(model: PreTrainedModel, name: str | Path) -> TunedLens:
    """A lens trained by the tuned-lens project for ``model`` (see :func:`published_lens_directory`).

    That project adds its translators to the stream (``h + W h + b``, trained from zero); here a
    translator is the whole map, so its weight becomes ``I + W``. The lens must be for a model of
    ``model``'s depth and width.
    """
    directory = published_lens_directory(name)
    config = json.loads((directory / "config.json").read_text())
    shape = (architecture.n_layers(model), architecture.d_model(model))
    if (config["num_hidden_layers"], config["d_model"]) != shape:
        raise ValueError(f"the tuned lens in {directory} is for a model with {config['num_hidden_layers']} layers of width "
                         f"{config['d_model']}, this one has {shape[0]} of width {shape[1]}: load the lens of this model")
    state = torch.load(directory / "params.pt", map_location="cpu", weights_only=True)
    lens = TunedLens(*shape)
    with torch.no_grad():
        for index, translator in enumerate(lens.translators):
            translator.weight.add_(state[f"{index}.weight"].float())
            translator.bias.copy_(state.get(f"{index}.bias", torch.zeros(shape[1])).float())
    return lens.to(device=model.device, dtype=model.dtype).eval().requires_grad_(False)


def save_published_tuned_lens(lens: TunedLens, directory: str | Path, base_model: str = "") -> Path:
    """Write ``lens`` in the tuned-lens project's format (translators ``h + W h + b``, so ``W = A - I``),
    which :func:`load_published_tuned_lens` and that project's ``TunedLens.from_model_and_pretrained`` read."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {}
    for index, translator in enumerate(lens.translators):
        identity = torch.eye(translator.in_features, dtype=translator.weight.dtype, device=translator.weight.device)
        state[f"{index}.weight"] = (translator.weight.detach() - identity).cpu()
        state[f"{index}.bias"] = translator.bias.detach().cpu()
    torch.save(state, directory / "params.pt")
    (directory / "config.json").write_text(json.dumps({
        "base_model_name_or_path": base_model, "d_model": lens.translators[0].in_features,
        "num_hidden_layers": len(lens.translators), "bias": True, "base_model_revision": None, "unembed_hash": None,
        "lens_type": "linear_tuned_lens"}, indent=1))
    return directory


def shipped_or_trained_tuned_lens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, model_name: str | Path,
                                  steps_elsewhere: int = 40, documents_per_step_elsewhere: int = 8) -> TunedLens:
    """The tuned lens for ``model_name``: the shipped one for the course model; for another model the tuned-lens
    project's published lens (:func:`load_published_tuned_lens`) when there is one; otherwise one trained here
    for a bounded ``steps_elsewhere`` steps of ``documents_per_step_elsewhere`` documents, fewer on a larger model
    (:func:`~utils.models.sized_training`), saying so."""
    if str(model_name) == COURSE_MODEL_NAME:
        return load_tuned_lens(model)
    try:
        lens = load_published_tuned_lens(model, model_name)
        print(f"loaded the tuned-lens project's published lens for {model_name}")
        return lens
    except ModelNotAvailableError as reason:
        print(f"{reason}: training a tuned lens here for {steps_elsewhere} steps of {documents_per_step_elsewhere} "
              f"course documents (the course model's shipped lens had {SHIPPED_STEPS} of 32), so expect it to sit "
              "closer to the logit lens than a full run would")
    steps, documents_per_step = sized_training(model, steps_elsewhere, documents_per_step_elsewhere, what="the tuned lens")
    return train_tuned_lens(model, tokenizer, steps=steps, documents_per_step=documents_per_step)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m utils.tuned_lens``: train the course model's tuned lens and write it to utils/assets/tuned_lens."""
    parser = argparse.ArgumentParser(prog="python -m utils.tuned_lens", description=main.__doc__)
    parser.add_argument("--steps", type=int, default=SHIPPED_STEPS)
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
