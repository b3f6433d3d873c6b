"""DataPolicy: the rules per destination, agent and tenant; hashing; blocking; folding of
look-alikes; the cheap gate never skipping what a detector would find; the log hooks; and
configurations that make no sense, refused naming the part."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import random
import string
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from keel import Agent, ConfigError, Escalate, MemoryStore, UserError, tool
from keel.core import JsonFormatter
from keel.guard import (
    DESTINATIONS,
    PII_KINDS,
    SECRET_KINDS,
    DataPolicy,
    Redactor,
    SensitiveDataBlocked,
)
from keel.guard._data_policy import _UNFOLDED, _Folded
from keel.runtime import EscalationPolicy
from keel.store import TaskFilter
from keel.testing import ScriptedModel, call
from tests.guard._planted import CORPUS

KEY = "test-only-hash-key-0123456789abcdef"
CARD = "4111 1111 1111 1111"
EMAIL = "jane.doe@example.com"


# ------------------------------------------------------------------------------ defaults


def test_defaults_mask_secrets_everywhere_and_pii_where_copies_travel() -> None:
    scope = DataPolicy().scope()
    for dest in DESTINATIONS:
        actions = scope.actions(dest)
        assert all(actions[k] == "mask" for k in SECRET_KINDS), dest
    for dest in ("logs", "exports", "packets"):
        assert all(scope.actions(dest)[k] == "mask" for k in PII_KINDS), dest
    assert all(scope.actions("journal")[k] == "allow" for k in PII_KINDS)
    answers = scope.actions("answers")
    assert {k for k in PII_KINDS if answers[k] == "mask"} == {"card", "us_ssn", "uk_nino",
                                                               "es_dni"}
    text = f"mail {EMAIL}, card {CARD}, key sk-ant-{'a1' * 12}"
    assert scope.scrub(text, "journal") == f"mail {EMAIL}, card {CARD}, key [ANTHROPIC_KEY]"
    assert scope.scrub(text, "answers") == f"mail {EMAIL}, card [CARD ****1111], key " \
                                           "[ANTHROPIC_KEY]"
    assert scope.scrub(text, "logs") == "mail [EMAIL], card [CARD ****1111], key [ANTHROPIC_KEY]"


def test_layers_agent_over_policy_over_defaults_and_tenant_over_agent() -> None:
    policy = DataPolicy(
        {"*": {"pii": "mask"}, "logs": {"email": "allow"}},
        agents={"billing": {"answers": {"iban": "allow"}, "logs": {"pii": "hash"}}},
        tenants={"acme": {"logs": {"email": "block"}, "*": {"secrets": "allow"}}},
        hash_key=KEY)
    base = policy.scope()
    assert base.actions("journal")["email"] == "mask"  # "*" reaches the journal
    assert base.actions("logs")["email"] == "allow"  # a named destination beats "*"
    assert base.actions("logs")["phone"] == "mask"
    billing = policy.scope(agent="billing")
    assert billing.actions("answers")["iban"] == "allow"
    assert billing.actions("answers")["card"] == "mask"
    assert billing.actions("logs")["email"] == "hash"  # a later layer's group beats a kind
    both = policy.scope(agent="billing", tenant="acme")
    assert both.actions("logs")["email"] == "block" and both.actions("logs")["phone"] == "hash"
    assert both.actions("exports")["openai_key"] == "allow"
    unknown = policy.scope(agent="nobody", tenant="nobody")
    assert unknown is base, "names without rules get the policy-wide scope (cached)"


def test_a_narrower_group_beats_a_broader_one_in_the_same_layer() -> None:
    scope = DataPolicy({"answers": {"national_id": "allow", "pii": "mask"}}).scope()
    actions = scope.actions("answers")
    assert actions["us_ssn"] == "allow" and actions["email"] == "mask"


# ------------------------------------------------------------------------------ hashing


def test_hash_is_stable_for_the_same_key_and_value_however_written() -> None:
    rules = {"exports": {"pii": "hash"}}
    one, two = DataPolicy(rules, hash_key=KEY), DataPolicy(rules, hash_key=KEY)
    other = DataPolicy(rules, hash_key=KEY + "x")
    a = one.scrub(f"card {CARD}", "exports")
    assert a == two.scrub("card 4111-1111-1111-1111", "exports")
    assert a == one.scrub("card ４１１１ １１１１ １１１１ １１１１", "exports")
    assert a != other.scrub(f"card {CARD}", "exports")
    assert a.startswith("card [CARD:") and "4111" not in a
    assert one.scrub(EMAIL.upper(), "exports") == one.scrub(EMAIL, "exports")


def test_hash_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_DATA_HASH_KEY", KEY)
    by_env = DataPolicy({"logs": {"email": "hash"}}, hash_key_env="TEST_DATA_HASH_KEY")
    by_arg = DataPolicy({"logs": {"email": "hash"}}, hash_key=KEY)
    assert by_env.scrub(EMAIL, "logs") == by_arg.scrub(EMAIL, "logs")
    monkeypatch.delenv("TEST_DATA_HASH_KEY")
    with pytest.raises(ConfigError, match="TEST_DATA_HASH_KEY"):
        DataPolicy({"logs": {"email": "hash"}}, hash_key_env="TEST_DATA_HASH_KEY")


# ----------------------------------------------------------------------------- blocking


def test_block_raises_naming_the_kind_never_the_value() -> None:
    policy = DataPolicy({"answers": {"card": "block"}})
    with pytest.raises(SensitiveDataBlocked) as info:
        policy.scrub(f"your card {CARD} is fine", "answers")
    assert info.value.kinds == ("card",) and "answers" in str(info.value)
    assert "4111" not in str(info.value)
    with pytest.raises(SensitiveDataBlocked, match=r"\$\.card"):
        policy.scope().scrub_value({"card": CARD}, "answers", where="$")
    withheld = policy.scope().scrub_value({"a": f"x {CARD}", "b": "fine"}, "answers",
                                          withhold=True)
    assert withheld == {"a": "[WITHHELD: holds card]", "b": "fine"}


# --------------------------------------------------------------------------- structures


@dataclasses.dataclass
class _Customer:
    email: str
    card_number: int


def test_scrub_value_walks_data_secret_fields_and_long_integers() -> None:
    scope = DataPolicy().scope()
    value: dict[str, Any] = {
        "customer": _Customer(email=EMAIL, card_number=4111111111111111),
        "rows": ({"ip": "203.0.113.7"}, ["ok", 42, 3.5, None, True]),
        "password": "hunter2hunter2", "token": "", "order": 123456789012,
    }
    out = scope.scrub_value(value, "logs")
    assert out == {
        "customer": {"email": "[EMAIL]", "card_number": "[CARD ****1111]"},
        "rows": [{"ip": "[IP_ADDRESS]"}, ["ok", 42, 3.5, None, True]],
        "password": "[SECRET_FIELD]", "token": "", "order": 123456789012,
    }
    nested: list[Any] = []
    cursor = nested
    for _ in range(500):
        cursor.append([])
        cursor = cursor[0]
    assert "TRUNCATED" in json.dumps(scope.scrub_value(nested, "logs"))
    loop: list[Any] = []
    loop.append(loop)
    assert "TRUNCATED" in json.dumps(scope.scrub_value(loop, "logs"))


def test_unicode_tricks_are_folded_and_only_the_value_is_replaced() -> None:
    scope = DataPolicy().scope()
    cases = {
        "é jo\u200bhn@example.com é": "é [EMAIL] é",
        "é\u200b4111\u200b1111 1111 1111\u200b é": "é\u200b[CARD ****1111]\u200b é",
        "«４１１１ １１１１ １１１１ １１１１»": "«[CARD ****1111]»",
        'args {"to": "\\u00ab4111 1111 1111 1111\\u00bb"}':
            'args {"to": "\\u00ab[CARD ****1111]\\u00bb"}',
        'x\\n415-555-2671\\n': "x\\n[PHONE]\\n",
        "Kunde Müller, ohne Daten": "Kunde Müller, ohne Daten",
        "\u0455k-proj-" + "Ab1" * 14 + " ok": "[OPENAI_KEY] ok",
    }
    for text, expected in cases.items():
        assert scope.scrub(text, "logs") == expected, text


def _gate_texts() -> list[str]:
    texts = [item.text for item in CORPUS]
    texts += [json.loads(line)["text"] for line in (
        Path(__file__).parent / "data" / "pii_corpus.jsonl").read_text().splitlines()]
    rng = random.Random(7)
    noise = " .-()+@:/_=#'\"\n" + string.digits
    mutated = []
    for text in texts:  # the corpus with characters dropped, doubled or inserted
        for _ in range(15):
            chars = list(text)
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(chars))
                op = rng.randrange(3)
                if op == 0:
                    del chars[i]
                elif op == 1:
                    chars.insert(i, chars[i])
                else:
                    chars.insert(i, rng.choice(noise))
            mutated.append("".join(chars))
    alphabet = string.ascii_letters + noise
    randoms = ["".join(rng.choice(alphabet) for _ in range(rng.randint(5, 60)))
               for _ in range(3000)]
    return texts + mutated + randoms


GATE_TEXTS = _gate_texts()


@pytest.mark.parametrize("kind", [k for k in (*PII_KINDS, *SECRET_KINDS) if k != "secret_field"])
def test_the_cheap_gate_never_skips_what_a_detector_finds(kind: str) -> None:
    """A destination's gate answers most text before any detector runs; a text it lets pass
    must have no finding of the kinds it acts on. Checked kind by kind on the planted corpus,
    the detectors' own corpus, mutations of both, and random text."""
    redactor = Redactor(kinds=[kind])
    policy = DataPolicy({"*": {"pii": "allow", "secrets": "allow"}, "logs": {kind: "mask"}})
    compiled = policy.scope()._get("logs")
    assert compiled is not None
    views = [t if t.isascii() and "\\" not in t else _Folded(t).text for t in GATE_TEXTS]
    found = [t for t in views if redactor.find(t)]  # what scrub shows the gate and detectors
    assert found, "the texts exercise this kind"
    missed = [t for t in found if not compiled.gate(t)]
    assert not missed, missed[:5]


def test_text_taken_as_already_folded_is_what_folding_gives() -> None:
    """Non-ASCII text that is NFKC-normal and has no invisible, look-alike, dash or foreign
    digit character skips folding; folding it would change nothing."""
    samples = [*GATE_TEXTS, "Müller, Straße 5, 10115 Berlin", "née à Paris", "東京都 03-1234-5678",
               "Ελλάδα", "ﬁle", "e\u0301", "x\u00a0y", "١٢٣٤٥٦", "a\u2013b"]
    quick = [t for t in samples if not t.isascii() and unicodedata.is_normalized("NFKC", t)
             and not _UNFOLDED.search(t)]
    assert quick and len(quick) < len([t for t in samples if not t.isascii()])
    for text in quick:
        assert _Folded(text).text == text, text


def test_the_gate_lets_plain_prose_through_unscanned() -> None:
    scope = DataPolicy().scope()
    for dest in DESTINATIONS:
        compiled = scope._get(dest)
        assert compiled is not None
        assert not compiled.gate("Thanks, the parcel is on its way and arrives on Monday.")
    journal = scope._get("journal")
    assert journal is not None and not journal.gate("mail jane@example.com, order 12345678")


# -------------------------------------------------------------------------------- logs


def _record(msg: str, *args: Any, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("keel.app", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_json_log_lines_are_scrubbed_with_the_agents_rules() -> None:
    policy = DataPolicy(agents={"billing": {"logs": {"email": "allow"}}})
    formatter = JsonFormatter(scrub=policy.log_scrubber())
    line = json.loads(formatter.format(_record("refund to %s for %s", EMAIL, CARD,
                                               agent="support", iban="GB82WEST12345698765432")))
    assert line["message"] == "refund to [EMAIL] for [CARD ****1111]"
    assert line["iban"] == "[IBAN]"
    billing = json.loads(formatter.format(_record("mail %s", EMAIL, agent="billing")))
    assert billing["message"] == f"mail {EMAIL}"


def test_a_failing_log_scrubber_withholds_the_line_and_a_filter_scrubs_in_place() -> None:
    def broken(fields: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("bug")

    out = json.loads(JsonFormatter(scrub=broken).format(_record("card %s", CARD)))
    assert out["message"] == "[WITHHELD: the log scrubber failed: RuntimeError]"
    assert "4111" not in json.dumps(out)
    with pytest.raises(ConfigError, match=r"JsonFormatter\.scrub"):
        JsonFormatter(scrub="nope")  # type: ignore[arg-type]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s|%(phone)s"))
    handler.addFilter(DataPolicy().log_filter())
    logger = logging.getLogger("keel.test_data_policy")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("call %s", "+44 20 7946 0958", extra={"phone": "415-555-2671"})
        try:
            raise ValueError(f"bad card {CARD}")
        except ValueError:
            logger.exception("failed for %s", EMAIL, extra={"phone": ""})
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue()
    assert lines.startswith("call [PHONE]|[PHONE]\nfailed for [EMAIL]|\n")
    assert "ValueError: bad card [CARD ****1111]" in lines and "4111 1111" not in lines


# ----------------------------------------------------------------------- escalation hook


async def test_a_failing_packet_scrubber_still_escalates_without_the_content() -> None:
    def broken(value: Any, record: Any) -> Any:
        raise RuntimeError("bug")

    @tool
    def hand_over(note: str) -> str:
        """Hand the case to a person."""
        raise Escalate(f"needs a person: {note}")

    agent = Agent("support", model=ScriptedModel([call("hand_over", {"note": CARD})]),
                  tools=[hand_over], escalation=EscalationPolicy(scrub_packet=broken))
    store = MemoryStore()
    with pytest.raises(Escalate):
        await agent.run(f"card {CARD}", store=store)
    [task] = await store.list_tasks(TaskFilter(kind="escalation"))
    assert task.data["reason"] == "[WITHHELD: the packet scrubber failed: RuntimeError]"
    assert "4111" not in json.dumps(task.data)
    with pytest.raises(ConfigError, match="scrub_packet"):
        EscalationPolicy(scrub_packet="nope")  # type: ignore[arg-type]


async def test_packets_follow_the_agents_rules() -> None:
    policy = DataPolicy(agents={"kyc": {"packets": {"national_id": "allow"}}})
    ssn = "123-45-6789"
    for name, expected in (("kyc", ssn), ("support", "[US_SSN]")):
        @tool
        def hand_over(note: str) -> str:
            """Hand the case to a person."""
            raise Escalate(f"check {note}")

        agent = Agent(name, model=ScriptedModel([call("hand_over", {"note": ssn})]),
                      tools=[hand_over],
                      escalation=EscalationPolicy(scrub_packet=policy.packet_scrubber()))
        store = MemoryStore()
        with pytest.raises(Escalate):
            await agent.run("check my id", store=store)
        [task] = await store.list_tasks(TaskFilter(kind="escalation"))
        assert task.data["reason"] == f"check {expected}", name


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("kwargs", "part"), [
    ({"rules": {"log": {"pii": "mask"}}}, "DataPolicy.rules['log']"),
    ({"rules": {"logs": {"emial": "mask"}}}, "DataPolicy.rules['logs']['emial']"),
    ({"rules": {"logs": {"email": "redact"}}}, "DataPolicy.rules['logs']['email']"),
    ({"rules": {"logs": "mask"}}, "DataPolicy.rules['logs']"),
    ({"rules": ["logs"]}, "DataPolicy.rules"),
    ({"rules": {"": {}}}, "DataPolicy.rules"),
    ({"agents": {"a": {"answers": {"card": "shred"}}}},
     "DataPolicy.agents['a']['answers']['card']"),
    ({"tenants": {"t": {"packetz": {}}}}, "DataPolicy.tenants['t']['packetz']"),
    ({"tenants": {3: {}}}, "DataPolicy.tenants"),
    ({"rules": {"logs": {"email": "hash"}}}, "DataPolicy.hash_key"),
    ({"agents": {"a": {"logs": {"email": "hash"}}}}, "DataPolicy.hash_key"),
    ({"hash_key": "short"}, "DataPolicy.hash_key"),
    ({"hash_key": KEY, "hash_key_env": "X"}, "DataPolicy.hash_key"),
    ({"hash_key": 12345678901234567890}, "DataPolicy.hash_key"),
    ({"hash_key_env": ""}, "DataPolicy.hash_key_env"),
    ({"patterns": {"ticket": "T-(\\d+"}}, "DataPolicy.patterns['ticket']"),
    ({"patterns": {"pii": "x"}}, "DataPolicy.patterns['pii']"),
    ({"patterns": {"email": "x"}}, "DataPolicy.patterns['email']"),
    ({"patterns": {"empty": "a*"}}, "DataPolicy.patterns['empty']"),
    ({"patterns": {"n": 5}}, "DataPolicy.patterns['n']"),
    ({"tenant_of": "metadata"}, "DataPolicy.tenant_of"),
    ({"min_confidence": 2.0}, "DataPolicy.min_confidence"),
])
def test_bad_configuration_is_refused_naming_the_part(kwargs: dict[str, Any], part: str) -> None:
    with pytest.raises(ConfigError) as info:
        DataPolicy(**kwargs)
    assert info.value.field == part, str(info.value)


def test_custom_patterns_are_masked_everywhere_unless_a_rule_says_otherwise() -> None:
    policy = DataPolicy({"answers": {"ticket": "allow"}}, patterns={"ticket": r"TCK-\d{6}"})
    assert policy.scrub("see TCK-123456 now", "logs") == "see [TICKET] now"
    assert policy.scrub("see TCK-123456 now", "answers") == "see TCK-123456 now"


def test_misuse_is_a_clear_error() -> None:
    policy = DataPolicy()
    with pytest.raises(UserError, match="unknown destination 'log'"):
        policy.scrub("x", "log")
    with pytest.raises(UserError, match="scrub_value"):
        policy.scrub(b"x", "logs")  # type: ignore[arg-type]


def test_hostile_text_is_scrubbed_whole() -> None:
    scope = DataPolicy().scope()
    big = ("\u200b\u202e" + "x" * 1000 + " 4111 1111 1111 1111 ") * 300 + "\x00\x1b[31m" * 100
    out = scope.scrub(big, "logs")
    assert "4111 1111" not in out and out.count("[CARD ****1111]") == 300
    binary = bytes(range(256)).decode("latin-1") * 50
    assert scope.scrub(binary, "logs") == binary


def test_an_export_keeps_keels_own_fields_and_scrubs_every_other() -> None:
    from keel.store import RunRecord

    record = RunRecord(run_id="r1", agent="support", status="completed", input=EMAIL,
                       created_at=1.0, updated_at=2.0, metadata={"tenant": "acme"})
    view = {"run_id": "r1", "agent": "support", "status": "completed", "input": EMAIL,
            "usage": {"requests": 4111111111111111}, "plans": [{"step": f"mail {EMAIL}"}],
            "journal": [{"key": "support/turn:0/tool:send#0", "data": {"content": CARD}}]}
    policy = DataPolicy(tenants={"acme": {"exports": {"email": "allow"}}})
    assert policy.scrub_export(view, record) == {
        **view, "journal": [{"key": "support/turn:0/tool:send#0",
                             "data": {"content": "[CARD ****1111]"}}]}
    other = dataclasses.replace(record, metadata={})
    scrubbed = policy.scrub_export(view, other)
    assert scrubbed["input"] == "[EMAIL]" and scrubbed["plans"] == [{"step": "mail [EMAIL]"}]
    export = {"format": "keel.run", "run": {"run_id": "r1", "input": EMAIL}, "journal": []}
    assert policy.scrub_export(export, other)["run"] == {"run_id": "r1", "input": "[EMAIL]"}


@pytest.mark.parametrize(("kwargs", "part"), [
    ({"places": ["tool_args"]}, "DataGuard.places"),
    ({"places": []}, "DataGuard.places"),
    ({"policy": {"logs": {}}}, "DataGuard.policy"),
    ({"tenant": "acme"}, "DataGuard.tenant"),
])
def test_a_data_guard_that_makes_no_sense_is_refused(kwargs: dict[str, Any], part: str) -> None:
    from keel.guard import DataGuard

    with pytest.raises(ConfigError) as info:
        DataGuard(**kwargs)
    assert info.value.field == part


async def test_the_data_guard_names_the_kinds_never_the_values() -> None:
    from keel import GuardInput
    from keel.guard import DataGuard

    guard = DataGuard(DataPolicy({"journal": {"email": "hash"}}, hash_key=KEY),
                      tenant=lambda inp: inp.deps)
    inp = GuardInput(place="tool_output", text=f"{EMAIL} paid with {CARD}", run_id="r",
                     agent="support", step_key="support/turn:0/tool:x#0", deps="acme")
    decision = await guard.check(inp)
    assert decision is not None and decision.action == "redact"
    assert decision.text is not None and decision.text.startswith("[EMAIL:")
    assert CARD in decision.text  # the journal keeps cards by default
    assert decision.evidence == {"kinds": ["email"], "destinations": ["journal"]}
    assert EMAIL not in decision.reason
    answer = dataclasses.replace(inp, place="output", text=f"card {CARD}")
    decision = await guard.check(answer)
    assert decision is not None and decision.text == "card [CARD ****1111]"
    assert await guard.check(dataclasses.replace(inp, text="nothing here")) is None
