"""Every exercise of the course: where its solution is, and how its checker is called.

The solution notebook is the single source of each reference solution: :func:`solution` compiles
the function an exercise's solution cell defines, so that tests and reports (mutation testing,
``tests/test_mutation.py``; ``benchmarks/mutation_report.py``) work on exactly the code a learner
is shown. :meth:`Exercise.check` calls the exercise's checker the way its lab does::

    exercise = EXERCISES["0.1"]
    reference, source = solution(exercise)
    exercise.check(reference, ExerciseContext())    # prints "✅ Exercise 0.1 (per_token_loss): ..."
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.checks import CheckResult, exec_source

SOLUTIONS_DIR = Path(__file__).resolve().parent.parent / "solutions"


class ExerciseContext:
    """What some checkers need besides the learner's function, loaded once on first use: the course
    model and tokenizer, the same model in TransformerLens and in nnsight, the packed windows the
    activation-caching exercise streams, and the shipped SAEs after every block (chapter 7's circuits)."""

    @functools.cached_property
    def model(self) -> Any:
        from utils.models import load_model
        return load_model("course")

    @functools.cached_property
    def tokenizer(self) -> Any:
        from utils.models import load_tokenizer
        return load_tokenizer("course")

    @functools.cached_property
    def tl_model(self) -> Any:
        from utils.models import to_hooked_transformer
        return to_hooked_transformer(self.model, self.tokenizer)

    @functools.cached_property
    def nn_model(self) -> Any:
        from nnsight import TransformersModel
        return TransformersModel(self.model, tokenizer=self.tokenizer, task="text-generation")

    @functools.cached_property
    def saes(self) -> Any:
        from utils.sae import load_shipped_sae
        from utils.architecture import n_layers
        return {layer: load_shipped_sae(f"resid_post.{layer}") for layer in range(n_layers(self.model))}

    @functools.cached_property
    def windows(self) -> Any:
        from utils.activation_store import token_windows
        from utils.world import generate_corpus
        texts = [doc.text for doc in generate_corpus(600, seed=7)]   # as in solutions/03_caching_hooks.ipynb
        return token_windows(self.tokenizer, texts, context_length=128)[:12]


#: The module of each chapter's checkers (``utils/checkers/<name>.py``), by chapter number (99: the
#: worked example that the tests of the notebook pipeline and of grading use).
CHECKER_MODULES: dict[str, str] = {
    "0": "course_model", "1": "prompting", "2": "lora", "3": "caching_hooks", "4": "logit_lens",
    "5": "steering_caa", "6": "sparse_autoencoders", "7": "circuits", "99": "example",
}


@dataclass(frozen=True)
class Exercise:
    """One exercise: its number, the notebook and function of its solution, the library module the
    solution builds on (its names are the solution's), its checker (in the chapter's module of
    ``utils.checkers``) and what the checker takes after the learner's function."""

    id: str
    notebook: str
    function: str
    library: str
    checker_name: str
    needs: tuple[str, ...] = ()

    @property
    def checker(self) -> str:
        """``"utils.checkers.<chapter>:check_<exercise>"``."""
        return f"utils.checkers.{CHECKER_MODULES[self.id.split('.')[0]]}:{self.checker_name}"

    def check(self, learner_fn: Callable[..., Any], context: ExerciseContext) -> CheckResult:
        """Run the checker on ``learner_fn`` as the lab does."""
        module, name = self.checker.split(":")
        checker = getattr(importlib.import_module(module), name)
        return checker(learner_fn, *(getattr(context, need) for need in self.needs))


def solution(exercise: Exercise) -> tuple[Callable[..., Any], str]:
    """The reference solution of ``exercise``, compiled from its solution notebook's cell, and
    that cell's source. It runs in the namespace of the exercise's library module (which imports
    what the solutions use), with the notebook's typing names."""
    cells = json.loads((SOLUTIONS_DIR / f"{exercise.notebook}.ipynb").read_text())["cells"]
    definition = f"def {exercise.function}("
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    matching = [s for s in sources if definition in s and "BEGIN SOLUTION" in s]
    if len(matching) != 1:
        raise LookupError(f"{exercise.notebook}.ipynb has {len(matching)} solution cells defining "
                          f"{exercise.function}(): expected one")
    namespace = _solution_namespace(exercise)
    exec_source(matching[0], f"<{exercise.notebook}: {exercise.function}>", namespace)
    return namespace[exercise.function], matching[0]


def _solution_namespace(exercise: Exercise) -> dict[str, Any]:
    import einops
    import torch
    from jaxtyping import Bool, Float, Int

    module = importlib.import_module(exercise.library)
    return {**vars(module), "torch": torch, "F": torch.nn.functional, "einops": einops, "Tensor": torch.Tensor,
            "Float": Float, "Int": Int, "Bool": Bool, "__name__": f"solution_{exercise.notebook}"}


def _exercises(*rows: tuple[str, str, str, str, str, tuple[str, ...]]) -> dict[str, Exercise]:
    """Rows ``(id, notebook, function, library module, checker, needs)``."""
    return {row[0]: Exercise(*row) for row in rows}


#: The course's exercises by number, in the order of the labs.
EXERCISES: dict[str, Exercise] = _exercises(
    ("0.1", "00_course_model", "per_token_loss", "utils.course_model.exercises", "check_per_token_loss", ()),
    ("0.2", "00_course_model", "logit_difference", "utils.course_model.exercises", "check_logit_difference", ()),
    ("0.3", "00_course_model", "logits_from_final_residual",
     "utils.course_model.exercises", "check_logits_from_final_residual", ("model",)),
    ("0.4", "00_course_model", "layer_norm", "utils.gpt2_from_scratch", "check_layer_norm", ("model",)),
    ("0.5", "00_course_model", "embed", "utils.gpt2_from_scratch", "check_embed", ("model",)),
    ("0.6", "00_course_model", "causal_attention_pattern", "utils.gpt2_from_scratch", "check_causal_attention_pattern",
     ()),
    ("0.7", "00_course_model", "self_attention", "utils.gpt2_from_scratch", "check_self_attention", ("model",)),
    ("0.8", "00_course_model", "mlp", "utils.gpt2_from_scratch", "check_mlp", ("model",)),
    ("0.9", "00_course_model", "transformer_block", "utils.gpt2_from_scratch", "check_transformer_block", ("model",)),
    ("0.10", "00_course_model", "gpt2_forward", "utils.gpt2_from_scratch", "check_gpt2_forward", ("model",)),
    ("0.11", "00_course_model", "gpt2_parameter_count", "utils.gpt2_from_scratch", "check_gpt2_parameter_count",
     ("model",)),
    ("0.12", "00_course_model", "padded_attention_pattern", "utils.gpt2_from_scratch", "check_padded_attention_pattern",
     ()),
    ("1.1", "01_prompting", "top_k_filter", "utils.decoding", "check_top_k_filter", ()),
    ("1.2", "01_prompting", "top_p_filter", "utils.decoding", "check_top_p_filter", ()),
    ("1.3", "01_prompting", "min_p_filter", "utils.decoding", "check_min_p_filter", ()),
    ("1.4", "01_prompting", "apply_repetition_penalty", "utils.decoding", "check_apply_repetition_penalty", ()),
    ("1.5", "01_prompting", "greedy_generate", "utils.decoding", "check_greedy_generate", ("model",)),
    ("1.6", "01_prompting", "top_beam_continuations", "utils.decoding", "check_top_beam_continuations", ()),
    ("1.7", "01_prompting", "few_shot_prompt", "utils.prompt_eval", "check_few_shot_prompt", ()),
    ("1.8", "01_prompting", "wilson_interval", "utils.prompt_eval", "check_wilson_interval", ()),
    ("1.9", "01_prompting", "answer_matches", "utils.soft_prompts", "check_answer_matches", ()),
    ("1.10", "01_prompting", "parse_answer", "utils.prompt_eval", "check_parse_answer", ()),
    ("1.11", "01_prompting", "mcnemar_exact", "utils.prompt_eval", "check_mcnemar_exact", ()),
    ("1.12", "01_prompting", "token_transitions", "utils.structured", "check_token_transitions", ()),
    ("1.13", "01_prompting", "mask_disallowed", "utils.structured", "check_mask_disallowed", ()),
    ("1.14", "01_prompting", "logits_with_soft_prompt", "utils.soft_prompts", "check_logits_with_soft_prompt",
     ("model",)),
    ("1.15", "01_prompting", "soft_prompt_step", "utils.soft_prompts", "check_soft_prompt_step",
     ("model", "tokenizer")),
    ("1.16", "01_prompting", "nearest_tokens", "utils.soft_prompts", "check_nearest_tokens", ("model", "tokenizer")),
    ("1.17", "01_prompting", "typical_filter", "utils.decoding", "check_typical_filter", ()),
    ("2.1", "02_lora", "response_labels", "utils.finetune", "check_response_labels", ()),
    ("2.2", "02_lora", "lora_forward", "utils.lora", "check_lora_forward", ()),
    ("2.3", "02_lora", "merged_weight", "utils.lora", "check_merged_weight", ()),
    ("2.4", "02_lora", "add_lora", "utils.lora", "check_add_lora", ("model",)),
    ("2.5", "02_lora", "lora_parameter_count", "utils.lora", "check_lora_parameter_count", ("model",)),
    ("2.6", "02_lora", "training_step", "utils.finetune", "check_training_step", ("model", "tokenizer")),
    ("2.7", "02_lora", "lora_state_dict", "utils.lora", "check_lora_state_dict", ("model",)),
    ("2.8", "02_lora", "corpus_loss", "utils.finetune", "check_corpus_loss", ()),
    ("2.9", "02_lora", "merge_task_vectors_linear", "utils.lora", "check_merge_task_vectors_linear", ()),
    ("2.10", "02_lora", "slerp", "utils.lora", "check_slerp", ()),
    ("2.11", "02_lora", "task_vector_cosine", "utils.lora", "check_task_vector_cosine", ()),
    ("2.12", "02_lora", "load_lora_state_dict", "utils.lora", "check_load_lora_state_dict", ("model",)),
    ("3.1", "03_caching_hooks", "capture_residual_stream", "utils.hooks", "check_capture_residual_stream", ("model",)),
    ("3.2", "03_caching_hooks", "capture_site_with_transformer_lens", "utils.hooks",
     "check_capture_site_with_transformer_lens", ("tl_model",)),
    ("3.3", "03_caching_hooks", "mlp_and_block_output_with_nnsight", "utils.hooks",
     "check_mlp_and_block_output_with_nnsight", ("nn_model",)),
    ("3.4", "03_caching_hooks", "ablate_head", "utils.hooks", "check_ablate_head", ("model",)),
    ("3.5", "03_caching_hooks", "transformer_lens_ablate_head", "utils.hooks", "check_transformer_lens_ablate_head",
     ("tl_model",)),
    ("3.6", "03_caching_hooks", "nnsight_loss_with_head_ablation", "utils.hooks",
     "check_nnsight_loss_with_head_ablation", ("nn_model",)),
    ("3.7", "03_caching_hooks", "pattern_from_cache", "utils.attention", "check_pattern_from_cache", ("tl_model",)),
    ("3.8", "03_caching_hooks", "repeated_sequences", "utils.attention", "check_repeated_sequences", ()),
    ("3.9", "03_caching_hooks", "losses_by_copy", "utils.attention", "check_losses_by_copy", ()),
    ("3.10", "03_caching_hooks", "previous_token_scores", "utils.attention", "check_previous_token_scores", ()),
    ("3.11", "03_caching_hooks", "induction_scores", "utils.attention", "check_induction_scores", ()),
    ("3.12", "03_caching_hooks", "copy_losses_with_heads_ablated", "utils.attention",
     "check_copy_losses_with_heads_ablated", ("model",)),
    ("3.13", "03_caching_hooks", "k_composition_scores", "utils.attention", "check_k_composition_scores",
     ("tl_model",)),
    ("3.14", "03_caching_hooks", "cache_to_shards", "utils.activation_store", "check_cache_to_shards",
     ("model", "windows")),
    ("3.15", "03_caching_hooks", "composition_scores", "transformer_lens.FactoredMatrix", "check_composition_scores",
     ("tl_model",)),
    ("3.16", "03_caching_hooks", "resample_ablate_head", "utils.hooks", "check_resample_ablate_head", ("model",)),
    ("4.1", "04_logit_lens", "residual_stack", "utils.logit_lens", "check_residual_stack", ("model",)),
    ("4.2", "04_logit_lens", "logit_lens_at_position", "utils.logit_lens", "check_logit_lens_at_position", ("model",)),
    ("4.3", "04_logit_lens", "at_positions", "utils.logit_lens", "check_at_positions", ()),
    ("4.4", "04_logit_lens", "head_contributions", "utils.logit_lens", "check_head_contributions", ("model",)),
    ("4.5", "04_logit_lens", "norm_scale", "utils.logit_lens", "check_norm_scale", ("model",)),
    ("4.6", "04_logit_lens", "logit_difference_contributions",
     "utils.logit_lens", "check_logit_difference_contributions", ("model",)),
    ("4.7", "04_logit_lens", "formation_layers", "utils.logit_lens", "check_formation_layers", ()),
    ("4.8", "04_logit_lens", "kl_to_final", "utils.logit_lens", "check_kl_to_final", ()),
    ("4.9", "04_logit_lens", "tuned_lens_step", "utils.tuned_lens", "check_tuned_lens_step", ("model", "tokenizer")),
    ("4.10", "04_logit_lens", "top1_agreement", "utils.logit_lens", "check_top1_agreement", ()),
    ("4.11", "04_logit_lens", "singular_directions", "utils.logit_lens", "check_singular_directions", ("model",)),
    ("4.12", "04_logit_lens", "ov_copying_ranks", "utils.logit_lens", "check_ov_copying_ranks", ("model",)),
    ("4.13", "04_logit_lens", "ov_eigenvalue_score", "utils.logit_lens", "check_ov_eigenvalue_score", ("model",)),
    ("4.14", "04_logit_lens", "least_squares_translator", "utils.tuned_lens", "check_least_squares_translator", ()),
    ("5.1", "05_steering_caa", "caa_vector", "utils.steering", "check_caa_vector", ("model", "tokenizer")),
    ("5.2", "05_steering_caa", "add_steering", "utils.steering", "check_add_steering", ()),
    ("5.3", "05_steering_caa", "sweep_settings", "utils.steering", "check_sweep_settings", ()),
    ("5.4", "05_steering_caa", "behaviour_rate", "utils.steering", "check_behaviour_rate", ()),
    ("5.5", "05_steering_caa", "mean_difference_direction", "utils.directions", "check_mean_difference_direction", ()),
    ("5.6", "05_steering_caa", "pca_direction", "utils.directions", "check_pca_direction", ()),
    ("5.7", "05_steering_caa", "actadd_vector", "utils.directions", "check_actadd_vector", ("model", "tokenizer")),
    ("5.8", "05_steering_caa", "probe_accuracy", "utils.directions", "check_probe_accuracy", ()),
    ("5.9", "05_steering_caa", "project_out", "utils.directions", "check_project_out", ()),
    ("5.10", "05_steering_caa", "ablate_direction", "utils.directions", "check_ablate_direction", ("model",)),
    ("5.11", "05_steering_caa", "refusal_direction", "utils.directions", "check_refusal_direction", ("model", "tokenizer")),
    ("5.12", "05_steering_caa", "function_vector", "utils.directions", "check_function_vector", ("model", "tokenizer")),
    ("5.13", "05_steering_caa", "add_per_variant", "utils.steering", "check_add_per_variant", ()),
    ("5.14", "05_steering_caa", "neutral_loss", "utils.steering", "check_neutral_loss", ("model", "tokenizer")),
    ("6.1", "06_sparse_autoencoders", "sae_forward", "utils.sae", "check_sae_forward", ()),
    ("6.2", "06_sparse_autoencoders", "sae_loss", "utils.sae", "check_sae_loss", ()),
    ("6.3", "06_sparse_autoencoders", "explained_variance", "utils.sae", "check_explained_variance", ()),
    ("6.4", "06_sparse_autoencoders", "remove_parallel_component", "utils.sae", "check_remove_parallel_component", ()),
    ("6.5", "06_sparse_autoencoders", "sae_training_step", "utils.sae", "check_sae_training_step", ()),
    ("6.6", "06_sparse_autoencoders", "jumprelu_forward", "utils.sae", "check_jumprelu_forward", ()),
    ("6.7", "06_sparse_autoencoders", "sparsity_metrics", "utils.sae", "check_sparsity_metrics", ()),
    ("6.8", "06_sparse_autoencoders", "spliced_loss", "utils.sae", "check_spliced_loss", ("model", "tokenizer")),
    ("6.9", "06_sparse_autoencoders", "top_activations", "utils.sae_features", "check_top_activations", ()),
    ("6.10", "06_sparse_autoencoders", "logit_effect_tokens", "utils.sae_features", "check_logit_effect_tokens",
     ("model",)),
    ("6.11", "06_sparse_autoencoders", "auroc", "utils.sae_features", "check_auroc", ()),
    ("6.12", "06_sparse_autoencoders", "best_latent", "utils.sae_features", "check_best_latent", ()),
    ("6.13", "06_sparse_autoencoders", "aligned_latents", "utils.sae_features", "check_aligned_latents", ()),
    ("6.14", "06_sparse_autoencoders", "projection_on_rows", "utils.sae_features", "check_projection_on_rows", ()),
    ("6.15", "06_sparse_autoencoders", "batch_topk", "utils.sae", "check_batch_topk", ()),
    ("6.16", "06_sparse_autoencoders", "decoder_matches", "utils.sae_features", "check_decoder_matches", ()),
    ("7.1", "07_circuits", "tokenize_pairs", "utils.patching", "check_tokenize_pairs", ("tokenizer",)),
    ("7.2", "07_circuits", "normalised_metric", "utils.patching", "check_normalised_metric", ()),
    ("7.3", "07_circuits", "replace_head", "utils.patching", "check_replace_head", ()),
    ("7.4", "07_circuits", "copy_where", "utils.patching", "check_copy_where", ()),
    ("7.5", "07_circuits", "logit_difference_with_heads_ablated", "utils.patching",
     "check_logit_difference_with_heads_ablated", ("model", "tokenizer")),
    ("7.6", "07_circuits", "patch_head_positions", "utils.patching", "check_patch_head_positions",
     ("model", "tokenizer")),
    ("7.7", "07_circuits", "attribution", "utils.patching", "check_attribution", ()),
    ("7.8", "07_circuits", "integrated_gradients", "utils.patching", "check_integrated_gradients", ()),
    ("7.9", "07_circuits", "node_attribution", "utils.feature_circuits", "check_node_attribution", ()),
    ("7.10", "07_circuits", "ablation_masks", "utils.feature_circuits", "check_ablation_masks", ()),
    ("7.11", "07_circuits", "faithfulness", "utils.feature_circuits", "check_faithfulness",
     ("model", "tokenizer", "saes")),
    ("7.12", "07_circuits", "completeness", "utils.feature_circuits", "check_completeness",
     ("model", "tokenizer", "saes")),
    ("7.13", "07_circuits", "edges_into", "utils.feature_circuits", "check_edges_into", ("model", "tokenizer", "saes")),
    ("7.14", "07_circuits", "path_patch", "utils.patching", "check_path_patch", ("model", "tokenizer")),
    ("7.15", "07_circuits", "path_patch_to_logits", "utils.patching", "check_path_patch_to_logits",
     ("model", "tokenizer")),
    ("7.16", "07_circuits", "patch_residual", "utils.patching", "check_patch_residual", ("model", "tokenizer")),
)
