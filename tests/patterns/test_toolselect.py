"""Tool selection: an agent with 60 tools in 8 groups sees only the groups a turn needs."""

from __future__ import annotations

from typing import Any

import pytest

from keel import Agent, ConfigError, MemoryStore, tool
from keel.core import Message, ModelSettings, ToolSpec
from keel.patterns import Rule, RuleRouter, ToolSelector
from keel.runtime import FlowContext, flow, replay_run
from keel.testing import FunctionModel, ScriptedModel
from keel.tools import Tool

CATALOGUE: dict[str, list[tuple[str, str]]] = {
    "billing": [
        ("get_invoice", "Fetch an invoice by number"),
        ("list_charges", "List the card charges of a customer"),
        ("refund_charge", "Refund a duplicate or wrong charge"),
        ("update_card", "Update the payment card on file"),
        ("apply_discount", "Apply a discount or coupon to the bill"),
        ("payment_status", "Check whether a payment went through"),
        ("billing_history", "Show the billing history and receipts"),
        ("change_plan", "Change the subscription plan and its price"),
    ],
    "shipping": [
        ("track_parcel", "Track a parcel with the courier's tracking number"),
        ("delivery_eta", "Estimate when an order will be delivered"),
        ("change_delivery_address", "Change the delivery address of an order"),
        ("rebook_delivery", "Rebook a missed delivery slot"),
        ("shipping_rates", "Quote shipping costs to a country"),
        ("report_lost_parcel", "Report a parcel lost by the carrier"),
        ("customs_status", "Check a parcel held in customs"),
        ("pickup_points", "Find pickup points near an address"),
    ],
    "returns": [
        ("start_return", "Start a return for an order item"),
        ("return_label", "Create a return shipping label"),
        ("exchange_item", "Exchange an item for another size or colour"),
        ("return_status", "Check the status of a return and its refund"),
        ("return_policy", "Explain the return policy and deadlines"),
        ("warranty_claim", "File a warranty claim for a faulty product"),
        ("store_credit", "Issue store credit instead of a refund"),
        ("schedule_return_pickup", "Schedule a courier to collect a return"),
    ],
    "account": [
        ("reset_password", "Send a password reset link"),
        ("change_email", "Change the login email address"),
        ("unlock_account", "Unlock an account locked after failed logins"),
        ("enable_2fa", "Turn on two-factor authentication"),
        ("delete_account", "Delete the account and personal data"),
        ("export_personal_data", "Export a copy of the customer's personal data"),
        ("update_profile", "Update name, phone number or profile details"),
        ("list_sessions", "List the devices logged in to the account"),
    ],
    "technical": [
        ("device_diagnostics", "Run diagnostics on a connected device"),
        ("firmware_update", "Push a firmware update to a device"),
        ("factory_reset", "Factory reset a device"),
        ("app_crash_logs", "Fetch the app's crash logs"),
        ("wifi_troubleshoot", "Troubleshoot wifi and bluetooth connection problems"),
        ("error_code_lookup", "Explain a device error code"),
        ("service_status", "Check outages of our website and API"),
    ],
    "catalog": [
        ("search_products", "Search the product catalogue"),
        ("product_details", "Show a product's details and specifications"),
        ("stock_level", "Check whether a product is in stock"),
        ("compare_products", "Compare two products side by side"),
        ("price_lookup", "Look up a product's current price"),
        ("recommend_products", "Recommend products for a need"),
        ("product_reviews", "Show customer reviews of a product"),
    ],
    "stores": [
        ("store_hours", "Opening hours of a store"),
        ("find_store", "Find the nearest store"),
        ("book_appointment", "Book an in-store appointment"),
        ("store_events", "List events in a store"),
        ("store_contact", "Phone number and address of a store"),
        ("accessibility_info", "Accessibility of a store"),
        ("parking_info", "Parking near a store"),
    ],
    "core": [
        ("lookup_customer", "Look up the customer's record"),
        ("lookup_order", "Look up an order by its number"),
        ("add_note", "Add a note to the customer's ticket"),
        ("handoff_to_human", "Hand the conversation to a human agent"),
        ("send_message", "Send the customer a message"),
        ("search_help_articles", "Search the help centre articles"),
        ("create_ticket", "Create a support ticket"),
    ],
}


def _tool(name: str, description: str, group: str) -> Tool:
    def fn(query: str = "") -> str:
        return f"{name}({query})"

    return tool(fn, name=name, description=description, group=group)


TOOLS = [_tool(n, d, g) for g, items in CATALOGUE.items() for n, d in items]


def test_the_catalogue_is_60_tools_in_8_groups() -> None:
    assert len(TOOLS) == 60 and len({t.meta.group for t in TOOLS}) == 8


@pytest.mark.parametrize(("turn", "group"), [
    ("I was charged twice for my subscription, please refund one charge", "billing"),
    ("where is my parcel? the tracking number shows nothing", "shipping"),
    ("I want to send back these shoes and get a return label", "returns"),
    ("I forgot my password and my account is locked", "account"),
    ("the device shows error code E42 after the firmware update", "technical"),
    ("is the blue kettle in stock and what does it cost", "catalog"),
    ("what time does your store open on Saturday", "stores"),
])
async def test_only_the_relevant_groups_are_exposed(turn: str, group: str) -> None:
    selector = ToolSelector(TOOLS, always=["core"], max_groups=2)
    chosen = await selector.select(turn)
    assert not chosen.all_groups
    assert chosen.groups[0] == group, chosen.decision
    assert chosen.groups[-1] == "core" and len(chosen.groups) <= 3
    names = {t.name for t in chosen.tools}
    assert {n for n, _ in CATALOGUE[group]} <= names
    assert {n for n, _ in CATALOGUE["core"]} <= names
    assert len(names) <= 24 < len(TOOLS)
    assert all(t.meta.group in chosen.groups for t in chosen.tools)


async def test_agent_for_clones_the_agent_with_the_selected_tools() -> None:
    base = Agent("support", model=ScriptedModel(["ok"]), tools=TOOLS)
    selector = ToolSelector(TOOLS, always=["core"], max_groups=1)
    agent = await selector.agent_for("please reset my password", base)
    assert {t.meta.group for t in agent.toolset} == {"account", "core"}
    assert len(agent.toolset) == 15 and len(base.toolset) == 60


async def test_inside_a_run_the_selection_is_journaled_and_the_model_sees_only_it() -> None:
    seen: list[list[str]] = []

    def answer(messages: list[Message], tools: list[ToolSpec],
               settings: ModelSettings) -> str:
        seen.append(sorted(t.name for t in tools))
        return "done"

    base = Agent("support", model=FunctionModel(answer), tools=TOOLS)
    selector = ToolSelector(TOOLS, always=["core"], max_groups=1)

    @flow("desk", agents=[base])
    async def desk(ctx: FlowContext, input: str) -> Any:
        return (await selector.run_agent(ctx, base, input)).output

    store = MemoryStore()
    result = await desk.run("the courier lost my parcel", store=store)
    assert result.output == "done"
    expected = sorted(n for g in ("shipping", "core") for n, _ in CATALOGUE[g])
    assert seen == [expected]
    step = [e for e in await store.read_journal(result.run_id)
            if e.kind == "tool_select" and e.phase == "result"]
    assert len(step) == 1 and step[0].key == "desk/support.tools"
    assert step[0].data["groups"] == ["shipping", "core"]
    assert 0 < step[0].data["decision"]["confidence"] <= 1
    report = await replay_run(desk, result.run_id, store=store)
    assert report.identical, report


async def test_unsure_turns_see_every_tool_or_only_the_always_groups() -> None:
    rules = RuleRouter([Rule("billing", keywords=("invoice",))])
    everything = ToolSelector(TOOLS, router=rules, always=["core"])
    chosen = await everything.select("hello there")
    assert chosen.all_groups and len(chosen.tools) == 60
    strict = ToolSelector(TOOLS, router=rules, always=["core"], on_low_confidence="always")
    assert (await strict.select("hello there")).groups == ("core",)
    assert (await strict.select("my invoice")).groups == ("billing", "core")


def test_bad_tool_selector_settings_name_the_part() -> None:
    with pytest.raises(ConfigError, match="tools"):
        ToolSelector([])
    with pytest.raises(ConfigError, match="always"):
        ToolSelector(TOOLS, always=["nope"])
    with pytest.raises(ConfigError, match="max_groups"):
        ToolSelector(TOOLS, max_groups=0)
    with pytest.raises(ConfigError, match="threshold"):
        ToolSelector(TOOLS, threshold=1.5)
    with pytest.raises(ConfigError, match="router"):
        ToolSelector(TOOLS, router=RuleRouter([Rule("refunds", keywords=("x",))]))
    with pytest.raises(ConfigError, match="examples"):
        ToolSelector(TOOLS, examples={"nope": ["x"]})
    with pytest.raises(ConfigError, match="two tools"):
        ToolSelector(TOOLS, groups={"extra": [TOOLS[0]]})
