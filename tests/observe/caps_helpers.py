"""Shared by the spend-cap tests and their worker processes: a priced scripted model."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from keel import Agent, ModelResponse, ModelSettings, Usage
from keel.core import Message, TextPart
from keel.models import ModelInfo, register_model_info
from keel.testing import FunctionModel

# $0.001 a prompt token and $0.002 an output token: easy sums.
PRICED = ModelInfo(provider="test", model="priced", input_per_mtok=1000.0,
                   output_per_mtok=2000.0, priced=True)
CHEAP = ModelInfo(provider="test", model="cheap", input_per_mtok=10.0, output_per_mtok=20.0,
                  priced=True)
register_model_info(PRICED)
register_model_info(CHEAP)

#: The output limit every test agent asks for: the pre-call estimate's output part.
MAX_OUT = 20


def priced_model(name: str = "test:priced", answer: str = "done, thanks", *,
                 report_cost: bool = True, delay: float = 0.0) -> FunctionModel:
    """Answers ``answer`` with usage as an adapter reports it: the prompt's tokens (its
    characters / 4, not the caps' estimate), 3 output tokens, and their cost at the listed
    price (``report_cost=False``: cost left 0, as scripted models leave it)."""
    info = CHEAP if name.endswith("cheap") else PRICED

    async def answer_of(messages: list[Message], tools: Any, settings: Any) -> ModelResponse:
        if delay:
            await asyncio.sleep(delay)
        prompt = max(1, sum(len(m.text) for m in messages) // 4)
        usage = info.usage(prompt, 3)
        if not report_cost:
            usage = Usage(requests=1, input_tokens=prompt, output_tokens=3)
        return ModelResponse(parts=(TextPart(text=answer),), usage=usage, model=name)

    return FunctionModel(answer_of, name=name)


def agent(middleware: list[Any], *, name: str = "helper", model: Any = None) -> Agent[Any]:
    return Agent(name=name, model=model or priced_model(), instructions="Help briefly.",
                 middleware=middleware, settings=ModelSettings(max_tokens=MAX_OUT))


class FileNotifier:
    """Appends each alert as a JSON line to a file (one write: lines from several processes
    do not interleave)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)

    async def notify(self, alert: Any) -> None:
        line = (json.dumps(alert.to_dict()) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


class ListNotifier:
    def __init__(self) -> None:
        self.alerts: list[Any] = []

    async def notify(self, alert: Any) -> None:
        self.alerts.append(alert)
