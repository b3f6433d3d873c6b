"""docs/testing.md shows tests/testing/test_docs_example.py verbatim, so the worked example
in the docs is a test that runs in CI and cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_worked_example_in_the_docs_is_the_tested_file() -> None:
    doc = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    example = (ROOT / "tests" / "testing" / "test_docs_example.py").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    assert example in blocks, (
        "docs/testing.md must show tests/testing/test_docs_example.py verbatim in a ```python "
        "block; copy the file into the doc after changing either")
