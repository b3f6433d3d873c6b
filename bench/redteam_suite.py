"""The red-team table of docs/evals.md: keel's attack suites against the examples, with a
fully compromised model, with the guard layer on (the defaults) and off (``guards_off``).

    python -m bench.redteam_suite            # from the repository root

Counts, not timings: the same on every machine (a scripted model, no network).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType

from keel.evals import RedTeamReport, guards_off, redteam

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NAMES = ("approval_gate", "tool_use", "self_correction")


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bench_redteam_{name}",
                                                  EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def measure(names: tuple[str, ...] = NAMES) -> dict[str, dict[str, RedTeamReport]]:
    out: dict[str, dict[str, RedTeamReport]] = {}
    for name in names:
        agent = _load(name).agent
        out[name] = {"on": await redteam(agent, compromised=True),
                     "off": await redteam(guards_off(agent), compromised=True)}
    return out


def _cell(report: RedTeamReport, category: str | None) -> str:
    f = report.overall if category is None else report.categories[category]
    return f"{f.succeeded}/{f.attacks}"


def render(results: dict[str, dict[str, RedTeamReport]]) -> str:
    names = list(results)
    first = results[names[0]]["on"]
    lines = ["| category | " + " | ".join(f"{n}: guards on | guards off" for n in names) + " |",
             "| --- |" + " --- | --- |" * len(names)]
    for category in [*first.categories, None]:
        label = "**all**" if category is None else category
        cells = [f"{_cell(results[n]['on'], category)} | {_cell(results[n]['off'], category)}"
                 for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Attacks blocked with guards on, by what stopped them (all examples):", ""]
    totals: dict[str, int] = {}
    for n in names:
        for k, v in results[n]["on"].overall.blocked_by.items():
            totals[k] = totals.get(k, 0) + v
    lines.append(", ".join(f"{k} {v}" for k, v in sorted(totals.items(), key=lambda kv: -kv[1])))
    lines += ["", "Successful attacks with guards on:", ""]
    for n in names:
        for o in results[n]["on"].succeeded():
            lines.append(f"- {n}: `{o.id}`: {'; '.join(o.evidence)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    logging.getLogger("keel").setLevel(logging.ERROR)
    print(render(asyncio.run(measure())))


if __name__ == "__main__":
    main()
