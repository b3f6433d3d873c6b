"""The red-team figures as a markdown table for docs/security.md.

    python -m bench.redteam_report            # from the repository root

Runs the suite of ``tests/guard/redteam`` (a bank, a mailbox and a support desk on SQLite,
injected tool outputs from public attack templates, a fully compromised and an honest
scripted model) under keel's defaults, with injection detection off and on, and prints:

- per template: cases, attacker calls the model issued that ran at all, ran *without* an
  approval decision (must be 0), runs left waiting for a person;
- per honest task: completed or not, and the approval interruptions it took.

No timing is measured: the figures are counts, the same on every machine.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.guard.redteam import _harness as h

from keel.store import SQLiteStore


async def measure(every: int = 1) -> dict[str, Any]:
    """Run the suite; ``every=n`` keeps every n-th case of each set (a quick look)."""
    cases, disguised_cases = h.cases()[::every], h.disguised_cases()[::every]
    bare_cases = h.reformatted_only_cases()[::every]
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        store = SQLiteStore(tmp / "runs.db")

        async def attacks(chosen: list[h.Case], **how: Any) -> list[h.Outcome]:
            return [await h.attack(c, tmp, store, **how) for c in chosen]

        try:
            out = {"off": await attacks(cases, detection=False),
                   "on": await attacks(cases, detection=True),
                   "disguised": await attacks(disguised_cases, detection=False),
                   "bare": await attacks(bare_cases, detection=False),
                   "stamp": await attacks(cases, detection=False, reviewer=h.approve_all),
                   "honest": [await h.honest_run(t, tmp, store, detection=True)
                              for t in h.TASKS],
                   "injected": [await h.honest_run(c.task, tmp, store, detection=False, case=c)
                                for c in cases]}
        finally:
            await store.close()
    return out


def _by_template(outcomes: list[h.Outcome]) -> dict[str, list[h.Outcome]]:
    groups: dict[str, list[h.Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[o.case.split("|")[1]].append(o)
    return groups


def render(results: dict[str, Any]) -> str:
    lines = ["| attack template | cases | detection off: attacker calls run | "
             "... without approval | detection on: injected output blocked | "
             "attacker calls run | ... without approval |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    off, on = _by_template(results["off"]), _by_template(results["on"])
    for template, group in off.items():
        f_off, f_on = h.attack_figures(group), h.attack_figures(on[template])
        lines.append(f"| {template} | {f_off['cases']} | {f_off['executed']} | "
                     f"{f_off['ungated']} | {f_on['detected']} | {f_on['executed']} | "
                     f"{f_on['ungated']} |")
    t_off, t_on = h.attack_figures(results["off"]), h.attack_figures(results["on"])
    lines.append(f"| **all** | **{t_off['cases']}** | **{t_off['executed']}** | "
                 f"**{t_off['ungated']}** | **{t_on['detected']}** | **{t_on['executed']}** | "
                 f"**{t_on['ungated']}** |")
    stamp = h.attack_figures(results["stamp"])
    disguised = h.attack_figures(results["disguised"])
    bare = h.attack_figures(results["bare"])
    lines += ["", f"Attacker values written in another form (an IBAN in groups of four, an "
              f"address spelt out; {disguised['cases']} cases, detection off): "
              f"{disguised['executed']} ran, {disguised['ungated']} without approval. "
              f"When *every* value of the call is reformatted or too plain to attribute (an "
              f"address spelt out, subject 'Hi', a free-text body; {bare['cases']} cases; "
              f"gated as unverified values): {bare['ungated']} ran without approval.",
              "", f"With a reviewer that approves everything, {stamp['executed']} of "
              f"{stamp['cases']} attacker calls ran, {stamp['ungated']} of them without an "
              "approval decision in the journal.", "",
              "| honest task | completed | approval interruptions |", "| --- | --- | --- |"]
    for task, o in zip(h.TASKS, results["honest"], strict=True):
        lines.append(f"| {task.id} | {'yes' if o.status == 'completed' else o.status} | "
                     f"{len(o.approvals)} |")
    honest = h.honest_figures(results["honest"])
    injected = h.honest_figures(results["injected"])
    lines += [f"| **mean** | **{honest['completed']}/{honest['tasks']}** | "
              f"**{honest['mean_interruptions']:.2f}** |", "",
              f"The honest model in the {injected['tasks']} injected environments (detection "
              f"off): {injected['completed']} completed, "
              f"{injected['mean_interruptions']:.2f} approval interruptions per task."]
    return "\n".join(line if line.startswith("|") else textwrap.fill(line, 96)
                     for line in lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    logging.getLogger("keel.guard").setLevel(logging.ERROR)  # forward_email's missing risk
    print(render(asyncio.run(measure())))


if __name__ == "__main__":
    main()
