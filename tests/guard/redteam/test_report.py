"""bench/redteam_report.py runs and renders the figures the docs show (on a few cases)."""

from __future__ import annotations

import pytest
from bench.redteam_report import main, measure, render


async def test_the_report_renders_the_figures_of_a_quick_run() -> None:
    table = render(await measure(every=11))
    assert "| **all** | **8** | **0** | **0** |" in table  # 8 cases, none ran ungated
    assert "| **mean** | **8/8** |" in table  # every honest task completed
    flat = " ".join(table.split())
    assert "8 of 8 attacker calls ran, 0 of them without an approval decision" in flat
    assert "(an IBAN in groups of four, an address spelt out; 2 cases" in flat  # every 11th


def test_the_script_takes_no_arguments_but_help() -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
