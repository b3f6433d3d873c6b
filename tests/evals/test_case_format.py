"""The dataset case's file form: every malformed field is refused with the case, the file and
the line named, and a valid case round-trips through ``to_dict``/``from_dict``."""

from __future__ import annotations

from typing import Any

import pytest

from keel.evals import Case, CaseResult, DatasetError, Report, Score

_OK: dict[str, Any] = {"id": "c1", "input": "Where is order 12?"}


@pytest.mark.parametrize(("change", "needle"), [
    ({"input": [{"role": "assistant", "content": "hi"}]}, "no user message"),
    ({"input": [{"role": "robot", "content": "hi"}]}, "input message 0"),
    ({"input": [{"role": "user", "content": 3}]}, "input message 0"),
    ({"input": []}, "'input' must be a message"),
    ({"input": 7}, "'input' must be a message"),
    ({"weight": 0}, "'weight' must be a positive number"),
    ({"weight": True}, "'weight' must be a positive number"),
    ({"tags": ["ok", ""]}, "'tags' must be a list of text"),
    ({"metadata": []}, "'metadata' must be an object"),
    ({"expect": []}, "'expect' must be an object"),
    ({"expect": {"surprise": 1}}, "unknown expect field"),
    ({"expect": {"tools": {"name": "x"}}}, "expect.tools must be a list"),
    ({"expect": {"tools": [{"args": {}}]}}, "expect.tools entries"),
    ({"expect": {"tools": [{"name": "x", "args": {"a": {"$near": 1}}}]}}, "one operator"),
    ({"expect": {"tools": [{"name": "x", "args": {"a": {"$lt": 1, "$gt": 0}}}]}},
     "one operator"),
    ({"expect": {"forbid_tools": "refund"}}, "forbid_tools must be a list"),
    ({"expect": {"escalate": "yes"}}, "expect.escalate must be true or false"),
    ({"expect": {"output_schema": "object"}}, "output_schema must be a JSON Schema"),
    ({"expect": {"ordered": 1}}, "expect.ordered must be true or false"),
    ({"id": ""}, "every case needs an 'id'"),
    ({"id": True}, "every case needs an 'id'"),
    ({"id": "x" * 201}, "every case needs an 'id'"),
    ({"extra": 1}, "unknown case field"),
])
def test_malformed_cases_name_the_file_line_and_fix(change: dict[str, Any], needle: str) -> None:
    with pytest.raises(DatasetError, match=needle) as info:
        Case.from_dict({**_OK, **change}, source="cases.jsonl", line=9)
    assert str(info.value).startswith("cases.jsonl:9: ")
    assert (info.value.source, info.value.line) == ("cases.jsonl", 9)


def test_a_case_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(DatasetError, match="a case is a JSON object, not list"):
        Case.from_dict([1, 2])


def test_a_full_case_round_trips_and_lists_its_turns() -> None:
    raw = {"id": 42, "input": [{"role": "system", "content": "be brief"},
                               {"role": "user", "content": "hi"},
                               {"role": "assistant", "content": "hello"},
                               {"role": "user", "content": "refund order 7"}],
           "expected": {"refunded": True},
           "expect": {"tools": ["refund"], "forbid_tools": ["delete"], "ordered": True,
                      "escalate": False, "approval": True, "refuse": False,
                      "output_schema": {"type": "object"}},
           "tags": ["billing"], "weight": 2, "metadata": {"from": "run-1"}}
    case = Case.from_dict(raw)
    assert case.id == "42" and case.turns == ["hi", "refund order 7"]
    again = Case.from_dict(case.to_dict())
    assert again == case and again.fingerprint() == case.fingerprint()
    assert Case.from_dict(_OK).turns == ["Where is order 12?"]
    assert Case.from_dict(_OK).fingerprint() != case.fingerprint()


def test_report_case_values_leave_out_errors_and_non_finite_values() -> None:
    def result(cid: str, value: float | None) -> CaseResult:
        return CaseResult(case_id=cid, input="x", output="y", status="completed",
                          scores=(Score(name="m", value=value, passed=value is not None),))

    report = Report(subject={"name": "a"}, dataset={"name": "d", "hash": "h"},
                    cases=(result("a", 0.5), result("b", None), result("c", float("nan")),
                           result("d", 1.0)), metrics={})
    assert report.case_values("m") == {"a": 0.5, "d": 1.0}
    assert report.case_values("other") == {}
