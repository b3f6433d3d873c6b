"""ToolPolicy: least privilege on the tool seam. A refused call never runs, the model gets the
normalized permission_denied observation, and the journal (real SQLite) records it as the
call's result; policies that make no sense are refused when built, naming the part."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keel import Agent, ConfigError, MemoryStore, tool
from keel.guard import (
    AllowedURLs,
    EmailDomains,
    Limit,
    Matches,
    OneOf,
    ReadOnlySQL,
    ToolPolicy,
    ToolRules,
    undelimit,
)
from keel.store import SQLiteStore
from keel.testing import ScriptedModel, call


@dataclass
class Deps:
    tenant: str | None = None
    user_scopes: tuple[str, ...] = ()


def make_tools(effects: list[Any]) -> list[Any]:
    @tool(risk="read")
    def lookup(order: str) -> str:
        """Look an order up."""
        effects.append(("lookup", order))
        return f"order {order}: shipped"

    @tool(risk="write")
    def refund(order: str, amount: float) -> str:
        """Refund an order."""
        effects.append(("refund", order, amount))
        return "refunded"

    @tool(risk="write")
    def send_email(to: list[str], body: str) -> str:
        """Send an e-mail."""
        effects.append(("send_email", tuple(to)))
        return "sent"

    @tool(risk="read")
    def fetch(url: str) -> str:
        """Fetch a page."""
        effects.append(("fetch", url))
        return "<html>"

    @tool(risk="read")
    def query(sql: str) -> str:
        """Run SQL."""
        effects.append(("query", sql))
        return "[]"

    return [lookup, refund, send_email, fetch, query]


async def run_calls(tmp_path: Path, policy: ToolPolicy, calls: list[Any], *,
                    name: str = "support", deps: Any = None,
                    scopes: tuple[str, ...] = ()) -> tuple[list[Any], dict[str, Any]]:
    """Run an agent that makes ``calls`` (one per turn); returns the effects and the journaled
    tool results by step key."""
    effects: list[Any] = []
    agent = Agent(name, model=ScriptedModel([*calls, "done"]), tools=make_tools(effects),
                  middleware=[policy], scopes=scopes)
    async with SQLiteStore(tmp_path / "runs.db") as store:
        result = await agent.run("go", store=store, deps=deps)
        journal = await store.read_journal(result.run_id)
    results = {e.key: e.data for e in journal if e.kind == "tool" and e.phase == "result"}
    return effects, results


def failure(results: dict[str, Any], tool_name: str, n: int = 0) -> dict[str, Any] | None:
    [data] = [d for k, d in results.items() if k.endswith(f"/tool:{tool_name}#0")][n:n + 1]
    return data["failure"]  # type: ignore[no-any-return]


async def test_a_tool_outside_the_allow_list_never_runs_and_the_denial_is_journaled(
        tmp_path: Path) -> None:
    policy = ToolPolicy(allow=["lookup"])
    effects, results = await run_calls(
        tmp_path, policy, [call("lookup", {"order": "A1"}),
                           call("refund", {"order": "A1", "amount": 5})])
    assert effects == [("lookup", "A1")]
    f = failure(results, "refund")
    assert f is not None and f["error_type"] == "permission_denied"
    assert f["retryable"] is False and f["hint"]
    assert "not in the allow-list" in f["message"]
    assert failure(results, "lookup") is None


async def test_the_model_sees_the_normalized_observation() -> None:
    model = ScriptedModel([call("refund", {"order": "A1", "amount": 5}), "done"])
    agent = Agent("support", model=model, tools=make_tools([]),
                  middleware=[ToolPolicy(allow=["lookup"])])
    await agent.run("go", store=MemoryStore())
    [part] = model.requests[1][-1].parts
    seen = json.loads(undelimit(part.content))["error"]  # type: ignore[union-attr]
    assert seen["error_type"] == "permission_denied" and seen["retryable"] is False
    assert seen["hint"].startswith("Do not retry")


async def test_deny_wins_and_deny_all_blocks_everything(tmp_path: Path) -> None:
    effects, results = await run_calls(tmp_path, ToolPolicy(deny=["refund"]),
                                       [call("refund", {"order": "A", "amount": 1}),
                                        call("lookup", {"order": "A"})])
    assert effects == [("lookup", "A")]
    assert "denied by ToolPolicy" in failure(results, "refund")["message"]  # type: ignore[index]

    effects, results = await run_calls(tmp_path, ToolPolicy(allow=(), deny_all=True),
                                       [call("lookup", {"order": "A"})])
    assert effects == []
    assert failure(results, "lookup")["error_type"] == "permission_denied"  # type: ignore[index]


@pytest.mark.parametrize(("amount", "runs"), [(100, True), (99.5, True), ("40", True),
                                              (100.01, False), (1e9, False), (-1, False),
                                              ("a lot", False), (True, False)])
async def test_amount_limit(tmp_path: Path, amount: Any, runs: bool) -> None:
    policy = ToolPolicy(constraints={"refund": {"amount": Limit(max=100, min=0)}})
    effects, results = await run_calls(tmp_path, policy,
                                       [call("refund", {"order": "A", "amount": amount})])
    f = failure(results, "refund")
    if runs:
        assert f is None and len(effects) == 1
    else:
        assert effects == [] and f is not None and f["error_type"] == "permission_denied"
        assert f["message"].startswith("amount: ")


async def test_recipients_urls_and_sql_reuse_the_validators(tmp_path: Path) -> None:
    policy = ToolPolicy(constraints={
        "send_email": {"to": EmailDomains(["example.com", "*.example.org"])},
        "fetch": {"url": AllowedURLs(["docs.example.com"])},
        "query": {"sql": ReadOnlySQL(dialect="sqlite")},
    })
    effects, results = await run_calls(tmp_path, policy, [
        call("send_email", {"to": ["ann@example.com", "bob@eu.example.org"], "body": "hi"}),
        call("fetch", {"url": "https://docs.example.com/a"}),
        call("query", {"sql": "SELECT id FROM orders"}),
    ])
    assert [e[0] for e in effects] == ["send_email", "fetch", "query"]
    assert all(failure(results, t) is None for t in ("send_email", "fetch", "query"))

    effects, results = await run_calls(tmp_path, policy, [
        # one bad recipient in the list refuses the call
        call("send_email", {"to": ["ann@example.com", "eve@evil.test"], "body": "hi"}),
        call("fetch", {"url": "https://docs.example.com@evil.test/"}),
        call("query", {"sql": "SELECT 1; DROP TABLE orders"}),
    ])
    assert effects == []
    messages = {t: failure(results, t)["message"]  # type: ignore[index]
                for t in ("send_email", "fetch", "query")}
    assert "evil.test" in messages["send_email"] and messages["send_email"].startswith("to: ")
    assert messages["fetch"].startswith("url: ")
    assert messages["query"].startswith("sql: ")


async def test_functions_as_constraints_and_failing_ones_refuse(tmp_path: Path) -> None:
    def broken(value: Any) -> bool:
        raise RuntimeError("cannot decide")

    policy = ToolPolicy(constraints={
        "lookup": {"order": [Matches(r"[A-Z]\d+"), lambda v: v != "Z9" or "Z9 is archived"]},
        "refund": lambda args: args["amount"] <= 10 * len(args["order"]),
        "fetch": {"url": broken},
    })
    effects, results = await run_calls(tmp_path, policy, [
        call("lookup", {"order": "A1"}), call("refund", {"order": "AB", "amount": 20}),
        call("fetch", {"url": "https://x.test"})])
    assert effects == [("lookup", "A1"), ("refund", "AB", 20)]
    assert "failed (RuntimeError)" in failure(results, "fetch")["message"]  # type: ignore[index]

    effects, results = await run_calls(tmp_path, policy, [
        call("lookup", {"order": "Z9"}), call("refund", {"order": "AB", "amount": 21})])
    assert effects == []
    assert failure(results, "lookup")["message"] == "order: Z9 is archived"  # type: ignore[index]
    assert "not allowed" in failure(results, "refund")["message"]  # type: ignore[index]


async def test_per_agent_and_per_tenant_rules_only_narrow(tmp_path: Path) -> None:
    policy = ToolPolicy(
        deny=["query"],
        agents={"support": {"allow": ["lookup", "refund", "query"]}},
        tenants={"acme": {"constraints": {"refund": {"amount": Limit(max=50)}}},
                 "globex": ToolRules(allow=["lookup"])},
        tenant_of=lambda ctx: ctx.deps.tenant)
    calls = [call("refund", {"order": "A", "amount": 80}), call("lookup", {"order": "A"}),
             call("query", {"sql": "SELECT 1"}), call("fetch", {"url": "https://x.test"})]
    # no tenant given: the default and agent rules only
    effects, _ = await run_calls(tmp_path, policy, calls, deps=Deps())
    assert effects == [("refund", "A", 80), ("lookup", "A")]
    effects, _ = await run_calls(tmp_path, policy, calls, deps=Deps(tenant="acme"))
    assert effects == [("lookup", "A")]
    effects, results = await run_calls(tmp_path, policy, calls, deps=Deps(tenant="globex"))
    assert effects == [("lookup", "A")]
    assert "ToolPolicy.tenants['globex']" in failure(results, "refund")["message"]  # type: ignore[index]
    # another agent with the same policy is not bound by the support agent's rules
    effects, _ = await run_calls(tmp_path, policy, calls, name="other", deps=Deps())
    assert effects == [("refund", "A", 80), ("lookup", "A"), ("fetch", "https://x.test")]


async def test_require_tenant_and_a_failing_tenant_of_refuse(tmp_path: Path) -> None:
    policy = ToolPolicy(tenants={"acme": {"allow": ["lookup"]}}, require_tenant=True,
                        tenant_of=lambda ctx: ctx.deps.tenant)
    calls = [call("lookup", {"order": "A"})]
    effects, _ = await run_calls(tmp_path, policy, calls, deps=Deps(tenant="acme"))
    assert effects == [("lookup", "A")]
    for deps in (Deps(), Deps(tenant="initech"), None):  # None: ctx.deps.tenant raises
        effects, results = await run_calls(tmp_path, policy, calls, deps=deps)
        assert effects == []
        assert failure(results, "lookup")["error_type"] == "permission_denied"  # type: ignore[index]


async def test_required_scopes_of_the_agent_and_of_the_caller(tmp_path: Path) -> None:
    policy = ToolPolicy(scopes={"refund": ["payments:write"]},
                        scopes_of=lambda ctx: ctx.deps.user_scopes)
    calls = [call("refund", {"order": "A", "amount": 1})]
    user = Deps(user_scopes=("payments:write",))
    effects, results = await run_calls(tmp_path, policy, calls, deps=user)  # agent lacks it
    assert effects == []
    assert "needs scope(s) payments:write" in failure(results, "refund")["message"]  # type: ignore[index]
    effects, _ = await run_calls(tmp_path, policy, calls, deps=Deps(),
                                 scopes=("payments:write",))  # the user lacks it
    assert effects == []
    effects, _ = await run_calls(tmp_path, policy, calls, deps=user, scopes=("payments:write",))
    assert effects == [("refund", "A", 1)]


async def test_unparseable_arguments_reach_the_tool_own_validation(tmp_path: Path) -> None:
    policy = ToolPolicy(constraints={"refund": {"amount": Limit(max=10)}})
    effects, results = await run_calls(tmp_path, policy, [call("refund", '{"amount": ')])
    assert effects == []
    assert failure(results, "refund")["error_type"] == "invalid_json"  # type: ignore[index]


# ------------------------------------------------------------------ refused configurations


def agent_with(policy: ToolPolicy, name: str = "support") -> Agent[Any]:
    return Agent(name, model=ScriptedModel(["done"]), tools=make_tools([]), middleware=[policy])


@pytest.mark.parametrize(("kwargs", "part", "words"), [
    ({"allow": []}, "ToolPolicy.allow", "empty"),
    ({"allow": ["lookup"], "deny_all": True}, "ToolPolicy.deny_all", "allow=()"),
    ({"allow": ["lookup", "refund"], "deny": ["refund"]}, "ToolPolicy", "both allowed and denied"),
    ({"allow": "lookup"}, "ToolPolicy.allow", "not one str"),
    ({"constraints": {"refund": {"amount": 100}}}, "ToolPolicy.constraints['refund']['amount']",
     "not a check"),
    ({"constraints": {"refund": 5}}, "ToolPolicy.constraints['refund']", "not a constraint"),
    ({"constraints": {"refund": {"amount": []}}}, "['amount']", "no checks"),
    ({"constraints": {"*": {"amount": Limit(max=1)}}}, "constraints['*']", "per tool"),
    ({"scopes": {"refund": []}}, "ToolPolicy.scopes['refund']", "one or more"),
    ({"tenant_of": "tenant"}, "ToolPolicy.tenant_of", "function"),
    ({"agents": {"support": {"allow": []}}}, "ToolPolicy.agents['support'].allow", "empty"),
    ({"agents": {"support": {"alow": ["x"]}}}, "ToolPolicy.agents['support']", "alow"),
    ({"agents": {"support": ["lookup"]}}, "ToolPolicy.agents['support']", "dict of rules"),
])
def test_nonsense_policies_are_refused_naming_the_part(kwargs: dict[str, Any], part: str,
                                                       words: str) -> None:
    with pytest.raises(ConfigError) as info:
        ToolPolicy(**kwargs)
    assert part in str(info.value) and words in str(info.value)


@pytest.mark.parametrize(("make", "words"), [
    (lambda: Limit(), "max= and/or min="),
    (lambda: Limit(max=1, min=2), "above max"),
    (lambda: Limit(max=float("nan")), "finite"),
    (lambda: OneOf([]), "empty"),
    (lambda: Matches("(unclosed"), "does not compile"),
    (lambda: EmailDomains(["not a domain"]), "not a domain"),
    (lambda: EmailDomains([]), "empty"),
])
def test_nonsense_checks_are_refused(make: Any, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        make()


def test_an_agent_rule_naming_a_tool_the_agent_lacks_fails_when_the_agent_is_built() -> None:
    with pytest.raises(ConfigError) as info:
        agent_with(ToolPolicy(agents={"support": {"deny": ["refnd"]}}))
    assert "ToolPolicy.agents['support'].deny" in str(info.value)
    assert "unknown tool 'refnd'" in str(info.value) and "refund" in str(info.value)
    with pytest.raises(ConfigError, match="has no argument 'amout'"):
        agent_with(ToolPolicy(agents={"support": {
            "constraints": {"refund": {"amout": Limit(max=1)}}}}))


async def test_a_default_rule_naming_an_unknown_tool_fails_at_the_first_call(
        tmp_path: Path) -> None:
    policy = ToolPolicy(deny=["refnd"])
    with pytest.raises(ConfigError, match=r"ToolPolicy\.deny.*unknown tool 'refnd'"):
        await run_calls(tmp_path, policy, [call("lookup", {"order": "A"})])
    # a name one of the agents built with the policy has is fine
    shared = ToolPolicy(deny=["transfer"])

    @tool
    def transfer(amount: int) -> str:
        """Move money."""
        return "moved"

    Agent("treasury", model=ScriptedModel(["done"]), tools=[transfer], middleware=[shared])
    effects, _ = await run_calls(tmp_path, shared, [call("lookup", {"order": "A"})])
    assert effects == [("lookup", "A")]
    # rules for an agent no agent of that name was built with would never apply
    typo = ToolPolicy(agents={"suport": {"allow": ["lookup"]}})
    with pytest.raises(ConfigError, match=r"ToolPolicy\.agents\['suport'\].*never apply"):
        await run_calls(tmp_path, typo, [call("lookup", {"order": "A"})])


async def test_the_least_privilege_section_of_the_security_page_runs_as_written() -> None:
    [block] = doc_blocks("Least privilege")
    namespace: dict[str, Any] = {"__name__": "security_doc"}
    exec(compile(block, "docs/security.md", "exec", dont_inherit=True),  # our own docs
         namespace)
    support, caller = namespace["support"], namespace["Caller"]
    store = MemoryStore()
    result = await support.run("refund A7", store=store, tenant="acme",
                               deps=caller(scopes=("payments:write",)))
    [entry] = [e for e in await store.read_journal(result.run_id)
               if e.kind == "tool" and e.phase == "result"]
    assert entry.data["failure"]["message"] == "amount: 250 is above the limit of 100"


def doc_blocks(title: str) -> list[str]:
    """The python blocks of one section of docs/security.md."""
    import re

    page = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    section = page.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.parametrize(("check", "value", "allowed"), [
    (Limit(max=100), 10**40, False),
    (Limit(max=100), "1e999999999", False),
    (Limit(max=100), "-1e999999999", True),
    (Limit(max=100), float("inf"), False),
    (Limit(max=100), "NaN", False),
    (Limit(max=100), "9" * 101, False),
    (Limit(max=100), [1], False),
    (Limit(max=100), "  42 ", True),
    (EmailDomains(["example.com"]), "ann@example.com.", True),
    (EmailDomains(["example.com"]), "ann@EXAMPLE.com", True),
    (EmailDomains(["example.com"]), "ann@ex\u0430mple.com", False),  # a Cyrillic a
    (EmailDomains(["example.com"]), "ann@example.com@evil.test", False),
    (EmailDomains(["example.com"]), "Ann <ann@example.com>", False),
    (EmailDomains(["example.com"]), "ann@example.com, eve@evil.test", False),
    (EmailDomains(["example.com"]), "ann@example.com\x00", False),
    (EmailDomains(["example.com"]), "a" * 400 + "@example.com", False),
    (EmailDomains(["*.example.com"]), "ann@example.com", False),
    (EmailDomains(["*.example.com"]), "ann@mail.example.com", True),
    (OneOf(["EUR", "USD"]), {"not": "hashable"}, False),
    (OneOf(["EUR", "USD"]), "eur", False),
    (Matches(r"[A-Z]\d{1,6}"), "A1\nB2", False),
    (Matches(r"[A-Z]\d{1,6}"), b"A1", False),
])
def test_checks_on_hostile_values(check: Any, value: Any, allowed: bool) -> None:
    reason = check.check(value)
    assert (reason is None) is allowed, reason
    if reason is not None:
        assert len(reason) < 300


async def test_a_refused_call_is_never_put_to_a_person_first(tmp_path: Path) -> None:
    """The policy refuses before the approval gate: an irreversible call it forbids does not
    wait for a person, and the journal records the policy's guard decision."""
    from keel.store import MemoryStore

    effects: list[Any] = []

    @tool(risk="irreversible")
    def wire(amount: int) -> str:
        """Send money."""
        effects.append(("wire", amount))
        return "sent"

    store = MemoryStore()
    agent = Agent("pay", model=ScriptedModel([call("wire", {"amount": 5000}), "could not"]),
                  tools=[wire], middleware=[ToolPolicy(constraints={"wire": {
                      "amount": Limit(max=1000)}})])
    result = await agent.run("wire 5000", store=store)
    assert result.output == "could not" and effects == []
    journal = await store.read_journal(result.run_id)
    assert not [e for e in journal if e.key.endswith("/approval")]  # nobody was asked
    [guard] = [e for e in journal if e.kind == "guard"]
    assert guard.data["action"] == "block" and guard.data["error_type"] == "permission_denied"
    observed = next(e for e in journal if e.kind == "tool").data["failure"]
    assert observed["error_type"] == "permission_denied"
