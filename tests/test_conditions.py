"""The condition evaluator: operators, paths, combinators, templates, and validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks_app.services import conditions

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=10,
)
predicates = st.fixed_dictionaries(
    {"path": st.sampled_from(["label", "value", "a.b", "0", ""]), "op": st.sampled_from(conditions.OPS)},
    optional={"value": json_values},
)
leaf = st.one_of(st.fixed_dictionaries({"on": st.sampled_from(["success", "failure", "always"])}), predicates)
conds = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.fixed_dictionaries({"all": st.lists(children, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"any": st.lists(children, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"not": children}),
    ),
    max_leaves=6,
)


def valid(cond) -> bool:
    errors: dict[str, str] = {}
    conditions.validate(cond, "when", errors)
    return not errors


@pytest.mark.parametrize(
    ("cond", "result", "expected"),
    [
        ({"path": "label", "op": "eq", "value": "high"}, {"label": "high"}, True),
        ({"path": "label", "op": "ne", "value": "high"}, {"label": "high"}, False),
        ({"path": "value", "op": "gt", "value": 50}, {"value": 70}, True),
        ({"path": "value", "op": "gte", "value": 70}, {"value": 70}, True),
        ({"path": "value", "op": "lt", "value": 50}, {"value": "70"}, False),
        ({"path": "value", "op": "lte", "value": 1}, {"value": 1}, True),
        ({"path": "label", "op": "in", "value": ["a", "b"]}, {"label": "b"}, True),
        ({"path": "tags", "op": "contains", "value": "x"}, {"tags": ["x", "y"]}, True),
        ({"path": "a.b.1", "op": "eq", "value": 3}, {"a": {"b": [2, 3]}}, True),
        ({"path": "missing", "op": "exists"}, {"label": 1}, False),
        ({"path": "label", "op": "exists"}, {"label": None}, True),
        ({"path": "flag", "op": "truthy"}, {"flag": []}, False),
        ({"path": "name", "op": "matches", "value": "^crm-\\d+$"}, {"name": "crm-42"}, True),
        ({"op": "eq", "value": 5}, 5, True),
        ({"template": "threshold", "params": {"path": "value", "min": 10, "max": 20}}, {"value": 15}, True),
        ({"template": "threshold", "params": {"path": "value", "min": 10}}, {"value": 5}, False),
        ({"template": "label_is", "params": {"value": "low"}}, {"label": "low"}, True),
        ({"template": "equals", "params": {"path": "x", "value": [1]}}, {"x": [1]}, True),
    ],
)
def test_predicates_on_a_successful_result(cond, result, expected):
    assert valid(cond)
    assert conditions.evaluate(cond, outcome="success", result=result) is expected


def test_outcome_conditions_and_predicates_after_a_failure():
    assert conditions.evaluate({"on": "failure"}, outcome="failure", result=None)
    assert not conditions.evaluate({"on": "success"}, outcome="failure", result=None)
    assert conditions.evaluate({"template": "always"}, outcome="failure", result=None)
    assert conditions.evaluate({"template": "on_failure_retry_path"}, outcome="failure", result=None)
    assert not conditions.evaluate({"path": "x", "op": "exists"}, outcome="failure", result={"x": 1})


@pytest.mark.parametrize(
    ("cond", "path"),
    [
        ({"on": "sometimes"}, "when"),
        ({"path": "x", "op": "like", "value": 1}, "when.op"),
        ({"path": "x", "op": "gt", "value": "ten"}, "when.value"),
        ({"path": "x", "op": "matches", "value": "("}, "when.value"),
        ({"template": "nope"}, "when.template"),
        ({"template": "threshold", "params": {}}, "when.params.path"),
        ({"all": []}, "when"),
        ({"all": [{"on": "success"}, {"op": "eq"}]}, "when.all[1].value"),
        ({"not": {"on": "success"}, "extra": 1}, "when"),
        ("__import__('os').system('true')", "when"),
    ],
)
def test_malformed_conditions_name_the_culprit(cond, path):
    errors: dict[str, str] = {}
    conditions.validate(cond, "when", errors)
    assert path in errors


@given(conds, json_values, st.sampled_from(["success", "failure"]))
def test_not_inverts(cond, result, outcome):
    if valid(cond):
        assert conditions.evaluate({"not": cond}, outcome=outcome, result=result) is not conditions.evaluate(
            cond, outcome=outcome, result=result)


@given(conds, json_values, st.sampled_from(["success", "failure"]))
def test_all_or_any_of_one_is_that_one(cond, result, outcome):
    if valid(cond):
        one = conditions.evaluate(cond, outcome=outcome, result=result)
        assert conditions.evaluate({"all": [cond]}, outcome=outcome, result=result) is one
        assert conditions.evaluate({"any": [cond]}, outcome=outcome, result=result) is one


@given(json_values)
def test_no_input_makes_validation_raise(anything):
    errors: dict[str, str] = {}
    conditions.validate(anything, "when", errors)  # never raises; reports instead
    if valid(anything):
        conditions.evaluate(anything, outcome="success", result=anything)
