"""docs/middleware.md is run: its code blocks, in order, in one namespace (each asserts what
the page says it shows)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "middleware.md"


def test_the_middleware_page_runs_as_written() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 3
    namespace: dict[str, object] = {"__name__": "middleware_doc"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # our own docs
    audit = namespace["audit"]
    assert audit.lines[-1] == "run completed"  # type: ignore[attr-defined]
