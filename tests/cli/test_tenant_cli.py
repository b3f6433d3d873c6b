"""`keel run --tenant --user` stores whose run it is; `keel runs list --tenant` shows only that
tenant's runs; a bad id is refused before anything is stored."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.cli.conftest import TOOL_USE, InvokeResult
from tests.cli.test_run import run_id_of

Keel = Callable[..., InvokeResult]


def test_runs_carry_the_tenant_and_list_filters_on_it(keel: Keel, store: str) -> None:
    ids: dict[str, str] = {}
    for tenant, user in (("acme", "alice"), ("globex", "bob"), ("acme' OR '1'='1", "eve")):
        r = keel("--store", store, "run", TOOL_USE, "q", "--tenant", tenant, "--user", user)
        assert r.exit_code == 0, r
        ids[tenant] = run_id_of(r.stdout)
    plain = run_id_of(keel("--store", store, "run", TOOL_USE, "q").stdout)
    for tenant, run_id in ids.items():
        data = json.loads(keel("--store", store, "runs", "list", "--tenant", tenant,
                               "--json").stdout)
        assert [(d["run_id"], d["tenant"]) for d in data] == [(run_id, tenant)]
    table = keel("--store", store, "runs", "list", "--tenant", "acme").stdout
    assert ids["acme"] in table and ids["globex"] not in table and plain not in table
    shown = json.loads(keel("--store", store, "runs", "show", ids["globex"], "--json").stdout)
    assert (shown["tenant"], shown["user"]) == ("globex", "bob")
    panel = keel("--store", store, "runs", "show", ids["globex"]).stdout
    assert "globex (user bob)" in panel
    everything = json.loads(keel("--store", store, "runs", "list", "--json").stdout)
    assert len(everything) == 4


def test_a_bad_tenant_is_refused_before_the_store_is_written(keel: Keel, store: str) -> None:
    for option, value in (("--tenant", ""), ("--user", "x" * 10_240), ("--tenant", "a\x1bb")):
        r = keel("--store", store, "run", TOOL_USE, "q", option, value)
        assert r.exit_code != 0, r
        assert option.lstrip("-") + "=" in r.output
    listed = keel("--store", store, "runs", "list", "--tenant", "")
    assert listed.exit_code != 0 and "tenant=" in listed.output
    assert "no run store there yet" in keel("--store", store, "runs", "list").stdout
