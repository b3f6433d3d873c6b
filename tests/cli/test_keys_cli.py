"""``keel keys create|list|rotate|revoke|audit``: the key printed once, never listed; clear
errors and exit code 2 for malformed input (unknown role, bad tenant, unknown key id,
revoking twice, an in-memory store); reading commands create nothing."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from keel.server import AuthError, KeyStore
from tests.cli.conftest import InvokeResult

Keel = Callable[..., InvokeResult]
_KEY = re.compile(r"keel_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


def _create(keel: Keel, store: str, *extra: str, tenant: str = "acme",
            role: str = "operator") -> tuple[str, str]:
    r = keel("keys", "create", "--store", store, "--tenant", tenant, "--role", role,
             "--name", "ci bot", *extra)
    assert r.exit_code == 0, r
    [plaintext] = _KEY.findall(r.stdout)
    return plaintext.split("_")[1], plaintext


def _verify(store: str, plaintext: str) -> str:
    async def go() -> str:
        async with KeyStore(store) as keys:
            return (await keys.verify(plaintext)).role

    return asyncio.run(go())


def test_create_prints_the_key_once_with_a_warning(keel: Keel, store: str) -> None:
    r = keel("keys", "create", "--store", store, "--tenant", "acme", "--role", "reviewer",
             "--name", "desk", "--by", "alice")
    assert r.exit_code == 0, r
    [plaintext] = _KEY.findall(r.stdout)
    assert plaintext in r.stdout.splitlines()  # on a line of its own, for scripts
    assert "only time the key is shown" in r.stderr
    assert _verify(store, plaintext) == "reviewer"
    listed = keel("keys", "list", "--store", store)
    assert listed.exit_code == 0
    key_id = plaintext.split("_")[1]
    assert key_id in listed.stdout and "desk" in listed.stdout and "active" in listed.stdout
    assert plaintext.split("_", 2)[2] not in listed.output
    data = json.loads(keel("keys", "list", "--store", store, "--json").stdout)
    assert [(d["key_id"], d["tenant"], d["role"], d["created_by"], d["active"])
            for d in data] == [(key_id, "acme", "reviewer", "alice", True)]
    assert "secret" not in json.dumps(data)


def test_create_json(keel: Keel, store: str) -> None:
    r = keel("keys", "create", "--store", store, "--tenant", "acme", "--role", "admin",
             "--name", "n", "--json")
    assert r.exit_code == 0, r
    data = json.loads(r.stdout)
    assert _KEY.fullmatch(data["key"]) and data["record"]["role"] == "admin"
    assert "only time" in r.stderr


def test_rotate_revoke_and_the_audit_log(keel: Keel, store: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "ops")
    key_id, old = _create(keel, store)
    r = keel("keys", "rotate", key_id, "--store", store, "--by", "bob")
    assert r.exit_code == 0, r
    [new] = _KEY.findall(r.stdout)
    assert new != old and "only time" in r.stderr
    with pytest.raises(AuthError):
        _verify(store, old)
    assert _verify(store, new) == "operator"
    r = keel("keys", "revoke", key_id, "--store", store)
    assert r.exit_code == 0 and f"revoked API key {key_id}" in r.stdout
    again = keel("keys", "revoke", key_id, "--store", store)
    assert again.exit_code == 2 and "already revoked" in again.stderr
    assert "Traceback" not in again.output
    rotated = keel("keys", "rotate", key_id, "--store", store)
    assert rotated.exit_code == 2 and "already revoked" in rotated.stderr
    log = json.loads(keel("keys", "audit", "--store", store, "--json").stdout)
    assert [(e["action"], e["who"], e["target"]) for e in log] == [
        ("key.revoke", "ops", key_id), ("key.rotate", "bob", key_id),
        ("key.create", "ops", key_id)]
    table = keel("keys", "audit", "--store", store, "--limit", "2")
    assert table.exit_code == 0 and "key.revoke" in table.stdout
    assert "key.create" not in table.stdout
    page = json.loads(keel("keys", "audit", "--store", store, "--json", "--before",
                           str(log[0]["id"])).stdout)
    assert [e["action"] for e in page] == ["key.rotate", "key.create"]


@pytest.mark.parametrize(("args", "message"), [
    (("--tenant", "acme", "--role", "root", "--name", "n"),
     "unknown role 'root'; use one of: viewer, operator, reviewer, admin"),
    (("--tenant", "", "--role", "viewer", "--name", "n"), "tenant= is empty"),
    (("--tenant", "a\x1bb", "--role", "viewer", "--name", "n"), "tenant= holds a control"),
    (("--tenant", "acme", "--role", "viewer", "--name", ""), "name="),
    (("--tenant", "acme", "--role", "viewer", "--name", "x" * 101), "name="),
    (("--tenant", "acme", "--role", "viewer", "--name", "n", "--by", ""), "by= is empty"),
])
def test_malformed_create_is_a_clear_error(keel: Keel, store: str, tmp_path: Path,
                                           args: tuple[str, ...], message: str) -> None:
    r = keel("keys", "create", "--store", store, *args)
    assert r.exit_code == 2, r
    assert message in r.stderr and "Traceback" not in r.output
    assert not _KEY.search(r.output)


def test_missing_options_are_usage_errors(keel: Keel, store: str) -> None:
    r = keel("keys", "create", "--store", store, "--tenant", "acme", "--name", "n")
    assert r.exit_code == 2 and "--role" in r.output


def test_unknown_key_ids_and_other_tenants_keys(keel: Keel, store: str) -> None:
    key_id, _ = _create(keel, store)
    for verb in ("rotate", "revoke"):
        r = keel("keys", verb, "0123456789abcdef", "--store", store)
        assert r.exit_code == 2 and "no API key '0123456789abcdef'" in r.stderr
        r = keel("keys", verb, key_id, "--store", store, "--tenant", "globex")
        assert r.exit_code == 2 and "in tenant 'globex'" in r.stderr
    assert json.loads(keel("keys", "list", "--store", store, "--tenant", "globex",
                           "--json").stdout) == []
    r = keel("keys", "list", "--store", store, "--tenant", "globex")
    assert r.exit_code == 0 and "No API keys of tenant 'globex'" in r.stderr
    assert json.loads(keel("keys", "list", "--store", store, "--json").stdout)[0]["active"]
    bad = keel("keys", "list", "--store", store, "--tenant", "")
    assert bad.exit_code == 2 and "tenant" in bad.stderr


def test_reading_commands_create_no_store(keel: Keel, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'none' / 'runs.db'}"
    assert keel("keys", "list", "--store", store).exit_code == 0
    assert keel("keys", "audit", "--store", store, "--json").stdout.strip() == "[]"
    r = keel("keys", "revoke", "0123456789abcdef", "--store", store)
    assert r.exit_code == 2 and "no run store" in r.stderr
    assert not (tmp_path / "none").exists()


def test_an_in_memory_store_is_refused(keel: Keel) -> None:
    r = keel("keys", "create", "--store", "memory:", "--tenant", "acme", "--role", "viewer",
             "--name", "n")
    assert r.exit_code == 2 and "keeps nothing" in r.stderr


def test_the_default_store_and_the_root_store_option(keel: Keel, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store = f"sqlite:///{tmp_path / 'root.db'}"
    r = keel("--store", store, "keys", "create", "--tenant", "acme", "--role", "viewer",
             "--name", "n")
    assert r.exit_code == 0, r
    assert len(json.loads(keel("--store", store, "keys", "list", "--json").stdout)) == 1
    monkeypatch.setenv("KEEL_STORE", store)
    assert len(json.loads(keel("keys", "list", "--json").stdout)) == 1


def test_keys_is_listed_after_audit(keel: Keel) -> None:
    names = re.findall(r"^│ (\w+) ", keel("--help").stdout, re.M)
    assert names.index("keys") == names.index("audit") + 1
