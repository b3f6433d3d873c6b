"""bench/triggers.py runs at a tiny size and reports every concurrency."""

from __future__ import annotations

from pathlib import Path

from bench import triggers


async def test_the_triggers_bench_measures_both_ways_at_each_concurrency(
        tmp_path: Path) -> None:
    rates = await triggers.table(tmp_path, n=12, rounds=1, levels=[1, 4])
    assert set(rates) == {1, 4}
    assert all(d > 0 and t > 0 for d, t in rates.values())


async def test_the_triggers_bench_prints_its_table(capsys: object) -> None:
    await triggers.main(triggers.parse(["--events", "6", "--rounds", "1",
                                        "--concurrency", "1", "2"]))
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "ratio direct/triggers" in out and out.count("concurrency") == 2
