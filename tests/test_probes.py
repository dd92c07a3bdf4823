"""Per-layer linear probes and their controls (utils.probes): first on activations whose answer is
planted (the label lies along one direction at layer 1 and nowhere at layer 0), then on the course
model against the generator's labels, with the thresholds in each test's docstring."""

from __future__ import annotations

import pytest
import torch

from utils.directions import labelled_stories
from utils.probes import LayerProbes, control_labels, encode_labels, fit_probes, fit_value_probes, shuffled_labels
from utils.steering import last_token_activations
from utils.world.heldout import HELDOUT_NAMES
from utils.world.vocabulary import ALL_NAMES

D_MODEL = 32


def planted(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[2, n, D_MODEL] activations and [n] binary labels: layer 1 carries the label along a fixed
    direction (+-3 on top of unit noise: a perfect reader is right 99.9 % of the time), layer 0 is
    noise only. Returns the direction too."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(D_MODEL, generator=torch.Generator().manual_seed(99)), dim=0)
    labels = torch.randint(0, 2, (n,), generator=generator)
    noise = torch.randn(2, n, D_MODEL, generator=generator)
    signal = (labels.float() * 2 - 1)[:, None] * 3 * direction
    return torch.stack([noise[0], noise[1] + signal]), labels, direction


@pytest.fixture(scope="module")
def probes() -> LayerProbes:
    activations, labels, _ = planted(1_000, seed=0)
    return fit_probes(activations, labels)


def test_a_probe_reads_the_label_only_where_it_is_written(probes):
    held_out, labels, _ = planted(400, seed=1)
    accuracy = probes.accuracy(held_out, labels)
    assert accuracy[1] > 0.97
    assert accuracy[0] < 0.6


def test_the_probes_direction_is_the_planted_one(probes):
    _, _, direction = planted(1, seed=0)
    directions = probes.directions()[1]
    difference = directions[1] - directions[0]
    assert torch.cosine_similarity(difference, direction, dim=0) > 0.9


def test_shuffled_labels_fit_the_training_rows_but_not_held_out_ones():
    activations, labels, _ = planted(48, seed=0)
    shuffled = shuffled_labels(labels, seed=0)
    assert sorted(shuffled.tolist()) == sorted(labels.tolist()) and not torch.equal(shuffled, labels)
    probes = fit_probes(activations, shuffled, steps=1_000, weight_decay=0.0)
    held_out, held_out_labels, _ = planted(400, seed=1)
    assert probes.accuracy(activations, shuffled)[1] > 0.9  # memorised: 48 rows in 32 dimensions
    assert probes.accuracy(held_out, held_out_labels)[1] < 0.7


def test_the_control_task_gives_each_type_one_label_whatever_the_order():
    words = ["cat", "dog", "cat", "sun", "dog", "cat"]
    labels = control_labels(words, n_classes=2, seed=3)
    assert len({(word, label) for word, label in zip(words, labels.tolist())}) == 3
    reordered = control_labels(list(reversed(words)), n_classes=2, seed=3)
    assert reordered.tolist() == list(reversed(labels.tolist()))


def test_encode_labels_sorts_the_classes():
    labels, classes = encode_labels(["joy", "fear", "joy", "calm"])
    assert classes == ["calm", "fear", "joy"] and labels.tolist() == [2, 1, 2, 0]


def test_probes_train_every_layer_at_once_and_independently():
    activations, labels, _ = planted(100, seed=0)
    together = fit_probes(activations, labels, steps=50)
    alone = fit_probes(activations[1:], labels, steps=50)
    assert torch.allclose(together.weight[1], alone.weight[0], atol=1e-5)


def test_a_value_probe_recovers_a_planted_linear_quantity():
    generator = torch.Generator().manual_seed(0)
    activations = torch.randn(2, 300, D_MODEL, generator=generator)
    values = torch.rand(300, generator=generator) * 10
    activations[1, :, 5] = values                              # layer 1 holds the value in dimension 5
    probes = fit_value_probes(activations[:, :200], values[:200], ridge=1.0)
    r2 = probes.r2(activations[:, 200:], values[200:])
    assert r2[1] > 0.95 and r2[0] < 0.2


def test_the_course_model_writes_a_numbers_value_on_a_line(course_model, course_tokenizer):
    """Ground truth: a ridge readout of the last layer at a number's last token, fitted on 40 of
    1 to 60 and measured on the other 20 (every third), explains over 90 % of their variance."""
    numbers = torch.arange(1, 61)
    activations = last_token_activations(course_model, course_tokenizer, [str(n) for n in numbers.tolist()])
    held_out = numbers % 3 == 0
    probes = fit_value_probes(activations[:, ~held_out], numbers[~held_out].float())
    assert probes.r2(activations[:, held_out], numbers[held_out].float())[-1] > 0.9


def story_sentiment(model, tokenizer, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    positive, negative = labelled_stories("positive", 200, seed=seed)
    labels = torch.tensor([1] * len(positive) + [0] * len(negative))
    return last_token_activations(model, tokenizer, positive + negative), labels


def test_the_course_model_writes_a_storys_sentiment_where_a_probe_reads_it_on_new_stories(
        course_model, course_tokenizer):
    """Ground truth: probes trained on 400 stories label 400 others right at every layer (> 0.9);
    the same probes trained on shuffled labels stay near chance (< 0.6)."""
    train, train_labels = story_sentiment(course_model, course_tokenizer, seed=0)
    test, test_labels = story_sentiment(course_model, course_tokenizer, seed=1)
    assert fit_probes(train, train_labels).accuracy(test, test_labels).min() > 0.9
    assert fit_probes(train, shuffled_labels(train_labels)).accuracy(test, test_labels).max() < 0.6


NAME_FRAMES = ("One day, {}", "The next morning {}", "After school, {}", "Later that day, {}")


def name_activations(model, tokenizer, names: dict[str, str]) -> tuple[torch.Tensor, list[str], list[str]]:
    """Each name at the end of each frame: activations, the names' genders, the names (the types)."""
    rows = [(frame.format(name), gender, name) for name, gender in names.items() for frame in NAME_FRAMES]
    texts, genders, types = map(list, zip(*rows))
    return last_token_activations(model, tokenizer, texts), genders, types


def test_a_names_gender_is_a_lookup_of_known_names_not_a_direction(course_model, course_tokenizer):
    """Ground truth: on the corpus's names a gender probe is right (> 0.85 at layers 0 to 2), but a
    control task (a random label per name) is fitted as well (within 0.05): the probe can read the
    name's identity, so its accuracy says nothing about gender. On held-out names, whose gender
    the model never saw, the gender probe stays under 0.7 at every layer."""
    train, genders, names = name_activations(course_model, course_tokenizer, ALL_NAMES)
    labels, classes = encode_labels(genders)
    probes = fit_probes(train, labels)
    accuracy = probes.accuracy(train, labels)
    control = control_labels(names, n_classes=2)
    control_accuracy = fit_probes(train, control).accuracy(train, control)
    assert accuracy[:3].min() > 0.85
    assert (accuracy - control_accuracy).max() < 0.05
    held_out, held_out_genders, _ = name_activations(course_model, course_tokenizer, HELDOUT_NAMES)
    held_out_labels = torch.tensor([classes.index(gender) for gender in held_out_genders])
    assert probes.accuracy(held_out, held_out_labels).max() < 0.7


# --------------------------------------------------------------------------------------------
# Bad input


def test_labels_must_match_the_rows():
    activations, labels, _ = planted(10, seed=0)
    with pytest.raises(ValueError, match=r"one label per row: 10 rows of activations but labels of shape \[9\]"):
        fit_probes(activations, labels[:9])


def test_a_probe_needs_two_classes():
    activations, _, _ = planted(10, seed=0)
    with pytest.raises(ValueError, match=r"at least two classes among the labels, got only \[0\]"):
        fit_probes(activations, torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="at least two classes"):
        control_labels(["a", "b"], n_classes=1)


def test_values_must_match_the_rows_and_the_ridge_be_positive():
    activations, _, _ = planted(10, seed=0)
    with pytest.raises(ValueError, match=r"one value per row: 10 rows of activations but values of shape \[3\]"):
        fit_value_probes(activations, torch.zeros(3))
    with pytest.raises(ValueError, match="ridge must be positive"):
        fit_value_probes(activations, torch.zeros(10), ridge=0.0)


def test_labels_must_be_class_indices():
    activations, labels, _ = planted(10, seed=0)
    with pytest.raises(ValueError, match="use encode_labels for strings"):
        fit_probes(activations, labels.float())


def test_activations_must_have_a_layer_dimension_and_match_the_probes(probes):
    activations, labels, _ = planted(10, seed=0)
    with pytest.raises(ValueError, match=r"for one layer use activations\[None\]"):
        fit_probes(activations[1], labels)
    with pytest.raises(ValueError, match="trained on 2 layers, the activations have 1"):
        probes.accuracy(activations[1:], labels)
    with pytest.raises(ValueError, match="read d_model=32, the activations have 16"):
        probes.predict(activations[..., :16])
