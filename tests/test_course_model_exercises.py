"""Chapter 0 checkers: each accepts the reference and rejects typical wrong answers with a useful message."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from utils.checkers import course_model as checkers
from utils.checks import assert_accepts, assert_rejects
from utils.course_model import exercises


# Exercise 0.1 ---------------------------------------------------------------------------------

def loss_without_shift(logits, tokens):
    return -logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def loss_with_wrong_sign(logits, tokens):
    return logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)


def loss_of_probabilities(logits, tokens):
    return -logits[:, :-1].softmax(-1).gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)


def loss_shifted_the_wrong_way(logits, tokens):
    return -logits[:, 1:].log_softmax(-1).gather(-1, tokens[:, :-1].unsqueeze(-1)).squeeze(-1)


def test_per_token_loss_checker_accepts_the_reference():
    assert_accepts(checkers.check_per_token_loss(exercises.per_token_loss))


def test_per_token_loss_checker_accepts_an_equivalent_formulation():
    def with_cross_entropy(logits, tokens):
        return F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")

    assert_accepts(checkers.check_per_token_loss(with_cross_entropy))


@pytest.mark.parametrize(("wrong", "message"), [
    (loss_without_shift, r"input 'batch of 3.*expected shape \(3, 7\), got \(3, 8\)"),
    (loss_with_wrong_sign, r"input 'batch of 3.*first difference"),
    (loss_of_probabilities, r"first difference"),
    (loss_shifted_the_wrong_way, r"first difference"),
])
def test_per_token_loss_checker_rejects(wrong, message):
    assert_rejects(checkers.check_per_token_loss(wrong), match=message)


# Exercise 0.2 ---------------------------------------------------------------------------------

def difference_at_first_position(logits, correct, wrong):
    rows = torch.arange(logits.shape[0])
    return logits[rows, 0, correct] - logits[rows, 0, wrong]


def difference_with_wrong_sign(logits, correct, wrong):
    rows = torch.arange(logits.shape[0])
    return logits[rows, -1, wrong] - logits[rows, -1, correct]


def difference_of_probabilities(logits, correct, wrong):
    probs = logits[:, -1].softmax(-1)
    rows = torch.arange(logits.shape[0])
    return probs[rows, correct] - probs[rows, wrong]


def difference_of_whole_matrix(logits, correct, wrong):
    return logits[:, -1, correct] - logits[:, -1, wrong]  # [batch, batch]: every row with every token


def test_logit_difference_checker_accepts_the_reference_and_log_probabilities():
    assert_accepts(checkers.check_logit_difference(exercises.logit_difference))

    def of_log_probabilities(logits, correct, wrong):  # the normaliser cancels: the same numbers
        return exercises.logit_difference(logits.log_softmax(-1), correct, wrong)

    assert_accepts(checkers.check_logit_difference(of_log_probabilities))


@pytest.mark.parametrize(("wrong", "message"), [
    (difference_at_first_position, r"input 'batch of 4.*first difference"),
    (difference_with_wrong_sign, r"first difference"),
    (difference_of_probabilities, r"first difference"),
    (difference_of_whole_matrix, r"expected shape \(4,\), got \(4, 4\)"),
])
def test_logit_difference_checker_rejects(wrong, message):
    assert_rejects(checkers.check_logit_difference(wrong), match=message)


# Exercise 0.3 ---------------------------------------------------------------------------------

def logits_without_norm(model, residual):
    from utils import architecture

    return architecture.unembedding(model)(residual)


def logits_with_unweighted_norm(model, residual):
    from utils import architecture

    return architecture.unembedding(model)(F.layer_norm(residual, residual.shape[-1:]))


def logits_with_gpt2_paths(model, residual):
    return model.lm_head(model.transformer.ln_f(residual))


def test_final_residual_checker_accepts_the_reference(course_model):
    assert_accepts(checkers.check_logits_from_final_residual(exercises.logits_from_final_residual, course_model))


@pytest.mark.parametrize(("wrong", "message"), [
    (logits_without_norm, r"input 'your model, batch of 2'.*first difference"),
    (logits_with_unweighted_norm, r"first difference"),
    (logits_with_gpt2_paths, r"input 'tiny random Pythia \(GPT-NeoX\)'.*AttributeError"),
])
def test_final_residual_checker_rejects(course_model, wrong, message):
    assert_rejects(checkers.check_logits_from_final_residual(wrong, course_model), match=message)


def test_final_residual_stream_is_before_the_final_norm(course_model):
    tokens = torch.tensor([[0, 10, 20, 30]])
    residual = exercises.final_residual_stream(course_model, tokens)
    with torch.no_grad():
        logits = course_model(tokens).logits
    torch.testing.assert_close(exercises.logits_from_final_residual(course_model, residual), logits)
