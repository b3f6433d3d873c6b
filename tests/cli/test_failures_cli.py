"""`keel runs failures` on a real SQLite store of runs that went wrong in each way: the table
and its JSON, the filters, and bad input (a bad --since, an unknown store, limits out of
range) refused with one line and exit code 2."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from keel.store import open_store
from tests.observe.failing_runs import Seeded, seed


def _seed(url: str) -> Seeded:
    async def go() -> Seeded:
        async with open_store(url) as store:
            return await seed(store)

    return asyncio.run(go())


def test_the_report_as_a_table_and_as_json(keel: Any, store: str) -> None:
    seeded = _seed(store)
    shown = keel("runs", "failures", "--store", store)
    assert shown.exit_code == 0, shown
    out = shown.stdout
    for text in ("Failure modes", "ModelError", "model test:scripted", "guard injection",
                 "the user's input", "approval denied", "breaker open", "rate limited",
                 "budget exceeded (steps)", "trigger tool", "mitigation in place",
                 "13 runs: 3 failed (23.1%), 6 blocked at least once (46.2%), 1 escalated"):
        assert text in out, text
    assert seeded.ids["model_down"][0] in out and seeded.ids["denied"][0] in out

    data = json.loads(keel("runs", "failures", "--json", "--store", store).stdout)
    assert data["runs"] == 13 and data["complete"] is True
    down = next(m for m in data["modes"] if m["cause"] == "ModelError")
    assert down["count"] == 2 and sorted(down["examples"]) == sorted(seeded.ids["model_down"])
    assert {"kind", "where", "share", "first_seen", "last_seen", "mitigation"} <= set(down)


def test_filters(keel: Any, store: str) -> None:
    seeded = _seed(store)
    data = json.loads(keel("runs", "failures", "--agent", "refunds", "--json",
                           "--store", store).stdout)
    assert data["runs"] == 1
    assert [(m["cause"], m["examples"]) for m in data["modes"]] == [
        ("approval denied", seeded.ids["denied"])]
    assert json.loads(keel("runs", "failures", "--tenant", "globex", "--json",
                           "--store", store).stdout)["runs"] == 0
    assert json.loads(keel("runs", "failures", "--since", "1h", "--json",
                           "--store", store).stdout)["runs"] == 13
    top = json.loads(keel("runs", "failures", "--limit", "1", "--json", "--store", store
                          ).stdout)["modes"]
    assert len(top) == 1 and top[0]["count"] == 3  # the tool that kept failing
    refunds = json.loads(keel("runs", "show", seeded.ids["denied"][0], "--json",
                              "--store", store).stdout)
    version = (refunds.get("run") or refunds)["metadata"]["version"]
    served = json.loads(keel("runs", "failures", "--version", version, "--json",
                             "--store", store).stdout)
    assert served["version"] == version
    assert [m["cause"] for m in served["modes"]] == ["approval denied"]
    assert served["modes"][0]["versions"] == {version: 1}
    none = keel("runs", "failures", "--since", "2999-01-01", "--store", store)
    assert none.exit_code == 0 and "No runs match" in none.stdout


def test_bad_input(keel: Any, store: str, tmp_path: Any) -> None:
    _seed(store)
    bad = keel("runs", "failures", "--since", "yesterday-ish", "--store", store)
    assert bad.exit_code == 2 and "--since 'yesterday-ish' is not a duration" in bad.stderr
    huge = keel("runs", "failures", "--since", "9" * 5000, "--store", store)
    assert huge.exit_code == 2 and len(huge.stderr) < 400
    unknown = keel("runs", "failures", "--store", "bogus://nowhere")
    assert unknown.exit_code == 2 and "cannot open run store" in unknown.stderr
    missing = keel("runs", "failures", "--store", str(tmp_path / "none.db"))
    assert missing.exit_code == 0 and "there is no run store" in missing.stdout
    assert not (tmp_path / "none.db").exists(), "a report never creates a store"
    assert json.loads(keel("runs", "failures", "--json", "--store",
                           str(tmp_path / "none.db")).stdout)["runs"] == 0
    for value in ("0", "501", "lots"):
        limited = keel("runs", "failures", "--limit", value, "--store", store)
        assert limited.exit_code == 2 and "--limit" in limited.stderr
    tenant = keel("runs", "failures", "--tenant", "x" * 5000, "--store", store)
    assert tenant.exit_code == 2 and "tenant" in tenant.stderr
    hostile = keel("runs", "failures", "--agent", "[bold red]x\x1b[31m", "--store", store)
    assert hostile.exit_code == 2 and "control or unprintable character" in hostile.stderr
    assert "\x1b" not in hostile.output
    markup = json.loads(keel("runs", "failures", "--agent", "[bold]x[/]", "--json",
                             "--store", store).stdout)
    assert markup["agent"] == "[bold]x[/]" and markup["runs"] == 0
