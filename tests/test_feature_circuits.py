"""Chapter 7: a sparse feature circuit for subject-verb agreement, over the shipped SAEs, checked against labels.

Numbers in comments: measured on the course model and the shipped SAEs, 32 pairs, 2026-11-25.
"""

from __future__ import annotations

import pytest
import torch

from utils.feature_circuits import (
    Node, ablation_masks, accuracy_with_nodes_ablated, attribution_graph, check_saes, completeness, edge_effects,
    edges_into, faithfulness, latents_at, mean_activations, node_effects, spliced, Spliced,
)
from utils.patching import agreement_pairs, tokenize_pairs
from utils.sae import load_shipped_sae
from utils.sae_features import auroc, label_features, labelled_probes

CIRCUIT_SIZE = 20
SUBJECT = 2          # "<bos> The dog near the cats": the subject's position


@pytest.fixture(scope="module")
def saes():
    return {layer: load_shipped_sae(f"resid_post.{layer}") for layer in range(4)}


@pytest.fixture(scope="module")
def circuit(course_model, course_tokenizer, saes):
    tokens = tokenize_pairs(course_tokenizer, agreement_pairs(32))
    reference = tokenize_pairs(course_tokenizer, agreement_pairs(64, seed=1))
    means = mean_activations(course_model, saes, torch.cat([reference.clean, reference.corrupted]))
    ranked = node_effects(course_model, saes, tokens).ranked()
    return tokens, means, ranked


def test_splicing_the_saes_changes_nothing(course_model, saes, circuit):
    tokens = circuit[0]
    with torch.no_grad(), spliced(course_model, saes, Spliced({}, {})):
        spliced_logits = course_model(tokens.clean).logits
    with torch.no_grad():
        torch.testing.assert_close(spliced_logits, course_model(tokens.clean).logits, atol=1e-4, rtol=0)


def test_small_circuit_is_faithful_and_necessary(course_model, saes, circuit):
    """20 nodes: faithfulness 0.70 (5 or 10 nodes, all at the last position: 0.00; 40 nodes: 0.97); ablating them
    takes agreement accuracy from 1.00 to 0.50, chance, and completeness to 0.00 (from 5 nodes on; v11)."""
    tokens, means, ranked = circuit
    nodes = [node for node, _ in ranked[:CIRCUIT_SIZE]]
    assert faithfulness(course_model, saes, tokens, means, nodes) >= 0.6
    assert accuracy_with_nodes_ablated(course_model, saes, tokens, means, []) == 1.0
    assert accuracy_with_nodes_ablated(course_model, saes, tokens, means, nodes) <= 0.6
    assert completeness(course_model, saes, tokens, means, nodes) <= 0.1             # the model needs them: 0.00
    assert completeness(course_model, saes, tokens, means, []) == pytest.approx(1.0)  # nothing ablated: the model
    assert any(node.position == SUBJECT for node in nodes)             # the subject's number must be read somewhere


def test_an_early_circuit_feature_encodes_the_subjects_number(course_model, course_tokenizer, saes, circuit):
    """Labels from the generator: the clean subject is singular in even pairs, plural in odd ones."""
    _, _, ranked = circuit
    held_out = tokenize_pairs(course_tokenizer, agreement_pairs(64, seed=2))
    plural = torch.arange(64) % 2 == 1
    early = [node for node, _ in ranked[:CIRCUIT_SIZE] if node.layer <= 1 and node.position == SUBJECT
             and node.feature is not None]
    assert early
    scores = {node: auroc(latents_at(course_model, saes, held_out.clean, node.layer, SUBJECT)[:, node.feature], plural)
              for node in early}
    assert max(max(score.item(), 1 - score.item()) for score in scores.values()) >= 0.9


def test_edges_connect_adjacent_layers(course_model, saes, circuit):
    tokens, _, ranked = circuit
    nodes = [node for node, _ in ranked[:CIRCUIT_SIZE]]
    edges = edge_effects(course_model, saes, tokens, nodes)
    assert edges and all(down.layer == up.layer + 1 for up, down in edges)
    (_, strongest_into), _ = max(edges.items(), key=lambda item: abs(item[1]))
    assert strongest_into.position == tokens.clean.shape[1] - 1          # where the answer is read
    assert any(down == ranked[0][0] for _, down in edges)                # the most important node has inputs


def test_the_edges_into_a_node_add_up_to_its_attribution_along_the_chain_rule(course_model, saes, circuit):
    """The edges into a latent from every node of the layer below (all latents and error terms at every position)
    sum to the gradient of its score times the whole layer's change: checked against one autograd call."""
    tokens, _, ranked = circuit
    down = next(node for node, _ in ranked if node.feature is not None and node.layer > 0)
    clean, corrupted, gradients = attribution_graph(course_model, saes, tokens)
    n_pos, d_sae = corrupted.latents[down.layer - 1].shape[1:]
    every_up = [Node(down.layer - 1, pos, feature) for pos in range(n_pos) for feature in range(d_sae)]
    every_up += [Node(down.layer - 1, pos, None) for pos in range(n_pos)]
    total = sum(edges_into(down, every_up, corrupted, gradients, clean).values())
    score = (gradients.latents[down.layer][:, down.position, down.feature]
             * corrupted.latents[down.layer][:, down.position, down.feature]).sum()
    below = [corrupted.latents[down.layer - 1], corrupted.errors[down.layer - 1]]
    grads = torch.autograd.grad(score, below)
    expected = sum(((start - value.detach()) * grad).sum() for start, value, grad
                   in zip([clean.latents[down.layer - 1], clean.errors[down.layer - 1]], below, grads))
    assert total == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    assert edges_into(Node(down.layer, down.position, None), every_up[:3], corrupted, gradients, clean) == \
        {up: 0.0 for up in every_up[:3]}                                   # an error term: nothing upstream
    with pytest.raises(ValueError, match="adjacent layers"):
        edges_into(down, [Node(down.layer, 0, None)], corrupted, gradients, clean)


def test_the_masks_that_keep_a_circuit_are_the_complement_of_those_that_ablate_it():
    nodes = [Node(0, 1, 3), Node(0, 2, None), Node(2, 0, 1)]
    ablate = ablation_masks({0: 5, 1: 5, 2: 4}, 3, nodes, keep_only=False)
    keep = ablation_masks({0: 5, 1: 5, 2: 4}, 3, nodes, keep_only=True)
    assert [latents.sum().item() + errors.sum().item() for latents, errors in ablate.values()] == [2, 0, 1]
    assert ablate[0][0][1, 3] and ablate[0][1][2] and ablate[2][0][0, 1]
    for (ablated_latents, ablated_errors), (kept_latents, kept_errors) in zip(ablate.values(), keep.values()):
        assert torch.equal(kept_latents, ~ablated_latents) and torch.equal(kept_errors, ~ablated_errors)


def test_missing_saes_are_named(course_model, saes):
    with pytest.raises(ValueError, match=r"no SAE for layer\(s\) \[3\]"):
        check_saes(course_model, {layer: saes[layer] for layer in range(3)})
    assert Node(2, 5, None).name == "L2 p5 error" and Node(1, 2, 187).name == "L1 p2 #187"


def test_chapter_6_labels_name_the_early_circuit_features(course_model, course_tokenizer, saes, circuit):
    """Chapter 6's automatic labels, from the generator's variables: L1 #187 'subject number=singular',
    L1 #167 and #89 and L0 #268 'subject number=plural'."""
    _, _, ranked = circuit
    probes = labelled_probes(course_tokenizer, n=200)
    early = [node for node, _ in ranked[:CIRCUIT_SIZE] if node.layer <= 1 and node.position == SUBJECT
             and node.feature is not None]
    labels = {layer: label_features(course_model, course_tokenizer, saes[layer], probes) for layer in (0, 1)}
    named = [labels[node.layer][node.feature][0] for node in early if node.feature in labels[node.layer]]
    assert len(named) >= 2 and all(label.startswith("subject number=") for label in named)
