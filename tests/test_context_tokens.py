"""Token counting (keel.context): exact BPE counts offline, estimates, request overheads,
calibration from reported usage, bad input, and the no-network guarantee."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import pytest

from keel.context import (
    BPETokenizer,
    EstimateTokenizer,
    ScaledTokenizer,
    TokenCalibration,
    context_window,
    count_message_tokens,
    count_tokens,
    default_calibration,
    get_tokenizer,
    known_tokenizers,
    message_tokens,
    observe_usage,
    register_tokenizer,
    tokenizer_for,
    tool_spec_tokens,
)
from keel.core import (
    ConfigError,
    Message,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
    UserError,
)
from keel.models import ModelInfo, model_info, register_model_info
from keel.testing import ScriptedModel

# Token ids published in OpenAI's tiktoken cookbook / README (hand-checked, not produced by
# the code under test).
KNOWN_IDS = {
    ("cl100k_base", "hello world"): [15339, 1917],
    ("cl100k_base", "tiktoken is great!"): [83, 1609, 5963, 374, 2294, 0],
    ("o200k_base", "hello world"): [24912, 2375],
    ("o200k_base", "tiktoken is great!"): [83, 8251, 2488, 382, 2212, 0],
}


# ---------------------------------------------------------------------------- exact counts


@pytest.mark.parametrize(("encoding", "text"), list(KNOWN_IDS))
def test_exact_encodings_match_published_token_ids(encoding: str, text: str) -> None:
    tokenizer = get_tokenizer(encoding)
    assert isinstance(tokenizer, BPETokenizer)
    assert tokenizer.exact
    assert tokenizer.encoding.encode_ordinary(text) == KNOWN_IDS[(encoding, text)]
    assert tokenizer.count(text) == len(KNOWN_IDS[(encoding, text)])


def test_count_tokens_picks_the_family_encoding() -> None:
    assert count_tokens("tiktoken is great!", "openai:gpt-4o-mini") == 6
    assert count_tokens("hello world", "openai:gpt-4") == 2
    assert count_tokens("", "openai:gpt-4o") == 0
    # o200k merges more than cl100k on the same multilingual text.
    text = "Les modèles de langage comptent des jetons, 言語モデルはトークンを数える。" * 20
    assert count_tokens(text, "openai:gpt-4o") < count_tokens(text, "openai:gpt-3.5-turbo")


def test_shipped_files_are_openais_and_patterns_are_tiktokens(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The split patterns and special tokens keel builds the encodings with are tiktoken's
    own (its constructors run with the download replaced by an empty rank table)."""
    import tiktoken_ext.openai_public as public

    from keel.context._tokenizers import ENCODINGS

    monkeypatch.setattr(public, "load_tiktoken_bpe", lambda *a, **k: {})
    for name, spec in ENCODINGS.items():
        theirs = getattr(public, name)()
        assert theirs["pat_str"] == spec.pat_str
        assert theirs["special_tokens"] == spec.special_tokens
        assert resources.files("keel.context").joinpath("data").joinpath(spec.file).is_file()


def test_special_token_text_and_lone_surrogates_count_as_text() -> None:
    assert count_tokens("<|endoftext|>", "openai:gpt-4o") > 1
    assert count_tokens("a\ud800b", "openai:gpt-4o") >= 2


# ---------------------------------------------------------------------------- model -> tokenizer


@pytest.mark.parametrize(("model", "name", "exact"), [
    ("openai:gpt-4o-mini", "o200k_base", True),
    ("openai:gpt-4o-2024-08-06", "o200k_base", True),
    ("openai:gpt-4.1-nano", "o200k_base", True),
    ("openai:gpt-5", "o200k_base", True),
    ("openai:o3-mini", "o200k_base", True),
    ("openai:o1-preview", "o200k_base", True),
    ("openai:gpt-4", "cl100k_base", True),
    ("openai:gpt-4-turbo-2024-04-09", "cl100k_base", True),
    ("openai:gpt-3.5-turbo", "cl100k_base", True),
    ("anthropic:claude-haiku-4-5", "claude_estimate", False),
    ("anthropic:claude-future-9", "claude_estimate", False),
    ("openai:qwen2.5@http://localhost:11434/v1", "estimate", False),
    ("openai:gpt-4o@http://127.0.0.1:4000/v1", "o200k_base", True),
    ("test:scripted", "estimate", False),
    ("no-provider-at-all", "estimate", False),
    ("as_of:x", "estimate", False),
    ("default_tokenizer:openai", "estimate", False),
    (":", "estimate", False),
    (None, "estimate", False),
])
def test_tokenizer_for_each_family(model: str | None, name: str, exact: bool) -> None:
    tokenizer = tokenizer_for(model)
    assert tokenizer.name == name
    assert getattr(tokenizer, "exact", False) is exact


def test_tokenizer_for_a_model_object_and_its_window() -> None:
    scripted = ScriptedModel(["hi"])
    assert tokenizer_for(scripted).name == "estimate"
    assert context_window(scripted) is None
    register_model_info(ModelInfo(provider="test", model="small-window", context_window=8000))
    small = ScriptedModel(["hi"], name="test:small-window")
    assert context_window(small) == 8000
    assert context_window("openai:gpt-4") == 8192
    assert context_window("openai:gpt-4o@http://127.0.0.1:4000/v1") == 128000


def test_model_info_carries_the_tokenizer_and_unpriced_rows() -> None:
    assert model_info("openai", "gpt-4o").tokenizer == "o200k_base"
    assert model_info("anthropic", "claude-unknown").tokenizer == "claude_estimate"
    assert model_info("openai", "llama3").tokenizer == "estimate"
    assert model_info("mistral", "x").tokenizer == "estimate"
    preview = model_info("openai", "gpt-4.5-preview")
    assert (preview.priced, preview.context_window, preview.cost(1000, 1000)) == \
        (False, 128000, 0.0)
    gpt4 = model_info("openai", "gpt-4-0613")
    assert gpt4.priced and gpt4.cost(1_000_000, 0) == 30.0


def test_every_tokenizer_named_in_the_provider_data_is_known() -> None:
    text = resources.files("keel.models").joinpath("providers.json").read_text("utf-8")
    data = json.loads(text)
    named = set(data["default_tokenizer"].values())
    for provider in ("openai", "anthropic"):
        named |= {row["tokenizer"] for row in data[provider].values()}
    assert named <= set(known_tokenizers())


def test_unknown_tokenizer_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown tokenizer 'gpt2'.*o200k_base.*estimate"):
        get_tokenizer("gpt2")
    with pytest.raises(ConfigError, match="unknown tokenizer"):
        count_tokens("x", tokenizer="nope")
    register_model_info(ModelInfo(provider="openai", model="typo-model", tokenizer="o200k"))
    with pytest.raises(ConfigError, match="known tokenizers: o200k_base"):
        tokenizer_for("openai:typo-model")
    with pytest.raises(ConfigError, match="unknown tokenizer"):
        get_tokenizer(None)  # type: ignore[arg-type]


def test_registered_tokenizer_serves_a_model() -> None:
    class Words:
        name = "test_words"

        def count(self, text: str) -> int:
            return len(text.split())

    register_tokenizer(Words())
    register_model_info(ModelInfo(provider="openai", model="wordy", tokenizer="test_words"))
    assert count_tokens("one two three", "openai:wordy") == 3
    assert "test_words" in known_tokenizers()
    with pytest.raises(ConfigError, match="keel's own"):
        register_tokenizer(EstimateTokenizer(name="o200k_base"))
    with pytest.raises(ConfigError, match="name"):
        register_tokenizer(object())  # type: ignore[arg-type]


def test_estimates() -> None:
    assert EstimateTokenizer().count("abcdefgh") == 2
    assert EstimateTokenizer().count("a") == 1
    assert EstimateTokenizer(2).count("abcdefgh") == 4
    claude = get_tokenizer("claude_estimate")
    o200k = get_tokenizer("o200k_base")
    prose = "The quick brown fox jumps over the lazy dog. " * 10
    assert claude.count(prose) == -(-o200k.count(prose) * 12 // 10)
    # The generic estimate does not under-count CJK the way characters / 4 does.
    cjk = "言語モデルはトークンを数える" * 10
    assert get_tokenizer("estimate").count(cjk) > EstimateTokenizer().count(cjk) * 2
    for bad in (0, -1, float("nan"), float("inf"), "4"):
        with pytest.raises(ConfigError):
            EstimateTokenizer(bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            ScaledTokenizer(BPETokenizer("cl100k_base"), bad, name="x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no shipped BPE encoding"):
        BPETokenizer("p50k_base")
    assert repr(claude) == "ScaledTokenizer('claude_estimate')"
    assert repr(EstimateTokenizer(3)) == "EstimateTokenizer(3.0, name='chars')"


# ---------------------------------------------------------------------------- requests


def test_message_and_request_overheads() -> None:
    # 3 priming the reply + (3 per message + content), as OpenAI's cookbook counts them.
    assert count_message_tokens([Message.user("hello world")], "openai:gpt-4") == 3 + 3 + 2
    request = [Message.system("tiktoken is great!"), Message.user("hello world")]
    assert count_message_tokens(request, "openai:gpt-4") == 3 + (3 + 6) + (3 + 2)
    assert count_message_tokens([], "openai:gpt-4o") == 3
    o200k = get_tokenizer("o200k_base")
    call = Message(role="assistant", parts=(
        TextPart(text="hello world"),
        ToolCallPart(call_id="c1", tool_name="lookup", arguments='{"q": "hello world"}')))
    result = Message(role="tool", parts=(
        ToolResultPart(call_id="c1", tool_name="lookup", content="tiktoken is great!"),))
    assert message_tokens(call, o200k) == (3 + 2 + o200k.count("lookup")
                                           + o200k.count('{"q": "hello world"}') + 3)
    assert message_tokens(result, o200k) == 3 + 6 + 3


def test_tool_specs_count_their_schema() -> None:
    spec = ToolSpec(name="lookup", description="Find an order by id.",
                    parameters={"type": "object",
                                "properties": {"order_id": {"type": "string"}},
                                "required": ["order_id"]})
    o200k = get_tokenizer("o200k_base")
    schema = '{"type":"object","properties":{"order_id":{"type":"string"}},' \
             '"required":["order_id"]}'
    one = tool_spec_tokens(spec, o200k)
    assert one == o200k.count("lookup") + o200k.count("Find an order by id.") \
        + o200k.count(schema) + 8
    plain = count_message_tokens([Message.user("hi")], "openai:gpt-4o")
    assert count_message_tokens([Message.user("hi")], "openai:gpt-4o", [spec, spec]) == \
        plain + 12 + 2 * one
    odd = ToolSpec(name="odd", description="", parameters={"default": object()})
    assert tool_spec_tokens(odd, o200k) > 8


def test_equal_messages_are_counted_once() -> None:
    tokenizer = BPETokenizer("cl100k_base")
    first = Message.user("a message long enough to be worth caching, " * 3)
    again = Message.user("a message long enough to be worth caching, " * 3)
    assert message_tokens(first, tokenizer) == message_tokens(again, tokenizer)
    assert len(tokenizer.message_cache) == 1
    assert message_tokens(Message.assistant("other"), tokenizer) == 3 + 1
    assert len(tokenizer.message_cache) == 2


def test_text_cache_is_bounded() -> None:
    tokenizer = BPETokenizer("cl100k_base")
    tokenizer.text_cache.max_entries = 10
    texts = [f"text number {i} padded out to pass the minimum cache size......" for i in
             range(25)]
    counts = [tokenizer.count(t) for t in texts]
    assert len(tokenizer.text_cache) == 10
    assert [tokenizer.count(t) for t in texts] == counts
    tokenizer.text_cache.clear()
    assert len(tokenizer.text_cache) == 0


def test_tokenizer_override_in_count_message_tokens() -> None:
    messages = [Message.user("hello world")]
    assert count_message_tokens(messages, "anthropic:claude-opus-4",
                                tokenizer="cl100k_base") == 8
    assert count_message_tokens(messages, tokenizer=EstimateTokenizer()) == 3 + 3 + 3


# ---------------------------------------------------------------------------- calibration


def test_calibration_converges_and_adjusts() -> None:
    calibration = TokenCalibration()
    model = "anthropic:claude-sonnet-4"
    assert calibration.ratio(model) == 1.0
    assert calibration.adjust(model, 1000) == 1000
    assert calibration.state(model) is None
    for _ in range(40):
        calibration.observe(model, 1000, 1300)
    assert calibration.ratio(model) == pytest.approx(1.3)
    assert calibration.adjust(model, 2000) == 2600
    # The ratio follows a change smoothly rather than jumping.
    after = calibration.observe(model, 1000, 1000)
    assert 1.0 < after < 1.3
    state = calibration.state(model)
    assert state is not None and state.observations == 41
    # Other models are untouched.
    assert calibration.ratio("openai:gpt-4o") == 1.0


def test_calibration_clips_outliers_and_ignores_empty_reports() -> None:
    calibration = TokenCalibration(smoothing=0.5)
    assert calibration.observe("m:a", 100, 100_000) == 2.0
    assert calibration.observe("m:b", 100_000, 1) == 0.5
    assert calibration.observe("m:b", 0, 100) == 0.5
    assert calibration.observe("m:b", 100, 0) == 0.5
    assert calibration.observe("m:c", 100, -5) == 1.0
    assert calibration.state("m:c") is None
    for _ in range(100):
        calibration.observe("m:a", 10, 10**9)
    assert calibration.ratio("m:a") == 2.0
    assert calibration.adjust("m:a", 0) == 0


def test_calibration_bad_input_and_bounds() -> None:
    calibration = TokenCalibration(max_models=3)
    for bad in ("100", 1.5, None, True):
        with pytest.raises(UserError, match="int token count"):
            calibration.observe("m:x", bad, 100)  # type: ignore[arg-type]
        with pytest.raises(UserError, match="int token count"):
            calibration.adjust("m:x", bad)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="model id"):
        calibration.observe(42, 1, 1)  # type: ignore[arg-type]
    for i in range(10):
        calibration.observe(f"m:{i}", 100, 150)
    assert [calibration.state(f"m:{i}") is not None for i in range(10)] == [False] * 7 + [True] * 3
    calibration.reset("m:9")
    assert calibration.state("m:9") is None
    calibration.reset()
    assert calibration.state("m:8") is None
    for kwargs in ({"smoothing": 0}, {"smoothing": 1.5}, {"bounds": (1.2, 2.0)},
                   {"bounds": (0.5, 0.9)}, {"bounds": (0, 2)}, {"max_models": 0}):
        with pytest.raises(ConfigError):
            TokenCalibration(**kwargs)  # type: ignore[arg-type]


def test_count_message_tokens_with_calibration_and_the_default_instance() -> None:
    model = ScriptedModel(["hi"], name="test:calibrated")
    messages = [Message.user("hello world " * 50)]
    raw = count_message_tokens(messages, model)
    calibration = TokenCalibration()
    calibration.observe(model, raw, raw * 3 // 2)
    assert count_message_tokens(messages, model, calibration=calibration) == \
        calibration.adjust(model, raw) > raw
    assert count_message_tokens(messages, model) == raw
    try:
        assert observe_usage("test:default-instance", 100, 120) == pytest.approx(1.2)
        assert default_calibration().ratio("test:default-instance") == pytest.approx(1.2)
        # Keyed by the model's id: a Model and its id string share what was learned.
        assert default_calibration().ratio(ScriptedModel(["x"], name="test:default-instance")) \
            == pytest.approx(1.2)
    finally:
        default_calibration().reset("test:default-instance")


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [None, 42, b"bytes", ["list"], {"a": 1}])
def test_non_str_text_is_a_user_error(bad: object) -> None:
    for name in known_tokenizers():
        if name.startswith("test_"):
            continue
        with pytest.raises(UserError, match="takes a str"):
            get_tokenizer(name).count(bad)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="takes a str"):
        count_tokens(bad, "openai:gpt-4o")  # type: ignore[arg-type]


def test_malformed_messages_are_user_errors() -> None:
    o200k = get_tokenizer("o200k_base")
    with pytest.raises(UserError, match="takes a str"):
        message_tokens(Message(role="user", parts=(TextPart(text=5),)), o200k)  # type: ignore[arg-type]
    unhashable = Message(role="assistant", parts=(
        ToolCallPart(call_id="c", tool_name="t", arguments={"q": 1}),))  # type: ignore[arg-type]
    with pytest.raises(UserError, match="takes a str"):
        message_tokens(unhashable, o200k)
    with pytest.raises(UserError, match="keel Message"):
        message_tokens("just text", o200k)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="part of type str"):
        message_tokens(Message(role="user", parts=("raw",)), o200k)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="model id str or a Model"):
        tokenizer_for(42)  # type: ignore[arg-type]
    for bad in (None, "a string", b"bytes", 3):
        with pytest.raises(UserError, match="sequence of keel Messages"):
            count_message_tokens(bad, "openai:gpt-4o")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="ToolSpecs"):
        count_message_tokens([], "openai:gpt-4o", [{"name": "x"}])  # type: ignore[list-item]


def test_huge_texts_count_and_are_not_cached() -> None:
    tokenizer = BPETokenizer("o200k_base")
    words = "The order shipped on 2026-11-03 to Lyon; tracking 1Z999AA10123456784.\n"
    huge = (words * (5_000_000 // len(words) + 1))[:5_000_000]
    count = tokenizer.count(huge)
    assert len(huge) / 8 < count < len(huge) / 2
    one_char = "x" * 300_000
    assert 0 < tokenizer.count(one_char) < len(one_char)
    assert len(tokenizer.text_cache) == 0
    assert get_tokenizer("estimate").count(huge[:400_000]) >= \
        count_tokens(huge[:400_000], tokenizer="cl100k_base")


# ---------------------------------------------------------------------------- offline


def test_counting_never_reaches_the_network(tmp_path: Path) -> None:
    """A fresh process whose sockets and tiktoken downloads raise, with an empty tiktoken
    cache, loads both encodings and counts exactly."""
    script = textwrap.dedent("""
        import socket, sys
        def refuse(*args, **kwargs):
            raise RuntimeError("network access attempted")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        import tiktoken.load
        tiktoken.load.read_file = refuse
        tiktoken.load.read_file_cached = refuse
        try:
            import requests
            requests.get = refuse
            requests.Session.request = refuse
        except ImportError:
            pass
        from keel.context import count_tokens
        print(count_tokens("tiktoken is great!", "openai:gpt-4o"),
              count_tokens("tiktoken is great!", "openai:gpt-4"),
              count_tokens("hello world", "anthropic:claude-sonnet-4"),
              count_tokens("hello world", "openai:qwen2.5@http://127.0.0.1:1/v1"))
    """)
    env = {"TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache"),
           "DATA_GYM_CACHE_DIR": str(tmp_path / "empty-cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["6", "6", "3", "3"]
    assert not (tmp_path / "empty-cache").exists()


def test_a_fallback_chain_counts_with_its_primary_within_the_smallest_window() -> None:
    from keel.reliability import FallbackModel

    chain = FallbackModel("anthropic:claude-sonnet-4", "openai:gpt-4o-mini",
                          "openai:qwen2.5@http://127.0.0.1:1/v1")
    assert tokenizer_for(chain).name == "claude_estimate"
    assert context_window(chain) == 128000
    local = FallbackModel("openai:qwen2.5@http://127.0.0.1:1/v1", "openai:llama3")
    assert (tokenizer_for(local).name, context_window(local)) == ("estimate", None)


def test_huge_messages_are_counted_but_not_cached() -> None:
    tokenizer = BPETokenizer("o200k_base")
    huge = Message(role="tool", parts=(ToolResultPart(
        call_id="c", tool_name="dump", content="row 1, row 2, row 3; " * 20_000),))
    assert message_tokens(huge, tokenizer) == message_tokens(huge, tokenizer) > 20_000
    assert len(tokenizer.message_cache) == 0


WEIRD_IDS = ["", ":", "openai:", "openai:gpt-4o@", "::::", "OPENAI: gpt-4o ",
             "openai:" + "x" * 1_000_000, "anthropic:claude\ud800", "a" * 100_000]


@pytest.mark.parametrize("model", WEIRD_IDS, ids=[ascii(m)[:24] for m in WEIRD_IDS])
def test_weird_model_ids_fall_back_without_crashing(model: str) -> None:
    assert tokenizer_for(model).count("hello world") >= 2
    assert context_window(model) in (None, 128000)
    calibration = TokenCalibration()
    calibration.observe(model, 100, 130)
    assert calibration.adjust(model, 100) == 130


def test_a_case_and_space_variant_of_an_id_still_finds_its_family() -> None:
    assert tokenizer_for("OPENAI: gpt-4o ").name == "o200k_base"


def test_counting_from_many_threads_agrees_with_one() -> None:
    from concurrent.futures import ThreadPoolExecutor

    tokenizer = BPETokenizer("o200k_base")
    texts = [f"message {i}: " + "the order shipped to the customer today. " * (i % 7 + 2)
             for i in range(300)]
    expected = [len(tokenizer.encoding.encode_ordinary(t)) for t in texts]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: [tokenizer.count(t) for t in texts], range(8)))
    assert results == [expected] * 8


def test_a_damaged_encoding_file_is_refused() -> None:
    """The shipped file is checked against OpenAI's digest before it is used."""
    from dataclasses import replace

    from keel.context._tokenizers import ENCODINGS, _build, load_encoding

    wrong = replace(ENCODINGS["cl100k_base"], sha256="0" * 64)
    with pytest.raises(ConfigError, match="damaged"):
        _build("cl100k_base", wrong)
    with pytest.raises(ConfigError, match="no shipped BPE encoding 'r50k_base'"):
        load_encoding("r50k_base")
