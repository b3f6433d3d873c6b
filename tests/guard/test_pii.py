"""PII and secret detection and redaction (keel.guard's Redactor) against a planted corpus."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keel import ConfigError
from keel.guard import (
    PII_KINDS,
    SECRET_KINDS,
    Redactor,
    SensitiveDataBlocked,
    find_pii,
    find_secrets,
    iban_valid,
    luhn_valid,
)

CORPUS = [json.loads(line) for line in
          (Path(__file__).parent / "data" / "pii_corpus.jsonl").read_text().splitlines()]
PLANTED = [(r["text"], p) for r in CORPUS for p in r["planted"]]
KEY = b"tenant-42-redaction-key"


def test_the_corpus_plants_every_kind() -> None:
    planted = {p["kind"] for _, p in PLANTED}
    assert planted >= set(PII_KINDS)
    assert planted >= set(SECRET_KINDS) - {"secret_field", "bearer_token"}


@pytest.mark.parametrize(("text", "planted"), PLANTED,
                         ids=[f"{p['kind']}-{i}" for i, (_, p) in enumerate(PLANTED)])
def test_every_planted_item_is_found_with_its_kind_and_masked(text: str, planted: Any) -> None:
    redactor = Redactor()
    findings = redactor.find(text)
    assert any(f.kind == planted["kind"] and f.text == planted["value"] for f in findings), \
        [(f.kind, f.text) for f in findings]
    out, _ = redactor.redact_text(text)
    assert planted["value"] not in out
    assert f"[{planted['kind'].upper()}" in out


def test_invalid_look_alikes_and_benign_text_are_left_alone() -> None:
    redactor = Redactor()
    kept = 0
    for record in CORPUS:
        out, findings = redactor.redact_text(record["text"])
        for keep in record["keep"]:
            assert keep in out, (keep, [(f.kind, f.text) for f in findings])
            kept += 1
        if not record["planted"]:
            assert findings == [], [(f.kind, f.text) for f in findings]
    assert kept >= 35


def test_planted_recall_is_100_percent_over_the_whole_corpus() -> None:
    redactor = Redactor()
    outputs = [redactor.redact_text(r["text"])[0] for r in CORPUS]
    leaked = [p["value"] for r, out in zip(CORPUS, outputs, strict=True)
              for p in r["planted"] if p["value"] in out]
    assert leaked == []
    assert len(PLANTED) >= 45


def test_validators() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89370400440532013000")
    assert not iban_valid("DE89370400440532013001")  # checksum
    assert not iban_valid("DE8937040044053201300")  # Germany's length is 22
    assert not iban_valid("XX89370400440532013000")  # no such country


def test_masks_keep_the_last_four_digits_of_a_card_only() -> None:
    out, _ = Redactor().redact_text("card 4111-1111-1111-1111 ok")
    assert out == "card [CARD ****1111] ok"


def test_hash_is_stable_across_messages_and_formats_and_keyed() -> None:
    redactor = Redactor({"pii": "hash"}, hash_key=KEY)
    a, _ = redactor.redact_text("I am Jane.Doe@Example.com, card 4111 1111 1111 1111")
    b, _ = redactor.redact_text("write to jane.doe@example.com; card 4111-1111-1111-1111")
    tag_a = [t for t in a.split() if t.startswith("[EMAIL:")]
    assert tag_a and tag_a[0].rstrip(",") in b
    assert a.split("card ")[1] == b.split("card ")[1]
    assert "jane" not in a.lower() and "4111" not in a
    other, _ = Redactor({"pii": "hash"}, hash_key=b"another-tenant").redact_text(
        "jane.doe@example.com")
    assert other not in a
    # the same key gives the same hash in a new Redactor (a new process, a new worker)
    again, _ = Redactor({"email": "hash"}, hash_key=KEY).redact_text("jane.doe@example.com")
    assert again in b


def test_block_names_the_kind_and_never_the_value() -> None:
    redactor = Redactor({"secrets": "block", "email": "mask"})
    text = "key AKIAIOSFODNN7EXAMPLE, mail bob@example.com"
    with pytest.raises(SensitiveDataBlocked) as caught:
        redactor.redact_text(text)
    err = caught.value
    assert err.kinds == ("aws_access_key_id",)
    assert "aws_access_key_id" in str(err)
    assert "AKIAIOSFODNN7EXAMPLE" not in str(err) and "AKIAIOSFODNN7EXAMPLE" not in repr(err)
    assert "bob@example.com" not in str(err)
    with pytest.raises(SensitiveDataBlocked) as nested:
        redactor.redact_value({"user": {"notes": ["fine", text]}})
    assert "$.user.notes[1]" in str(nested.value)
    assert "AKIA" not in str(nested.value)
    # a kind's own entry beats its group
    out, _ = Redactor({"secrets": "block", "aws_access_key_id": "mask"}).redact_text(text)
    assert out == "key [AWS_ACCESS_KEY_ID], mail [EMAIL]"


def test_redact_value_walks_nested_json_and_replaces_secret_fields() -> None:
    @dataclass
    class Customer:
        name: str
        email: str

    value = {
        "ticket": 48213,
        "messages": [
            {"from": "customer", "text": "my card is 5555-5555-5555-4444", "at": "2024-05-01"},
            ("reply", "we will call +44 20 7946 0958"),
        ],
        "headers": {"Authorization": "Basic dXNlcjpwYXNz", "X-Request-Id": "abc-123"},
        "password": 12345678,
        "api_key": None,
        "customer": Customer(name="Jane", email="jane@example.com"),
        "ok": True,
    }
    out = Redactor().redact_value(value)
    assert out == {
        "ticket": 48213,
        "messages": [
            {"from": "customer", "text": "my card is [CARD ****4444]", "at": "2024-05-01"},
            ["reply", "we will call [PHONE]"],
        ],
        "headers": {"Authorization": "[SECRET_FIELD]", "X-Request-Id": "abc-123"},
        "password": "[SECRET_FIELD]",
        "api_key": None,
        "customer": {"name": "Jane", "email": "[EMAIL]"},
        "ok": True,
    }
    assert value["password"] == 12345678  # the input is not modified


def test_overlaps_resolve_deterministically() -> None:
    # the URL password also reads as an e-mail ("S3cr3t@db.example.com"): the secret wins
    text = "postgres://app:S3cr3t@db.example.com/prod"
    redactor = Redactor()
    findings = redactor.find(text)
    assert [(f.kind, f.text) for f in findings] == [("url_password", "S3cr3t")]
    assert redactor.redact_text(text)[0] == "postgres://app:[URL_PASSWORD]@db.example.com/prod"
    # the raw detectors do report both
    assert {f.kind for f in find_pii(text)} == {"email"}
    assert {f.kind for f in find_secrets(text)} == {"url_password"}
    # order of detectors does not matter: only the kinds' ranking
    again = Redactor(kinds=["email", "url_password"]).find(text)
    assert again == findings


def test_custom_patterns_and_limited_kinds() -> None:
    redactor = Redactor({"order_ref": "hash"}, patterns={"order_ref": r"ORD-\d{6}"},
                        kinds=["order_ref", "email"], hash_key="k")
    out, findings = redactor.redact_text("ORD-123456 for a@example.com at 203.0.113.9")
    assert [f.kind for f in findings] == ["order_ref", "email"]
    assert out.startswith("[ORDER_REF:") and out.endswith("[EMAIL] at 203.0.113.9")


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"policy": {"emial": "mask"}}, "policy['emial']"),
    ({"policy": {"email": "scramble"}}, "policy['email']"),
    ({"policy": {"email": "hash"}}, "hash_key"),
    ({"default": "hash"}, "hash_key"),
    ({"default": "drop"}, "default"),
    ({"patterns": {"order": "ORD-(\\d+"}}, "patterns['order']"),
    ({"patterns": {"order": "x*"}}, "patterns['order']"),
    ({"patterns": {"email": "x"}}, "patterns['email']"),
    ({"kinds": ["email", "passport"]}, "kinds"),
    ({"kinds": []}, "kinds"),
    ({"kinds": ["email"], "policy": {"card": "block"}}, "policy['card']"),
    ({"min_confidence": 2}, "min_confidence"),
    ({"max_depth": 0}, "max_depth"),
])
def test_nonsense_configuration_is_refused_naming_the_part(kwargs: Any, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Redactor(**kwargs)
    assert caught.value.field == field


def test_a_megabyte_of_hostile_text_finishes_quickly() -> None:
    redactor = Redactor()
    hostile = [
        "a" * 1_000_000,
        "1" * 1_000_000,
        "1 " * 500_000,
        "@a." * 333_333,
        "a@" * 500_000,
        "+1 " * 333_333,
        "-----BEGIN RSA PRIVATE KEY-----" * 32_000,
        "eyJhbGciOi." * 90_000,
        "https://" + "a" * 1_000_000 + ":" + "b" * 100,
        "password: " * 100_000,
        "DE89 " * 200_000,
        "::" * 500_000,
        "1.1." * 250_000,
        "sk-" + "a" * 1_000_000,
    ]
    for text in hostile:
        start = time.perf_counter()
        out, _ = redactor.redact_text(text)
        elapsed = time.perf_counter() - start
        assert isinstance(out, str)
        assert elapsed < 5.0, (text[:20], elapsed)


def test_a_realistic_megabyte_is_redacted_completely() -> None:
    text = "\n".join(r["text"] for r in CORPUS) + "\n"
    big = text * (1_000_000 // len(text) + 1)
    start = time.perf_counter()
    out, findings = Redactor().redact_text(big)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0
    assert all(p["value"] not in out for _, p in PLANTED)
    assert len(findings) >= len(PLANTED) * (len(big) // len(text))


def test_deep_nesting_is_truncated_not_a_crash() -> None:
    deep: Any = "jane@example.com"
    for _ in range(100_000):
        deep = [deep]
    out = Redactor(max_depth=32).redact_value(deep)
    for _ in range(32):
        out = out[0]
    assert out == "[TRUNCATED: nested deeper than 32]"
    loop: dict[str, Any] = {"mail": "jane@example.com"}
    loop["self"] = loop
    looped = Redactor().redact_value(loop)
    assert looped["mail"] == "[EMAIL]"
    assert "jane" not in json.dumps(looped)


CORE_SAMPLES = [
    "key sk-abcdefghijklmnop1234 here",
    "anthropic sk-ant-abcdefghijklmnop1234",
    "OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrst",
    "Authorization: Bearer abcdefghijklmnop.qrstu-vwx",
    "token ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "gho_abcdefghijklmnopqrst and more",
    "aws AKIAIOSFODNN7EXAMPLE.",
    "slack xoxp-1234567890-abcdef",
]


@pytest.mark.parametrize("text", CORE_SAMPLES)
def test_masks_at_least_what_keel_core_masks_in_logs(text: str) -> None:
    from keel.core import REDACTED, redact_text

    core = redact_text(text)
    assert REDACTED in core  # the sample is one core masks
    secret = text[core.index(REDACTED):][: len(text) - len(core) + len(REDACTED)]
    out, findings = Redactor().redact_text(text)
    assert secret not in out
    assert findings and all(f.kind in SECRET_KINDS for f in findings)


def test_secret_named_keys_are_replaced_like_keel_core_does() -> None:
    from keel.core import REDACTED, redact

    value = {"api_key": "plain", "client_secret": 7, "password": "", "x-api-key": "v",
             "refresh_token": ["a"], "name": "Ann"}
    core = redact(value)
    ours = Redactor().redact_value(value)
    assert {k for k, v in core.items() if v == REDACTED} == \
        {k for k, v in ours.items() if v == "[SECRET_FIELD]"}
    assert ours["password"] == "" and ours["name"] == "Ann"


def test_the_docs_example_runs() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    section = doc.split("## PII and secrets", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(block, "docs/security.md", "exec"), {})  # our own docs


def test_a_finding_repr_does_not_show_the_value() -> None:
    (finding,) = find_secrets("key AKIAIOSFODNN7EXAMPLE")
    assert finding.text == "AKIAIOSFODNN7EXAMPLE"
    assert "AKIAIOSFODNN7EXAMPLE" not in repr(finding)


def _luhn_complete(prefix: str) -> str:
    for d in "0123456789":
        if luhn_valid(prefix + d):
            return prefix + d
    raise AssertionError


def test_random_cards_are_flagged_exactly_when_luhn_holds() -> None:
    rng = random.Random(11)
    redactor = Redactor(kinds=["card"])
    for _ in range(500):
        valid = _luhn_complete("4" + "".join(rng.choice("0123456789") for _ in range(14)))
        invalid = valid[:-1] + str((int(valid[-1]) + rng.randint(1, 9)) % 10)
        grouped = " ".join(valid[i:i + 4] for i in range(0, 16, 4))
        assert [f.kind for f in redactor.find(f"paid with {grouped} today")] == ["card"]
        assert redactor.find(f"paid with {invalid} today") == []


def test_random_ibans_are_flagged_exactly_when_the_checksum_holds() -> None:
    rng = random.Random(13)
    redactor = Redactor(kinds=["iban"])
    for _ in range(300):
        bban = "".join(rng.choice("0123456789") for _ in range(18))
        check = 98 - int("".join(str(int(c, 36)) for c in bban + "DE00")) % 97
        valid = f"DE{check:02d}{bban}"
        assert iban_valid(valid)
        wrong = f"DE{(check + rng.randint(1, 96)) % 97 or 97:02d}{bban}"
        spaced = " ".join(valid[i:i + 4] for i in range(0, 22, 4))
        assert [f.text for f in redactor.find(f"to {spaced}.")] == [spaced]
        assert redactor.find(f"to {wrong}.") == []


def test_redact_text_refuses_what_is_not_text() -> None:
    from keel import UserError

    with pytest.raises(UserError, match="redact_value"):
        Redactor().redact_text({"mail": "a@example.com"})  # type: ignore[arg-type]
