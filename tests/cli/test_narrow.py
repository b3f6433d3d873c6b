"""Narrow terminals: `keel approvals list` never cuts the reason and shows the agent's
reasoning; `keel runs list` never cuts a run's id or status."""

from __future__ import annotations

import pytest

from tests.cli.test_humans_cli import Keel, seed_approval

REASON = "refund of 40.00 EUR is irreversible and needs a manager's sign-off"
THOUGHT = "The parcel was lost by the carrier, so I will refund the full amount."


def _words_in(text: str, output: str) -> bool:
    flat = " ".join(output.split())
    return all(word in flat for word in text.split())


@pytest.mark.parametrize("columns", [60, 80])
def test_approvals_list_keeps_reason_and_reasoning_in_a_narrow_terminal(
        keel: Keel, store: str, columns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    task = seed_approval(store, "run-0123456789abcdef0123", reason=REASON, thought=THOUGHT)
    monkeypatch.setenv("COLUMNS", str(columns))
    r = keel("--store", store, "approvals", "list")
    assert r.exit_code == 0, r
    assert all(len(line) <= columns for line in r.stdout.splitlines()), r.stdout
    assert task in r.stdout
    assert _words_in(REASON, r.stdout) and _words_in(THOUGHT, r.stdout), r.stdout
    assert "…" not in r.stdout


def test_approvals_list_has_a_reasoning_column_when_there_is_room(
        keel: Keel, store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_approval(store, "run-1", reason="needs a manager", thought="Lost parcel: refund.")
    monkeypatch.setenv("COLUMNS", "160")
    r = keel("--store", store, "approvals", "list")
    header = r.stdout.splitlines()[0].split()
    assert header[:6] == ["id", "run", "tool", "arguments", "reason", "reasoning"], r.stdout
    row = next(line for line in r.stdout.splitlines() if "run-1" in line)
    assert "needs a manager" in row and "Lost parcel: refund." in row


@pytest.mark.parametrize("columns", [60, 80])
def test_runs_list_keeps_ids_and_statuses_whole(keel: Keel, store: str, columns: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    seed_approval(store, "run-0123456789abcdef0123", reason=REASON)
    monkeypatch.setenv("COLUMNS", str(columns))
    r = keel("--store", store, "runs", "list")
    assert r.exit_code == 0, r
    lines = r.stdout.splitlines()
    assert all(len(line) <= columns for line in lines), r.stdout
    assert lines[0].split()[:3] == ["id", "agent", "status"]
    row = next(line for line in lines if line.startswith("run-0123456789abcdef0123 "))
    assert "suspended" in row.split(), r.stdout
