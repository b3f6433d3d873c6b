"""An LLM judge: a keel agent grades each answer against a rubric, as an ordinary run.

The judge's run is journaled in the evaluation's store (metadata ``{"eval", "case",
"judge"}``), bounded by its :class:`~keel.runtime.Budget`, retried like any model call, and
its model requests go through a :class:`~keel.observe.ModelCache` so that the same question
is answered from the cache (identically) when asked again.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from keel.core import ModelSettings, new_run_id
from keel.evals._case import Case
from keel.evals._errors import EvalError
from keel.evals._observed import Observed, plain
from keel.evals._results import Score
from keel.evals._scorers import Scorer
from keel.models import Model
from keel.observe import CacheStore, MemoryCacheStore, ModelCache
from keel.reliability import Retry
from keel.runtime import Agent, Budget

_INSTRUCTIONS = (
    "You grade an AI assistant's answer. Apply the rubric strictly and only the rubric.\n"
    "Rubric:\n{rubric}\n\n"
    "Reply with one JSON object and nothing else: "
    '{{"score": <a number from 0 to 1>, "reason": "<one sentence>"}}.')
_MAX_FIELD = 20_000
_NUMBER = r"([-+]?\d+(?:\.\d+)?)"


def parse_score(text: str) -> tuple[float, str]:
    """(score 0 to 1, reason) from a judge's answer: a JSON object with ``score``,
    ``score: 0.8``, ``8/10``, ``80%`` or a lone number. Anything else, or a score outside
    0 to 1, is an :class:`EvalError` quoting the answer."""
    stripped = text.strip()
    found = _from_json(stripped)
    if found is None:
        found = _from_text(stripped)
    if found is None or not math.isfinite(found[0]) or not 0.0 <= found[0] <= 1.0:
        shown = stripped[:200] or "(empty)"
        raise EvalError(f"the judge's answer has no score from 0 to 1: {shown!r}; tell it to "
                        'reply {"score": 0.8, "reason": "..."}')
    return found


def _from_json(text: str) -> tuple[float, str] | None:
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if match is None:
        return None
    try:
        data = json.loads(match.group(0))
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    raw = data.get("score")
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    reason = data.get("reason")
    return value, reason if isinstance(reason, str) else ""


def _from_text(text: str) -> tuple[float, str] | None:
    patterns = (
        (rf"score\s*[:=]?\s*{_NUMBER}\s*/\s*{_NUMBER}", "ratio"),
        (rf"score\s*[:=]?\s*{_NUMBER}\s*%", "percent"),
        (rf"score\s*[:=]?\s*{_NUMBER}", "plain"),
        (rf"^{_NUMBER}\s*/\s*{_NUMBER}\b", "ratio"),
        (rf"^{_NUMBER}\s*%", "percent"),
        (rf"^{_NUMBER}\s*$", "plain"),
    )
    for pattern, kind in patterns:
        m = re.search(pattern, text, re.IGNORECASE | re.MULTILINE)
        if m is None:
            continue
        value = float(m.group(1))
        if kind == "ratio":
            denominator = float(m.group(2))
            if denominator <= 0:
                return None
            value /= denominator
        elif kind == "percent":
            value /= 100.0
        return value, text[m.end():].strip(" .:-\n")[:300]
    return None


class LLMJudge(Scorer):
    """Grades each answer with a judge agent (see :func:`llm_judge`)."""

    def __init__(self, judge: Agent[Any], rubric: str, *, name: str, threshold: float,
                 reference: bool) -> None:
        super().__init__(name, threshold)
        self.judge = judge
        self.rubric = rubric
        self.reference = reference

    def prompt(self, case: Case, observed: Observed) -> str:
        question = case.input if isinstance(case.input, str) else \
            "\n".join(f"{m['role']}: {m['content']}" for m in case.input)
        parts = [f"## Input\n{question[:_MAX_FIELD]}"]
        if self.reference and case.expected is not None:
            expected = case.expected if isinstance(case.expected, str) else \
                json.dumps(plain(case.expected), sort_keys=True)
            parts.append(f"## Reference answer\n{expected[:_MAX_FIELD]}")
        answer = observed.output_text if observed.status == "completed" else \
            f"(no answer: the run {observed.status})"
        parts.append(f"## Answer to grade\n{answer[:_MAX_FIELD]}")
        return "\n\n".join(parts)

    async def score(self, case: Case, observed: Observed) -> Score:
        run_id = new_run_id()
        observed.extra_run_ids.append(run_id)
        metadata = {"eval": observed.eval_id, "case": case.id, "judge": self.name}
        result = await self.judge.run(self.prompt(case, observed), store=observed.store,
                                      run_id=run_id, metadata=metadata)
        value, reason = parse_score(result.text if isinstance(result.output, str | None)
                                    else json.dumps(plain(result.output)))
        return self.verdict(round(value, 6), reason or None)


def llm_judge(model: str | Model | Agent[Any], rubric: str, *, name: str = "llm_judge",
              threshold: float = 0.7, reference: bool = True, budget: Budget | None = None,
              cache: bool | CacheStore = True) -> Scorer:
    """A scorer that asks a judge model to grade each answer from 0 to 1 against
    ``rubric``. ``model`` is a model id, a :class:`~keel.Model`, or a keel ``Agent`` to use
    as the judge (its instructions are replaced by the rubric prompt). The judge runs as an
    ordinary keel run (journaled in the evaluation's store, within ``budget``, retried on
    transient errors) with ``temperature=0``; ``cache`` (on by default; a ``CacheStore``
    to share it across processes) answers a repeated question from the cache.
    ``reference=False`` keeps the expected answer from the judge. An answer without a
    parsable score is that case's scorer error, never a crash."""
    if not isinstance(rubric, str) or not rubric.strip():
        raise EvalError(f"scorer {name!r}: the rubric is text saying what a good answer is")
    if len(rubric) > _MAX_FIELD:
        raise EvalError(f"scorer {name!r}: the rubric has {len(rubric)} characters; keep it "
                        f"under {_MAX_FIELD}")
    middleware: list[Any] = [Retry()]
    if cache is not False:
        store = cache if not isinstance(cache, bool) else MemoryCacheStore()
        middleware.append(ModelCache(store, always=True))
    instructions = _INSTRUCTIONS.format(rubric=rubric.strip())
    if isinstance(model, Agent):
        judge: Agent[Any] = model.clone(instructions=instructions, output_type=None,
                                        middleware=(*model.config.middleware, *middleware))
    elif isinstance(model, str | Model):
        judge = Agent(f"judge-{name}", model=model, instructions=instructions,
                      settings=ModelSettings(temperature=0.0),
                      budget=budget or Budget(max_steps=4), middleware=middleware)
    else:
        raise EvalError(f"scorer {name!r}: the judge is a model id, a keel Model or a keel "
                        f"Agent, not {type(model).__name__}")
    return LLMJudge(judge, rubric, name=name, threshold=threshold, reference=reference)
