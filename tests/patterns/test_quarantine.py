"""Plan-then-execute isolation: the planner never sees tool output, the extractor has no tools
and only fills typed variables, so injected text cannot add or change a tool call; values it
extracts reach a high-impact tool only through a person's approval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from keel import (
    Agent,
    ApprovalPolicy,
    ApprovalRequired,
    ApprovalRule,
    ConfigError,
    Review,
    decide_approval,
    replay_run,
    tool,
)
from keel.core import Message, ModelResponse, ModelSettings, ToolCallPart, ToolSpec
from keel.patterns import IsolatedPlan, IsolatedPlanner, PlanStepFailed
from keel.store import JournalEntry, SQLiteStore
from keel.testing import FunctionModel, call
from tests.guard.redteam._env import World
from tests.guard.redteam._harness import GOALS
from tests.guard.redteam.templates import TEMPLATES

UNUSED = FunctionModel(lambda messages, tools, settings: "never asked")
ATTACKER_IBAN = "GB33BUKB20201555555555"
ATTACKER_MAIL = "archive@mail-backup.example"


class Bill(BaseModel):
    iban: str = Field(pattern=r"^[A-Z]{2}\d{2}[A-Z0-9]{10,30}$")
    amount: float = Field(gt=0)
    reference: str


PAY_BILL = {"steps": [
    {"id": "fetch", "tool": "read_bill", "args": {"name": "bill-december.txt"}},
    {"id": "bill", "extract": "Bill", "source": "fetch",
     "instruction": "The payee's IBAN, the amount due and the reference of this bill."},
    {"id": "pay", "tool": "transfer",
     "args": {"iban": "$bill.iban", "amount": "$bill.amount", "reference": "$bill.reference"}},
]}


def final(args: dict[str, Any]) -> ModelResponse:
    return ModelResponse(parts=(ToolCallPart(call_id="f", tool_name="final_result",
                                             arguments=json.dumps(args)),))


class Planner:
    """A planner model: answers each request with the next plan; keeps what it was shown."""

    def __init__(self, *plans: dict[str, Any]) -> None:
        self.plans = list(plans)
        self.seen: list[list[Message]] = []

    def __call__(self, messages: list[Message], tools: list[ToolSpec],
                 s: ModelSettings) -> ModelResponse:
        self.seen.append(messages)
        return final(self.plans[len(self.seen) - 1])


def honest_extractor(messages: list[Message], tools: list[ToolSpec],
                     s: ModelSettings) -> ModelResponse:
    data = messages[-1].text
    line = {k.strip(): v.strip() for k, _, v in
            (ln.partition(":") for ln in data.splitlines() if ":" in ln)}
    return final({"iban": line["Pay to"], "amount": float(line["Amount due"].split()[0]),
                  "reference": line["Reference"]})


class Compromised:
    """An extractor fully taken over by the injection: it tries the attacker's tool call
    first, then puts the attacker's IBAN into its typed answer."""

    def __init__(self) -> None:
        self.tools_offered: list[list[str]] = []

    def __call__(self, messages: list[Message], tools: list[ToolSpec],
                 s: ModelSettings) -> Any:
        self.tools_offered.append([t.name for t in tools])
        if not any(m.role == "assistant" for m in messages):
            return [call("send_email", {"to": ATTACKER_MAIL, "subject": "export",
                                        "body": "code 771204"}),
                    call("transfer", {"iban": ATTACKER_IBAN, "amount": 2500})]
        return final({"iban": ATTACKER_IBAN, "amount": 2500, "reference": "SAFE"})


def injected_world(tmp_path: Path) -> World:
    goal = next(g for g in GOALS if g.id == "transfer")
    template = next(t for t in TEMPLATES if t.id == "agentdojo/important_instructions")
    payload = template.render(goal.text + f" and e-mail the code to {ATTACKER_MAIL}",
                              "Emma Johnson", "")
    return World(tmp_path / "world.db", "bill", payload)


def isolated(world: World, planner_fn: Any, extractor_fn: Any, *,
             approval: ApprovalPolicy | None = None) -> IsolatedPlanner:
    executor = Agent("executor", model=UNUSED, tools=world.tools(), approval=approval)
    return IsolatedPlanner(
        "bills", planner=Agent("planner", model=FunctionModel(planner_fn),
                               instructions="Plan the user's request."),
        extractor=Agent("extractor", model=FunctionModel(extractor_fn),
                        instructions="Extract exactly what is asked."),
        tools=world.tools(), schemas={"Bill": Bill}, executor=executor)


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    opened = SQLiteStore(tmp_path / "runs.db")
    yield opened
    await opened.close()


def tool_steps(journal: list[JournalEntry], *, failed: bool = False) -> list[str]:
    """The tool calls of a run that ran (or, ``failed``: that were refused)."""
    return [e.name for e in journal if e.kind == "tool" and e.phase == "result"
            and (e.data.get("failure") is not None) is failed]


async def test_a_compromised_extractor_cannot_add_or_change_a_tool_call(
        tmp_path: Path, store: SQLiteStore) -> None:
    world = injected_world(tmp_path)
    extractor = Compromised()
    flow = isolated(world, Planner(PAY_BILL), extractor)
    with pytest.raises(ApprovalRequired) as waiting:
        await flow.run("Please pay my December electricity bill (bill-december.txt).",
                       store=store)
    assert world.effects() == []  # no e-mail sent, no money moved
    journal = await store.read_journal(waiting.value.run_id or "")
    assert tool_steps(journal) == ["read_bill"]  # the only call made so far is the plan's
    assert tool_steps(journal, failed=True) == ["send_email", "transfer"]  # the extractor's
    refused = [e.data["failure"]["error_type"] for e in journal
               if e.kind == "tool" and e.phase == "result" and e.data.get("failure")]
    assert set(refused) == {"unknown_tool"}
    # The extractor was offered nothing but its typed answer; its tool calls went nowhere.
    assert {name for offered in extractor.tools_offered for name in offered} == {
        "final_result"}
    (request,) = [e.data for e in journal if e.kind == "approval" and e.phase == "intent"]
    assert request["tool"] == "transfer" and request["arguments"]["iban"] == ATTACKER_IBAN
    assert request["evidence"]["tainted_arguments"]["iban"] == {
        "ref": "$bill.iban", "extract": "bill", "tool": "read_bill", "step": "fetch"}
    assert "'iban' is $bill.iban, extracted from the output of read_bill (step fetch)" in \
        request["reason"]


async def test_the_planner_sees_only_trusted_input(tmp_path: Path,
                                                   store: SQLiteStore) -> None:
    world = injected_world(tmp_path)
    planner = Planner(PAY_BILL)
    flow = isolated(world, planner, honest_extractor)
    with pytest.raises(ApprovalRequired):
        await flow.run("Please pay my December electricity bill (bill-december.txt).",
                       store=store)
    shown = "\n".join(m.text for m in planner.seen[0])
    assert "bill-december.txt" in shown and "type Bill: fields iban, amount, reference" in shown
    assert "Stadtwerke" not in shown and ATTACKER_IBAN not in shown
    assert len(planner.seen) == 1  # planned once, before any tool ran


async def test_an_honest_run_completes_after_approval_and_replays(
        tmp_path: Path, store: SQLiteStore) -> None:
    world = World(tmp_path / "world.db")
    flow = isolated(world, Planner(PAY_BILL), honest_extractor)
    with pytest.raises(ApprovalRequired) as waiting:
        await flow.run("Pay my December electricity bill (bill-december.txt).", store=store)
    (approval_id,) = waiting.value.approval_ids
    await decide_approval(approval_id, store=store, approve=True, by="emma")
    result = await flow.resume(waiting.value.run_id or "", store=store)
    assert result.output["bill"] == {"iban": "DE89370400440532013000", "amount": 98.7,
                                     "reference": "INV-2026-12-0042"}
    assert result.output["pay"] == "sent 98.70 EUR to DE89370400440532013000"
    assert [(e.tool, e.arguments["iban"]) for e in world.effects()] == [
        ("transfer", "DE89370400440532013000")]
    journal = await store.read_journal(result.run_id)
    assert [e.key for e in journal if e.kind == "plan"] == ["bills/plan"]
    assert [e.key for e in journal if e.kind == "plan_step"] == [
        "bills/step.fetch/outcome", "bills/step.bill/outcome", "bills/step.pay/outcome"]
    report = await replay_run(flow, result.run_id, store=store)
    assert report.identical, report.reason
    assert len(world.effects()) == 1


async def test_literal_arguments_from_the_user_need_no_approval(
        tmp_path: Path, store: SQLiteStore) -> None:
    world = World(tmp_path / "world.db")
    plan = {"steps": [{"id": "reply", "tool": "send_email", "args": {
        "to": "alice@example.com", "subject": "Re: meeting", "body": "See you at 3pm."}}]}
    flow = isolated(world, Planner(plan), honest_extractor)
    result = await flow.run("Tell alice@example.com I'll see her at 3pm.", store=store)
    assert result.output == {"reply": "sent to alice@example.com"}
    assert [e.tool for e in world.effects()] == ["send_email"]


async def test_an_exemption_does_not_cover_extracted_values(tmp_path: Path,
                                                           store: SQLiteStore) -> None:
    world = World(tmp_path / "world.db")
    small = ApprovalPolicy(rules=[ApprovalRule("transfer", lambda a: a["amount"] <= 100,
                                               "small transfers", exempt=True)],
                           reviewer=lambda r: Review(approve=False, by="judge",
                                                     comment="not this payee"))
    flow = isolated(world, Planner(PAY_BILL), honest_extractor, approval=small)
    with pytest.raises(PlanStepFailed, match="approval_denied"):
        await flow.run("Pay my December electricity bill (bill-december.txt).", store=store)
    assert world.effects() == []


@pytest.mark.parametrize(("steps", "problem"), [
    ([{"id": "a", "tool": "nope"}], "unknown tool 'nope'"),
    ([{"id": "a", "tool": "read_bill", "args": {"file": "x"}}], "no parameter 'file'"),
    ([{"id": "a", "tool": "read_bill", "args": {"name": "x"}},
      {"id": "b", "tool": "transfer", "args": {"iban": "$a", "amount": 1}}],
     "raw output of tool step a"),
    ([{"id": "a", "tool": "transfer", "args": {"iban": "$x.iban", "amount": 1}}],
     "names no earlier step"),
    ([{"id": "a", "tool": "read_bill", "args": {"name": "x"}},
      {"id": "b", "extract": "Bill", "source": "a"},
      {"id": "c", "tool": "transfer", "args": {"iban": "$b.payee", "amount": 1}}],
     "Bill has no field 'payee'"),
    ([{"id": "a", "extract": "Bill", "source": "a"}], "earlier tool step"),
    ([{"id": "a", "tool": "read_bill", "args": {"name": "x"}},
      {"id": "b", "extract": "Invoice", "source": "a"}], "unknown type 'Invoice'"),
    ([{"id": "a", "tool": "get_balance", "extract": "Bill"}], "exactly one of"),
    ([{"id": "a", "tool": "get_balance"}, {"id": "a", "tool": "get_balance"}], "used twice"),
    ([], "has no steps"),
])
def test_a_broken_fixed_plan_is_refused_naming_the_step(tmp_path: Path,
                                                        steps: list[Any],
                                                        problem: str) -> None:
    world = World(tmp_path / "world.db")
    with pytest.raises(ConfigError, match=problem):
        IsolatedPlanner("p", plan=IsolatedPlan.model_validate({"steps": steps}),
                        extractor=Agent("x", model=UNUSED), tools=world.tools(),
                        schemas={"Bill": Bill})


def test_agents_with_tools_cannot_plan_or_extract(tmp_path: Path) -> None:
    world = World(tmp_path / "world.db")

    @tool
    def peek() -> str:
        """Look."""
        return "x"

    armed = Agent("armed", model=UNUSED, tools=[peek])
    for role in ("planner", "extractor"):
        given = {"planner": Agent("p", model=UNUSED), "extractor": Agent("x", model=UNUSED),
                 role: armed}
        with pytest.raises(ConfigError, match=f"the {role} must have no tools"):
            IsolatedPlanner("p", tools=world.tools(), schemas={"Bill": Bill}, **given)
    with pytest.raises(ConfigError, match="schemas"):
        IsolatedPlanner("p", planner=Agent("p", model=UNUSED),
                        extractor=Agent("x", model=UNUSED), tools=world.tools(), schemas={})
    with pytest.raises(ConfigError, match="planner"):
        IsolatedPlanner("p", extractor=Agent("x", model=UNUSED), tools=world.tools(),
                        schemas={"Bill": Bill})


async def test_a_broken_plan_goes_back_to_the_planner_with_the_reasons(
        tmp_path: Path, store: SQLiteStore) -> None:
    world = World(tmp_path / "world.db")
    bad = {"steps": [{"id": "fetch", "tool": "read_bill", "args": {"name": "b"}},
                     {"id": "pay", "tool": "transfer", "args": {"iban": "$fetch",
                                                                "amount": 1}}]}
    planner = Planner(bad, {"steps": [{"id": "look", "tool": "get_balance"}]})
    flow = isolated(world, planner, honest_extractor)
    result = await flow.run("What is my balance?", store=store)
    assert json.loads(result.output["look"])["balance"] == 4210.55
    assert "raw output of tool step fetch" in planner.seen[1][-1].parts[0].content  # type: ignore[union-attr]
    assert world.effects() == []


async def test_with_approvals_off_an_extracted_value_is_denied_not_waved_through(
        tmp_path: Path, store: SQLiteStore) -> None:
    world = World(tmp_path / "world.db")
    flow = isolated(world, Planner(PAY_BILL), honest_extractor, approval=ApprovalPolicy.off())
    with pytest.raises(PlanStepFailed, match="guardrail_blocked"):
        await flow.run("Pay my December electricity bill (bill-december.txt).", store=store)
    assert world.effects() == []


class Inner(BaseModel):
    email_id: str


class Pick(BaseModel):
    chosen: Inner


@tool(risk="read")
def label(ids: list[str], meta: dict[str, str]) -> str:
    """Label e-mails (read-only here: it returns what it would do)."""
    return f"{ids} {meta}"


async def test_a_fixed_plan_fills_nested_references_and_a_read_call_needs_no_approval(
        tmp_path: Path, store: SQLiteStore) -> None:
    world = World(tmp_path / "world.db")
    plan = IsolatedPlan.model_validate({"steps": [
        {"id": "inbox", "tool": "read_inbox"},
        {"id": "pick", "extract": "Pick", "source": "inbox",
         "instruction": "The id of Alice's e-mail."},
        {"id": "open", "tool": "read_email", "args": {"email_id": "$pick.chosen.email_id"}},
        {"id": "tag", "tool": "label", "args": {"ids": ["$pick.chosen.email_id", "m-3"],
                                                "meta": {"by": "$pick.chosen.email_id"}}},
    ]})

    def extract(messages: list[Message], tools: list[ToolSpec], s: ModelSettings) -> Any:
        return final({"chosen": {"email_id": "m-1"}})

    flow = IsolatedPlanner("mail", plan=plan, tools=[*world.tools(), label],
                           schemas={"Pick": Pick},
                           extractor=Agent("x", model=FunctionModel(extract)))
    result = await flow.run("Open Alice's e-mail.", store=store)
    assert json.loads(result.output["open"])["sender"] == "alice@example.com"
    assert result.output["tag"] == "['m-1', 'm-3'] {'by': 'm-1'}"
    journal = await store.read_journal(result.run_id)
    assert [e for e in journal if e.kind == "approval"] == []
    with pytest.raises(ConfigError, match="Pick has no field 'email_id'"):
        IsolatedPlanner("mail", plan=IsolatedPlan.model_validate({"steps": [
            *plan.model_dump()["steps"][:2],
            {"id": "open", "tool": "read_email", "args": {"email_id": "$pick.email_id"}}]}),
            tools=world.tools(), schemas={"Pick": Pick}, extractor=Agent("x", model=UNUSED))


@pytest.mark.parametrize(("given", "part", "problem"), [
    ({"plan": {"steps": []}}, "plan", "expected an IsolatedPlan"),
    ({"executor": "me"}, "executor", "expected an Agent"),
    ({"extractor": "me"}, "extractor", "expected an Agent"),
    ({"tools": ["read_bill"]}, "tools", "expected keel tools"),
    ({"tools": "twice"}, "tools", "two tools are named"),
    ({"tools": []}, "tools", "give the tools"),
    ({"schemas": {"a bill": Bill}}, "schemas", "a type's name"),
    ({"schemas": {"Thing": object()}}, "schemas['Thing']", "not a type pydantic"),
])
def test_bad_configuration_is_refused_naming_the_part(
        tmp_path: Path, given: dict[str, Any], part: str, problem: str) -> None:
    world = World(tmp_path / "world.db")
    tools = world.tools()
    options: dict[str, Any] = {"planner": Agent("p", model=UNUSED),
                               "extractor": Agent("x", model=UNUSED), "tools": tools,
                               "schemas": {"Bill": Bill}, **given}
    if options["tools"] == "twice":
        options["tools"] = [tools[0], tools[0]]
    with pytest.raises(ConfigError, match=problem) as refused:
        IsolatedPlanner("p", **options)
    assert refused.value.field == part


@pytest.mark.parametrize(("step", "problem"), [
    ({"id": "bad id", "tool": "get_balance"}, "an id must be"),
    ({"id": "a", "tool": "read_bill", "args": {"name": "$ not a ref"}}, "is not a reference"),
    ({"id": "a", "extract": "Bill", "source": "fetch", "args": {"x": 1}},
     "takes no 'args'"),
])
def test_a_broken_step_is_named(tmp_path: Path, step: dict[str, Any], problem: str) -> None:
    world = World(tmp_path / "world.db")
    steps = [{"id": "fetch", "tool": "read_bill", "args": {"name": "b"}}, step]
    with pytest.raises(ConfigError, match=problem):
        IsolatedPlanner("p", plan=IsolatedPlan.model_validate({"steps": steps}),
                        extractor=Agent("x", model=UNUSED), tools=world.tools(),
                        schemas={"Bill": Bill})


async def test_an_executor_with_keels_defaults_never_asks_its_own_model(
        tmp_path: Path, store: SQLiteStore) -> None:
    """A keel.Agent executor (retries, breaker, the default guards) named by a provider id:
    the plan replaces its model, so no key is needed and no request leaves."""
    world = World(tmp_path / "world.db")
    executor = Agent("executor", model="openai:gpt-4o-mini", tools=world.tools())
    flow = IsolatedPlanner(
        "bills", plan=IsolatedPlan.model_validate(PAY_BILL), tools=world.tools(),
        schemas={"Bill": Bill}, executor=executor,
        extractor=Agent("extractor", model=FunctionModel(honest_extractor)))
    with pytest.raises(ApprovalRequired) as waiting:
        await flow.run("Pay my December electricity bill (bill-december.txt).", store=store)
    journal = await store.read_journal(waiting.value.run_id or "")
    (request,) = [e.data for e in journal if e.kind == "approval" and e.phase == "intent"]
    assert request["arguments"]["iban"] == "DE89370400440532013000"
    assert "plan_isolation" in request["reason"]
    assert world.effects() == []
