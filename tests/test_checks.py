"""The checks framework (utils/checks.py): what a learner sees when an exercise is right or wrong.

The reference is a softmax; the wrong answers are the ones learners write (softmax over the wrong
dim, forgetting to normalise, dropping a dimension, returning a list).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from utils.checks import (
    Case,
    CheckResult,
    HasCase,
    RaisingCase,
    Varies,
    assert_accepts,
    assert_rejects,
    check_function,
    check_value,
    compare,
    depends_on,
)

HINT = "divide exp(x) by its sum along dim"


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.softmax(x, dim=dim)


def softmax_over_wrong_dim(x, dim=-1):
    return torch.softmax(x, dim=0)


def softmax_not_normalised(x, dim=-1):
    return (x - x.amax(dim=dim, keepdim=True)).exp()


def softmax_without_keepdim(x, dim=-1):
    return x.exp().sum(dim=dim)


def softmax_in_place(x, dim=-1):
    result = torch.softmax(x, dim=dim)
    x.zero_()  # vandalises its input: the reference must not see it
    return result


def cases() -> list[Case]:
    generator = torch.Generator().manual_seed(0)
    return [
        Case("batch of 1", torch.randn(1, 7, generator=generator)),
        Case("batch of 3", torch.randn(3, 5, generator=generator)),
        Case("along dim 0", torch.randn(4, 2, generator=generator), dim=0),
    ]


def check_softmax(learner_fn, **kwargs) -> CheckResult:
    return check_function(learner_fn, softmax, cases(), exercise="0.1 (softmax)", hint=HINT, **kwargs)


# --------------------------------------------------------------------------------------------
# check_function


def test_accepts_the_reference_and_prints_one_line(capsys):
    result = check_softmax(softmax)
    assert_accepts(result)
    assert bool(result) is True
    assert capsys.readouterr().out == "✅ Exercise 0.1 (softmax): passed on 3 inputs\n"
    assert result.exercise_id == "0.1" and result.message == "passed on 3 inputs"


def test_accepts_an_equivalent_implementation():
    def by_hand(x, dim=-1):
        exps = (x - x.amax(dim=dim, keepdim=True)).exp()
        return exps / exps.sum(dim=dim, keepdim=True)

    assert_accepts(check_softmax(by_hand))


def test_rejects_softmax_over_the_wrong_dim(capsys):
    result = check_softmax(softmax_over_wrong_dim)
    # over dim 0, a batch of 1 is all ones: the first case already fails
    assert_rejects(result, r"^input 'batch of 1': first difference at index \(0, 0\): expected 0\.\d{4}, got 1\.0000; "
                           r"max abs diff [\d.]+ \(7 of 7 values differ\)\. Hint: divide exp")
    line = capsys.readouterr().out
    assert line.startswith("❌ Exercise 0.1 (softmax): input 'batch of 1': first difference")
    assert line.count("\n") == 1


def test_rejects_a_missing_normalisation():
    assert_rejects(check_softmax(softmax_not_normalised), r"input 'batch of 1': first difference at index \(0, \d\)")


def test_rejects_a_wrong_shape_before_comparing_values():
    assert_rejects(check_softmax(softmax_without_keepdim), r"input 'batch of 1': expected shape \(1, 7\), got \(1,\)")


def test_rejects_a_list_instead_of_a_tensor():
    result = check_softmax(lambda x, dim=-1: torch.softmax(x, dim=dim).tolist())
    assert_rejects(result, r"expected a tensor of shape \(1, 7\), got a list of length 1")


def test_reports_an_exception_in_the_learner_function_without_traceback(capsys):
    def broken(x, dim=-1):
        raise ValueError("bad\nthing")

    result = check_softmax(broken)
    assert_rejects(result, r"^input 'batch of 1': your function raised ValueError: bad thing\. Hint: ")
    output = capsys.readouterr().out
    assert output.count("\n") == 1 and "Traceback" not in output


def test_not_implemented_error_propagates_and_prints_nothing(capsys):
    def unfinished(x, dim=-1):
        raise NotImplementedError("Exercise 0.1: write this function, then run the check below")

    with pytest.raises(NotImplementedError, match="Exercise 0.1"):
        check_softmax(unfinished)
    assert capsys.readouterr().out == ""


def test_an_in_place_edit_of_any_tensor_argument_is_named_and_never_reaches_the_reference():
    assert_rejects(check_softmax(softmax_in_place), r"input 'batch of 1': your function changed its argument 'x' in place")
    assert_accepts(check_softmax(softmax_in_place, mutable=("x",)))  # allowed: the reference saw a clean copy

    def second_argument_edited(x, weights):
        weights.add_(1)
        return x * 2
    edited = [Case("weights", torch.ones(2), torch.zeros(2)), Case("in a list", torch.ones(2), [torch.zeros(2)])]
    reference = lambda x, weights: x * 2  # noqa: E731
    assert_rejects(check_function(second_argument_edited, reference, edited[:1], exercise="0.2", hint=HINT),
                   r"changed its argument 'weights' in place.*x = x\.clone\(\)")
    assert_rejects(check_function(lambda x, w: second_argument_edited(x, w[0]), reference, edited[1:],
                                  exercise="0.2", hint=HINT), r"argument 'weights\[0\]' in place")
    assert_rejects(check_function(lambda x, w: w.append(x) or x * 2, reference, edited[1:], exercise="0.2", hint=HINT),
                   r"changed its argument 'weights' in place \(it added or removed items\)")
    advice = {"weights": "the weights belong to the model: copy them first"}
    assert_rejects(check_function(second_argument_edited, reference, edited[:1], exercise="0.2", hint=HINT,
                                  in_place_advice=advice),
                   r"changed its argument 'weights' in place: the weights belong to the model: copy them first\. Hint")


def test_a_module_argument_must_keep_its_weights_hooks_and_mode():
    def forward(model, x):
        return model(x)

    def leaves_a_hook(model, x):
        model.register_forward_hook(lambda module, inputs, output: None)
        return model(x)

    def scales_weights(model, x):
        with torch.no_grad():
            model.weight.mul_(1.0)
        return model(x)

    def switches_to_training(model, x):
        model.train()
        return model(x)

    for wrong, match in [(leaves_a_hook, "left a hook on its argument 'model'.*try/finally"),
                         (scales_weights, "changed the weights of its argument 'model'"),
                         (switches_to_training, "changed the training mode of its argument 'model'")]:
        model = torch.nn.Linear(3, 3).eval()
        assert_rejects(check_function(wrong, forward, [Case("linear", model, torch.ones(2, 3))],
                                      exercise="0.3", hint=HINT), match)
    assert_accepts(check_function(forward, forward, [Case("linear", torch.nn.Linear(3, 3).eval(), torch.ones(2, 3))],
                                  exercise="0.3", hint=HINT))


def test_both_functions_get_the_same_seed_and_the_callers_random_state_is_kept():
    def sample(probs):
        return torch.multinomial(probs, 5, replacement=True)

    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    result = check_function(sample, sample, [Case("uniform", torch.ones(2, 10))], exercise="0.2", hint="")
    assert_accepts(result)
    assert torch.equal(torch.rand(3), before), "the check changed the notebook's random state"


def test_a_bare_exercise_number_gets_the_function_name(capsys):
    check_function(softmax, softmax, cases()[:1], exercise="0.1", hint=HINT)
    assert capsys.readouterr().out == "✅ Exercise 0.1 (softmax): passed on 1 input\n"


def test_an_exercise_without_a_number_is_a_course_bug():
    with pytest.raises(ValueError, match="must start with its number N.M"):
        check_function(softmax, softmax, cases(), exercise="softmax", hint=HINT)


def test_a_failing_reference_is_reported_as_a_course_bug():
    with pytest.raises(RuntimeError, match="reference solution .* failed on input 'batch of 1'.*bug in the course"):
        check_function(softmax, lambda x, dim=-1: 1 / 0, cases(), exercise="0.1", hint=HINT)


def test_passing_the_result_instead_of_the_function(capsys):
    result = check_softmax(softmax(torch.ones(2)))
    assert_rejects(result, r"expected a function, got a tensor of shape \(2,\)")


# --------------------------------------------------------------------------------------------
# compare: tensors, numbers, containers


def test_float_tensors_are_compared_whatever_their_precision():
    x = torch.randn(3, 4)
    assert compare(x.double(), x) is None
    assert compare(x.half(), x, atol=1e-2, rtol=1e-2) is None


def test_integer_and_bool_tensors_are_compared_exactly():
    assert compare(torch.tensor([1, 2, 3], dtype=torch.int32), torch.tensor([1, 2, 3])) is None
    assert compare(torch.tensor([1, 2, 4]), torch.tensor([1, 2, 3])) == (
        "first difference at index (2,): expected 3, got 4 (1 of 3 values differ)")
    assert compare(torch.tensor([1.0, 2.0]), torch.tensor([1, 2])) == (
        "expected an integer tensor (dtype torch.int64), got dtype torch.float32")
    assert compare(torch.tensor([1, 0]), torch.tensor([True, False])).startswith("expected a bool tensor")


def test_value_mismatch_names_the_first_difference_only():
    expected = torch.tensor([[1.0, 2.0], [3.0, 2.312]])
    got = torch.tensor([[1.0, 2.0], [3.0, 2.1]])
    assert compare(got, expected) == (
        "first difference at index (1, 1): expected 2.3120, got 2.1000; max abs diff 0.212 (1 of 4 values differ)")


def test_nan_where_nan_is_expected_is_fine():
    assert compare(torch.tensor([float("nan"), 1.0]), torch.tensor([float("nan"), 1.0])) is None
    assert "expected 1.0000, got nan" in compare(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 1.0]))


def test_nested_outputs_name_the_path():
    expected = (torch.ones(2), {"loss": 1.5, "tokens": ["a", "b"]})
    assert compare((torch.ones(2), {"loss": 1.5, "tokens": ["a", "b"]}), expected) is None
    assert compare((torch.ones(2), {"loss": 1.6, "tokens": ["a", "b"]}), expected) == (
        "output[1]['loss']: expected 1.5000, got 1.6000")
    assert compare((torch.ones(2), {"loss": 1.5, "tokens": ["a", "c"]}), expected) == (
        "output[1]['tokens'][1]: expected 'b', got 'c'")
    assert compare((torch.ones(3), {}), expected) == "output[0]: expected shape (2,), got (3,)"
    assert compare((torch.ones(2), {"loss": 1.5}), expected) == "output[1]: missing key 'tokens'"
    assert compare([torch.ones(2)], expected) == "expected a tuple of length 2, got length 1"


def test_numbers_bools_and_strings():
    assert compare(0.30000001, 0.3) is None
    assert compare(3, 3.0) is None
    assert compare(0.31, 0.3) == "expected 0.3000, got 0.3100"
    assert compare(torch.tensor(0.3), 0.3).startswith("expected a Python number, got a tensor of shape (): use .item()")
    assert compare(1, True) == "expected a bool (True or False), got an int"
    assert compare(False, True) == "expected True, got False"
    assert compare(" Paris", " Paris") is None
    assert compare(" Pari", " Paris") == "expected ' Paris', got ' Pari'"
    long_expected = "x" * 70 + "tail"
    assert compare("x" * 70 + "tall", long_expected).startswith("strings differ from character 72")


# --------------------------------------------------------------------------------------------
# check_value, the display


def test_check_value(capsys):
    assert_accepts(check_value(2, 2, exercise="0.3 (top_class)", hint="argmax"))
    result = check_value(1, 2, exercise="0.3 (top_class)", hint="argmax")
    assert_rejects(result, r"^expected 2, got 1\. Hint: argmax$")
    assert capsys.readouterr().out.splitlines() == [
        "✅ Exercise 0.3 (top_class): correct", "❌ Exercise 0.3 (top_class): expected 2, got 1. Hint: argmax"]
    with pytest.raises(NotImplementedError, match="Exercise 0.3: replace ..."):
        check_value(..., 2, exercise="0.3", hint="")


def test_a_check_result_displays_nothing_in_jupyter():
    from IPython.core.formatters import DisplayFormatter

    result = CheckResult("0.1 (softmax)", True, "passed on 3 inputs")
    assert DisplayFormatter().format(result) == ({}, {})
    assert result._ipython_display_() is None
    assert str(result) == "✅ Exercise 0.1 (softmax): passed on 3 inputs"


def test_the_test_helpers_fail_loudly():
    with pytest.raises(AssertionError, match="rejected a correct answer"):
        assert_accepts(CheckResult("0.1", False, "nope"))
    with pytest.raises(AssertionError, match="accepted a wrong answer"):
        assert_rejects(CheckResult("0.1", True, "passed"), match="anything")
    with pytest.raises(AssertionError, match="does not match"):
        assert_rejects(CheckResult("0.1", False, "expected shape (1,)"), match="first difference")


def test_case_needs_a_name_and_keeps_its_arguments():
    case = Case("odd length 7", 1, 2, dim=0, name="kwarg named name is fine")
    assert (case.name, case.args, case.kwargs) == ("odd length 7", (1, 2), {"dim": 0, "name": "kwarg named name is fine"})
    with pytest.raises(TypeError, match="needs a name"):
        Case(torch.ones(2))


def test_a_function_that_hangs_is_stopped_with_one_line(capsys):
    def endless(x, dim=-1):
        while True:
            pass

    result = check_function(endless, softmax, cases(), exercise="0.1 (softmax)", hint=HINT, time_limit=0.3)
    assert_rejects(result, r"input 'batch of 1': your function ran for more than 0.3 s and was stopped")
    assert capsys.readouterr().out.count("\n") == 1


def test_a_numpy_array_or_a_tensor_elsewhere_is_named_not_compared():
    assert_rejects(check_softmax(lambda x, dim=-1: torch.softmax(x, dim=dim).numpy()),
                   r"expected a torch tensor of shape \(1, 7\), got a numpy array.*torch.from_numpy")
    assert compare(torch.zeros(2, device="meta"), torch.zeros(2)).startswith("expected a tensor on cpu, got one on meta")


def scale(x, factor=2.0):
    return x * factor


def test_declared_properties_of_the_cases_are_verified_on_the_reference():
    cases = [Case("a batch of 3", torch.ones(3, 2), factor=3.0)]
    ignores_factor = Varies("factor", lambda factor: 2.0, "ignores factor")
    assert_accepts(check_function(scale, scale, cases, exercise="0.4", hint=HINT,
                                  properties=[ignores_factor, HasCase("a batch of 3", lambda c: len(c.args[0]) == 3)]))
    with pytest.raises(RuntimeError, match=r"Exercise 0\.4 lack a property it declares: some case is a batch of 1\."):
        check_function(scale, scale, cases, exercise="0.4", hint=HINT,
                       properties=[HasCase("a batch of 1", lambda c: len(c.args[0]) == 1)])
    with pytest.raises(RuntimeError, match=r"an answer that ignores factor gives another answer on some case"):
        check_function(scale, scale, [Case("the default factor", torch.ones(3, 2))], exercise="0.5", hint=HINT,
                       properties=[ignores_factor])


def test_a_raising_case_needs_an_exception_and_unchanged_arguments():
    def reference(model, x):
        handle = model.register_forward_hook(lambda *args: None)
        try:
            return model(x)
        finally:
            handle.remove()

    def no_finally(model, x):
        handle = model.register_forward_hook(lambda *args: None)
        output = model(x)
        handle.remove()
        return output

    model = torch.nn.Linear(2, 2)
    cases = [Case("a batch of 2", model, torch.ones(2, 2)), RaisingCase("a wrong width", model, torch.ones(2, 3))]
    assert_accepts(check_function(reference, reference, cases, exercise="0.6", hint=HINT))
    assert_rejects(check_function(no_finally, reference, cases, exercise="0.6", hint=HINT),
                   r"input 'a wrong width': when it raised RuntimeError.*left a hook on its argument 'model'")
    assert not model._forward_hooks, "the checker removes the hook the learner left"
    assert_rejects(check_function(lambda model, x: x, reference, cases[1:], exercise="0.6", hint=HINT),
                   r"input 'a wrong width': your function returned a tensor.*but on this input it must raise")



def test_a_raising_case_can_ask_for_one_class_of_error():
    def reference(rows):
        if not rows:
            raise ValueError("no rows given")
        return rows[0]

    cases = [Case("two rows", [1, 2]), RaisingCase("no rows", [], raises=ValueError)]
    assert_accepts(check_function(reference, reference, cases, exercise="0.6", hint=HINT))
    assert_rejects(check_function(lambda rows: rows[0], reference, cases, exercise="0.6", hint=HINT),
                   r"input 'no rows': your function raised IndexError.*must raise a ValueError that says what is wrong")


def test_dataclasses_are_compared_field_by_field():
    @dataclasses.dataclass
    class Pair:
        ids: torch.Tensor
        label: str

    assert compare(Pair(torch.tensor([1, 2]), "a"), Pair(torch.tensor([1, 2]), "a")) is None
    assert "output['ids']" in compare(Pair(torch.tensor([1, 3]), "a"), Pair(torch.tensor([1, 2]), "a"), path="output")
    assert compare({"ids": torch.tensor([1, 2]), "label": "a"}, Pair(torch.tensor([1, 2]), "a")) == \
        "expected a Pair, got a dict"

def test_a_cell_that_runs_the_learners_code_names_the_exercises_that_have_not_passed(capsys):
    check_function(lambda x: x + 1, lambda x: x + 1, [Case("one", torch.ones(2))], exercise="8.1 (plus one)", hint="")
    check_function(lambda x: x, lambda x: x + 1, [Case("one", torch.ones(2))], exercise="8.2 (plus one)", hint="add 1")
    capsys.readouterr()
    assert depends_on("8.1")
    assert capsys.readouterr().out == ""                                   # all passed: nothing printed
    assert not depends_on("8.1", "8.2", "8.3")
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and "Exercise 8.2 failed its checker; Exercise 8.3 has not been checked" in line
    with pytest.raises(ValueError, match="must start with its number N.M"):
        depends_on("first")
