"""The pattern cases of :mod:`bench.bench_patterns`: each pattern's example (``examples/``),
run on its own scripted models. The examples are the documented use of each pattern, and
they exercise its decisions (a plan and its revisions, rounds of critique, gates and
branches, a route, delegations, handoffs, turns of a chat, bids and awards)."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

from bench.bench_patterns import Case

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: (example, what its scripted work is)
PATTERNS = [
    ("planning", "a 4-step plan: a wave of 3 steps, one failing once and retried, a synthesizer"),
    ("reflection", "two rounds of draft and critique (predicates, schema, a judge)"),
    ("workflow", "a typed pipeline with a gate, a branch and an agent step"),
    ("routing", "a hybrid route decision (rules, then wordllama kNN), then the specialist"),
    ("supervisor", "a lead delegating to two workers concurrently, then synthesizing"),
    ("handoff", "triage hands the conversation to billing, which refunds"),
    ("group_chat", "three peers, round robin, until a keyword"),
    ("marketplace", "three bids, one discarded, the best failing verification, the next winning"),
]


def _example(name: str) -> Any:
    module_name = f"_bench_example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def cases() -> list[Case]:
    os.environ.pop("KEEL_MODEL", None)  # the examples' scripted models
    logging.getLogger("keel").setLevel(logging.WARNING)
    out = []
    for name, note in PATTERNS:
        def build(name: str = name) -> tuple[Any, str]:
            module = _example(name)
            return module.flow, module.INPUT

        out.append(Case(f"{name} (examples/{name}.py)", build, note))
    return out
