"""Datasets: JSONL and YAML files, the hash, selection, and every malformed file named with
its line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from keel.evals import Case, Dataset, DatasetError, load_dataset
from keel.evals import _dataset as dataset_module

CASES = [{"id": "a", "input": "What is 2 plus 2?", "expected": "4", "tags": ["math"]},
         {"id": "b", "input": "Where is order 7?", "tags": ["orders"],
          "expect": {"tools": [{"name": "lookup", "args": {"order": {"$eq": "7"}}}]}},
         {"id": "c", "input": [{"role": "user", "content": "hi"},
                               {"role": "user", "content": "refund me"}],
          "expect": {"approval": True}, "weight": 2}]


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def jsonl(rows: list[object]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_jsonl_skips_blank_and_comment_lines_and_keeps_order(tmp_path: Path) -> None:
    text = "# my dataset\n\n" + jsonl(CASES[:2]) + "   \n# end\n" + jsonl(CASES[2:])
    ds = load_dataset(write(tmp_path, "support.jsonl", text))
    assert ds.name == "support"
    assert [c.id for c in ds.cases] == ["a", "b", "c"]
    assert ds.cases[2].turns == ["hi", "refund me"] and ds.cases[2].weight == 2.0
    assert ds.cases[1].expect.tools[0].args == {"order": {"$eq": "7"}}


def test_yaml_reads_the_same_cases_with_the_same_hash(tmp_path: Path) -> None:
    import yaml

    from_yaml = load_dataset(write(tmp_path, "d.yaml", yaml.safe_dump(CASES)))
    from_jsonl = load_dataset(write(tmp_path, "d.jsonl", jsonl(CASES)))
    assert from_yaml.cases == from_jsonl.cases
    assert from_yaml.hash == from_jsonl.hash


def test_hash_follows_content_and_order(tmp_path: Path) -> None:
    one = Dataset.from_cases("x", CASES)
    assert Dataset.from_cases("y", CASES).hash == one.hash  # the name is not content
    assert Dataset.from_cases("x", list(reversed(CASES))).hash != one.hash
    changed = [{**CASES[0], "expected": "5"}, *CASES[1:]]
    assert Dataset.from_cases("x", changed).hash != one.hash
    assert len(one.hash) == 64


def test_save_jsonl_round_trips(tmp_path: Path) -> None:
    ds = Dataset.from_cases("rt", CASES)
    back = load_dataset(ds.save_jsonl(tmp_path / "rt.jsonl"))
    assert back.cases == ds.cases and back.hash == ds.hash


def test_select_by_tags_and_ids() -> None:
    ds = Dataset.from_cases("s", CASES)
    assert [c.id for c in ds.select(tags=["math", "orders"]).cases] == ["a", "b"]
    picked = ds.select(ids=["c", "a"])
    assert [c.id for c in picked.cases] == ["a", "c"] and picked.hash != ds.hash
    assert [c.id for c in ds.select(tags=["orders"], ids=["a", "b"]).cases] == ["b"]
    with pytest.raises(DatasetError, match="no case of dataset 's' has tag"):
        ds.select(tags=["nothing"])
    with pytest.raises(DatasetError, match="no case with id 'zz'"):
        ds.select(ids=["zz"])
    with pytest.raises(DatasetError, match="takes lists"):
        ds.select(tags="math")  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "line", "needle"), [
    ('{"id": "a", "input": "x"}\n{"id": "b", "input": \n', 2, "not valid JSON"),
    ('{"id": "a", "input": "x"}\n\n[1, 2]\n', 3, "a case is an object"),
    ('{"id": "a", "input": "x"}\n"text"\n', 2, "not a string"),
    ('# c\n{"id": "a"}\n', 2, "'input' must be a message"),
    ('{"id": "a", "input": "x", "wieght": 2}\n', 1, "unknown case field"),
    ('{"id": "a", "input": "x", "expect": {"tools": [{"name": "t", "args": {"n": '
     '{"$near": 1}}}]}}\n', 1, "must have one operator"),
    ('{"id": "a", "input": "x"}\n{"id": "b", "input": "y"}\n{"id": "a", "input": "z"}\n', 3,
     "duplicate case id 'a': first at 1, again at 3"),
])
def test_malformed_jsonl_names_the_file_and_line(tmp_path: Path, text: str, line: int,
                                                 needle: str) -> None:
    path = write(tmp_path, "bad.jsonl", text)
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert info.value.source == str(path) and info.value.line == line
    assert f"{path}:{line}: " in str(info.value) and needle in str(info.value)


def test_yaml_errors_name_the_item_or_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"d\.yaml:2: .*'input'") as info:
        load_dataset(write(tmp_path, "d.yaml", "- {id: a, input: x}\n- {id: b}\n"))
    assert info.value.line == 2
    with pytest.raises(DatasetError, match=r"d2\.yml:3: not valid YAML"):
        load_dataset(write(tmp_path, "d2.yml", "- id: a\n  input: x\n - broken: [\n"))
    with pytest.raises(DatasetError, match="a YAML dataset is a list of case objects"):
        load_dataset(write(tmp_path, "d3.yaml", "id: a\ninput: x\n"))


@pytest.mark.parametrize(("name", "text", "needle"), [
    ("empty.jsonl", "# nothing here\n\n", "has no cases"),
    ("empty.yaml", "", "has no cases"),
    ("data.json", "[]", "a dataset file is .jsonl, .yaml or .yml, not '.json'"),
])
def test_empty_or_wrong_kind_of_file(tmp_path: Path, name: str, text: str,
                                     needle: str) -> None:
    with pytest.raises(DatasetError, match=needle):
        load_dataset(write(tmp_path, name, text))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope\.jsonl: no such file"):
        load_dataset(tmp_path / "nope.jsonl")
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(DatasetError, match="not a file"):
        load_dataset(tmp_path / "dir.jsonl")


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "latin.jsonl", b'{"id": "a", "input": "x"}\n{"id": "b", '
                                          b'"input": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r"latin\.jsonl:2: not UTF-8") as info:
        load_dataset(path)
    assert info.value.line == 2


def test_oversized_line_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    huge = json.dumps({"id": "big", "input": "x" * (1024 * 1024 + 10)})
    path = write(tmp_path, "big.jsonl", jsonl(CASES[:1]) + huge + "\n")
    with pytest.raises(DatasetError, match=r"big\.jsonl:2: the line is 1,048,6\d\d bytes; a "
                                           r"case line has at most 1,048,576"):
        load_dataset(path)
    monkeypatch.setattr(dataset_module, "MAX_FILE_BYTES", 100)
    with pytest.raises(DatasetError, match="a dataset file has at most 100"):
        load_dataset(write(tmp_path, "ok.jsonl", jsonl(CASES)))


def test_hostile_nesting_is_a_dataset_error(tmp_path: Path) -> None:
    deep = '{"id": "a", "input": "x", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(DatasetError, match=r"deep\.jsonl:1: "):
        load_dataset(write(tmp_path, "deep.jsonl", deep + "\n"))


def test_yaml_without_pyyaml_names_the_extra(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now raises ImportError
    with pytest.raises(DatasetError, match=r"pip install 'keel-agents\[evals\]'"):
        load_dataset(write(tmp_path, "d.yaml", "- {id: a, input: x}\n"))


def test_from_cases_checks_like_a_file() -> None:
    with pytest.raises(DatasetError, match=r"<cases>:2: .*'id'"):
        Dataset.from_cases("x", [CASES[0], {"input": "no id"}])
    with pytest.raises(DatasetError, match="duplicate case id 'a' \\(case 1 and case 2\\)"):
        Dataset.from_cases("x", [CASES[0], Case.from_dict(CASES[0])])
    with pytest.raises(DatasetError, match="has no cases"):
        Dataset.from_cases("x", [])
    with pytest.raises(DatasetError, match="needs a name"):
        Dataset.from_cases("", CASES)


def test_yaml_aliases_are_refused(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    with pytest.raises(DatasetError, match=r"bomb\.yaml:2: not valid YAML \(aliases"):
        load_dataset(write(tmp_path, "bomb.yaml", bomb))
