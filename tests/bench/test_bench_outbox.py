"""bench/outbox.py runs at a tiny size and reports every configuration."""

from __future__ import annotations

from pathlib import Path

from bench import outbox


async def test_the_outbox_bench_runs_every_configuration(tmp_path: Path) -> None:
    steps = await outbox.steps_table(tmp_path, steps=3, rounds=1)
    assert len(steps) == 4 and all(s > 0 for s in steps.values())
    appends = await outbox.appends_table(tmp_path, n=20, rounds=1, postgres=True)
    assert len(appends) == 6 and all(s > 0 for s in appends.values())
    rates = await outbox.relay_table(tmp_path, events=300, postgres=True)
    assert set(rates) == {"SQLite file -> MemoryBus", "Postgres -> MemoryBus"}
    assert all(r > 0 for r in rates.values())


async def test_the_outbox_bench_prints_its_table(tmp_path: Path, capsys: object) -> None:
    await outbox.main(outbox.parse(["--steps", "2", "--rounds", "1", "--appends", "10",
                                    "--events", "50", "--no-postgres"]))
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "ratio on/off" in out and "events/s" in out and "Postgres" not in out
