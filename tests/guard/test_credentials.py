"""The credential seam: tools get short-lived, scoped credentials per call (cached until near
expiry, then refreshed), and an issued value appears nowhere keel writes: not in what the
model is sent, the SQLite store's bytes, keel's logs, `keel runs export` or
`keel runs show --json`, even when a tool returns it or raises with it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import pickle
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keel import Agent, ConfigError, MissingCredentials, ToolContext, configure_json_logging, tool
from keel.cli import app
from keel.core import Credential, CredentialProvider, UserError, dumps, redact_text, to_jsonable
from keel.guard import Credentials
from keel.store import SQLiteStore
from keel.testing import ScriptedModel, call


class Vault:
    """A provider issuing a fresh random token per request, valid for ``ttl`` seconds."""

    def __init__(self, clock: list[float], ttl: float = 300.0) -> None:
        self.clock = clock
        self.ttl = ttl
        self.requests: list[dict[str, Any]] = []
        self.issued: list[str] = []

    async def get(self, name: str, *, scopes: frozenset[str], run_id: str,
                  tool: str) -> Credential:
        self.requests.append({"name": name, "scopes": scopes, "run_id": run_id, "tool": tool})
        await asyncio.sleep(0)  # a real provider awaits the network
        value = f"vault-{name}-{uuid.uuid4().hex}"
        self.issued.append(value)
        return Credential(value, name=name, scopes=scopes,
                          expires_at=self.clock[0] + self.ttl)


def test_a_credential_never_shows_its_value() -> None:
    cred = Credential("tok_live_0123456789abcdef", name="stripe", expires_at=100.0,
                      scopes=["charges:write"])
    for shown in (repr(cred), str(cred), f"{cred}", dumps(cred), dumps({"c": [cred]}),
                  json.dumps(to_jsonable(cred))):
        assert "0123456789abcdef" not in shown
        assert "stripe" in shown
    assert cred.reveal() == "tok_live_0123456789abcdef"
    with pytest.raises(UserError, match="cannot be pickled"):
        pickle.dumps(cred)
    # made once, the value is masked in any text keel writes
    assert redact_text("key=tok_live_0123456789abcdef;") == "key=[REDACTED];"
    assert isinstance(Vault([0.0]), CredentialProvider)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"value": "short"}, "at least 8"),
    ({"value": 12345678}, "at least 8"),
    ({"value": "long-enough-value", "expires_at": float("inf")}, "Unix time"),
    ({"value": "long-enough-value", "expires_at": "soon"}, "Unix time"),
    ({"value": "long-enough-value", "scopes": "read"}, "not one str"),
])
def test_nonsense_credentials_are_refused(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Credential(**kwargs)


@pytest.mark.parametrize(("kwargs", "part"), [
    ({"provider": object()}, "Credentials.provider"),
    ({"refresh_before": -1}, "Credentials.refresh_before"),
    ({"max_cached": 0}, "Credentials.max_cached"),
])
def test_nonsense_middleware_settings_are_refused(kwargs: dict[str, Any], part: str) -> None:
    kwargs.setdefault("provider", Vault([0.0]))
    with pytest.raises(ConfigError, match=part.replace(".", r"\.")):
        Credentials(**kwargs)


class Records(logging.Handler):
    """Every record's message and fields, unformatted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in self.records)


def store_files(folder: Path) -> bytes:
    """The bytes of the SQLite store and its side files (WAL, shared memory)."""
    return b"".join(p.read_bytes() for p in folder.iterdir() if p.name.startswith("runs.db"))


def charge_tools(outside: list[str]) -> list[Any]:
    @tool(risk="write", scopes=["charges:write"])
    async def charge(amount: int, ctx: ToolContext) -> str:
        """Charge the customer."""
        cred = await ctx.credential("stripe")
        outside.append(cred.reveal())  # what the payment API receives
        return f"charged {amount}"

    @tool
    async def leak(ctx: ToolContext) -> dict[str, Any]:
        """A careless tool that returns its credential."""
        cred = await ctx.credential("stripe")
        outside.append(cred.reveal())
        return {"debug": f"used {cred.reveal()}", "header": f"Token {cred.reveal()}",
                "credential": cred}

    @tool
    async def crash(ctx: ToolContext) -> str:
        """A tool that raises with its credential in the message."""
        cred = await ctx.credential("stripe")
        outside.append(cred.reveal())
        raise RuntimeError(f"upstream refused key {cred.reveal()}")

    @tool
    async def flaky(ctx: ToolContext) -> str:
        """Fails once, transiently, with the credential in the error; then works."""
        cred = await ctx.credential("stripe")
        outside.append(cred.reveal())
        if len(outside) < 5:
            raise ConnectionError(f"reset while sending {cred.reveal()}")
        return "ok"

    return [charge, leak, crash, flaky]


async def test_an_issued_value_appears_nowhere_keel_writes(tmp_path: Path) -> None:
    clock = [time.time()]
    vault = Vault(clock)
    outside: list[str] = []
    model = ScriptedModel([call("leak", {}), call("crash", {}), call("flaky", {}),
                           call("charge", {"amount": 5}), "done"])
    agent = Agent("billing", model=model, tools=charge_tools(outside),
                  scopes=["charges:write"], middleware=[Credentials(vault)])
    logs = io.StringIO()
    handler = configure_json_logging(logs, level=logging.DEBUG)
    raw = Records()  # the records themselves, as any other formatter would see them
    logging.getLogger("keel").addHandler(raw)
    db = tmp_path / "runs.db"
    try:
        async with SQLiteStore(db) as store:
            result = await agent.run("charge 5", store=store)
    finally:
        logging.getLogger("keel").removeHandler(handler)
        logging.getLogger("keel").removeHandler(raw)
    assert result.output == "done"
    assert len(outside) == 6 and set(outside) <= set(vault.issued)  # the tools got the values
    secrets = set(vault.issued)
    assert secrets

    runner = CliRunner()
    url = f"sqlite:///{db}"
    # the CLI runs its own event loop: call it from a thread
    exported = await asyncio.to_thread(runner.invoke, app,
                                       ["runs", "export", result.run_id, "--store", url])
    shown = await asyncio.to_thread(runner.invoke, app,
                                    ["runs", "show", result.run_id, "--json", "--store", url])
    assert exported.exit_code == 0 and shown.exit_code == 0, exported.output + shown.output
    prompts = "\n".join(m.text + "".join(getattr(p, "content", "") + getattr(p, "arguments", "")
                                         for p in m.parts)
                        for request in model.requests for m in request)
    store_bytes = store_files(tmp_path)
    for secret in secrets:
        assert secret not in prompts
        assert secret.encode() not in store_bytes
        assert secret not in logs.getvalue()
        assert secret not in raw.text()
        assert secret not in exported.stdout
        assert secret not in shown.stdout
    # what the model saw says a secret was there, masked
    assert "used [REDACTED]" in prompts and "upstream refused key [REDACTED]" in prompts
    assert "reset while sending [REDACTED]" in store_bytes.decode("utf-8", "replace")
    assert json.loads(exported.stdout)["run"]["run_id"] == result.run_id
    assert logs.getvalue().count("\n") >= 5 and len(raw.records) >= 5  # steps were logged


async def test_cached_per_run_and_tool_refreshed_near_expiry_scoped_to_the_tool() -> None:
    clock = [1_000.0]
    vault = Vault(clock, ttl=300.0)
    outside: list[str] = []
    middleware = Credentials(vault, refresh_before=60.0, clock=lambda: clock[0])
    [charge, *_] = charge_tools(outside)

    async def tick(amount: int, ctx: ToolContext) -> str:
        clock[0] += 100.0
        return "tick"

    ticker = tool(tick, name="tick", description="Let time pass.")
    model = ScriptedModel([call("charge", {"amount": 1}), call("charge", {"amount": 2}),
                           call("tick", {"amount": 0}), call("charge", {"amount": 3}),
                           call("tick", {"amount": 0}), call("charge", {"amount": 4}), "done"])
    agent = Agent("billing", model=model, tools=[charge, ticker], scopes=["charges:write"],
                  middleware=[middleware])
    from keel import MemoryStore

    result = await agent.run("go", store=MemoryStore())
    # t=1000: fetched (expires 1300); t=1100: 200 s left, cached; t=1200: 100 s > 60, cached?
    # no: 1300 - 1200 = 100 > 60 → cached; the 4th call at 1200 → cached as well.
    assert [r["scopes"] for r in vault.requests] == [frozenset({"charges:write"})]
    assert vault.requests[0]["run_id"] == result.run_id
    assert vault.requests[0]["tool"] == "charge"
    assert outside == [vault.issued[0]] * 4

    clock[0] = 1_250.0  # 50 s left: inside refresh_before, so the next call fetches anew
    again = await agent.run("go", store=MemoryStore())
    assert len(vault.requests) == 2 and vault.requests[1]["run_id"] == again.run_id


async def test_refresh_after_expiry_and_one_fetch_for_concurrent_calls() -> None:
    clock = [0.0]
    vault = Vault(clock, ttl=120.0)
    middleware = Credentials(vault, refresh_before=30.0, clock=lambda: clock[0])
    get = middleware.get
    scopes = frozenset({"read"})
    first = await asyncio.gather(*(get("db", scopes=scopes, run_id="r1", tool="q")
                                   for _ in range(5)))
    assert len({id(c) for c in first}) == 1 and len(vault.requests) == 1
    clock[0] = 89.0  # 31 s left
    assert await get("db", scopes=scopes, run_id="r1", tool="q") is first[0]
    clock[0] = 91.0  # 29 s left: refreshed
    fresh = await get("db", scopes=scopes, run_id="r1", tool="q")
    assert fresh is not first[0] and fresh.reveal() != first[0].reveal()
    # another run, tool or scope set never shares a credential
    await get("db", scopes=scopes, run_id="r2", tool="q")
    await get("db", scopes=scopes, run_id="r1", tool="other")
    await get("db", scopes=frozenset(), run_id="r1", tool="q")
    assert len(vault.requests) == 5


async def test_scope_requests_beyond_the_tool_and_missing_providers_are_refused() -> None:
    seen: list[str] = []

    @tool(scopes=["charges:read"])
    async def peek(ctx: ToolContext) -> str:
        """Ask for more than declared."""
        try:
            await ctx.credential("stripe", scopes=["charges:write"])
        except MissingCredentials as exc:
            seen.append(str(exc))
        return "ok"

    @tool
    async def naked(ctx: ToolContext) -> str:
        """Ask without a provider."""
        await ctx.credential("stripe")
        return "never"

    from keel import MemoryStore

    agent = Agent("a", model=ScriptedModel([call("peek", {}), "done"]), tools=[peek],
                  scopes=["charges:read"], middleware=[Credentials(Vault([0.0]))])
    await agent.run("go", store=MemoryStore())
    assert len(seen) == 1 and "charges:write" in seen[0] and "does not declare" in seen[0]

    store = MemoryStore()
    bare = Agent("b", model=ScriptedModel([call("naked", {}), "done"]), tools=[naked])
    result = await bare.run("go", store=store)
    [entry] = [e for e in await store.read_journal(result.run_id) if e.kind == "tool"]
    assert entry.data["failure"]["error_type"] == "tool_error"
    assert "no credential provider" in entry.data["failure"]["message"]


async def test_a_provider_returning_nonsense_fails_the_call_not_the_run() -> None:
    class Broken:
        async def get(self, name: str, **_: Any) -> Any:
            return "a plain string"

    class Stale:
        async def get(self, name: str, **_: Any) -> Credential:
            return Credential("expired-value-123", expires_at=1.0)

    from keel import MemoryStore

    for provider, words in ((Broken(), "not a keel Credential"), (Stale(), "expired")):
        store = MemoryStore()
        outside: list[str] = []
        agent = Agent("c", model=ScriptedModel([call("charge", {"amount": 1}), "done"]),
                      tools=charge_tools(outside)[:1], scopes=["charges:write"],
                      middleware=[Credentials(provider, clock=lambda: 100.0)])
        result = await agent.run("go", store=store)
        [entry] = [e for e in await store.read_journal(result.run_id)
                   if e.kind == "tool" and e.phase == "result"]
        assert words in entry.data["failure"]["message"] and outside == []


async def test_plain_def_tools_fetch_credentials_from_their_worker_thread() -> None:
    from keel import MemoryStore

    vault = Vault([time.time()])
    outside: list[str] = []
    refused: list[str] = []

    @tool(scopes=["db:read"])
    def report(ctx: ToolContext) -> str:
        """A plain def tool: it runs in a worker thread."""
        outside.append(ctx.credential_sync("warehouse").reveal())
        return f"report made with {outside[-1]}"

    @tool
    async def wrong(ctx: ToolContext) -> str:
        """An async tool must await instead."""
        try:
            ctx.credential_sync("warehouse")
        except MissingCredentials as exc:
            refused.append(str(exc))
        return "ok"

    store = MemoryStore()
    model = ScriptedModel([call("report", {}), call("wrong", {}), "done"])
    agent = Agent("r", model=model, tools=[report, wrong], scopes=["db:read"],
                  middleware=[Credentials(vault)])
    result = await agent.run("go", store=store)
    assert outside == vault.issued[:1] and vault.requests[0]["scopes"] == {"db:read"}
    assert refused and "would block the event loop" in refused[0]
    [entry] = [e for e in await store.read_journal(result.run_id)
               if e.key.endswith("tool:report#0")]
    assert entry.data["content"] == "report made with [REDACTED]"


def test_masking_finds_every_registered_value_in_any_text() -> None:
    import secrets

    from keel.core import REDACTED, mask_secret
    from keel.core._redact import MAX_SECRETS

    values = [secrets.token_urlsafe(24) for _ in range(300)]
    for v in values:
        mask_secret(v, expires_at=time.time() + 300)
    odd = "a passphrase with spaces, quotes \" and ünïcode"
    mask_secret(odd)
    blob = secrets.token_urlsafe(3000)  # a long token-like run around a value
    for v in (values[0], values[-1], odd):
        for text in (v, f"key={v};", f"x{v}y", f"{v}{v}", f"{blob}{v}{blob}",
                     json.dumps({"nested": [v]})):
            masked = redact_text(text)
            assert v not in masked and REDACTED in masked, text[:60]
    assert redact_text(values[1][:-1]) == values[1][:-1]  # a prefix alone is not the secret
    assert redact_text("plain words of a support message") == "plain words of a support message"
    with pytest.raises(ConfigError, match="at least 8"):
        mask_secret("short")

    # expired values are forgotten an hour after expiry; at most MAX_SECRETS are kept
    stale = secrets.token_urlsafe(24)
    mask_secret(stale, expires_at=time.time() - 7200)
    for _ in range(MAX_SECRETS):
        mask_secret(secrets.token_urlsafe(24), expires_at=time.time() + 300)
    assert redact_text(stale) == stale
    assert redact_text(values[0]) == values[0]  # pushed out by newer ones


async def test_the_credentials_section_of_the_security_page_runs_as_written() -> None:
    from keel import MemoryStore

    [block] = doc_blocks("Credentials")
    namespace: dict[str, Any] = {"__name__": "security_doc"}
    exec(compile(block, "docs/security.md", "exec", dont_inherit=True),  # our own docs
         namespace)
    store = MemoryStore()
    result = await namespace["billing"].run("charge 5", store=store)
    [token] = namespace["sent"]
    assert token.startswith("tok-stripe-") and result.run_id in token
    journal = json.dumps([e.data for e in await store.read_journal(result.run_id)])
    assert token not in journal and "charged 5" in journal


def doc_blocks(title: str) -> list[str]:
    """The python blocks of one section of docs/security.md."""
    import re

    page = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    section = page.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


async def test_a_handoff_reason_with_the_value_is_masked() -> None:
    from keel import Handoff, MemoryStore, RunError

    vault = Vault([time.time()])

    @tool
    async def transfer(ctx: ToolContext) -> str:
        """Hands the conversation on, carelessly quoting its credential."""
        cred = await ctx.credential("crm")
        raise Handoff("billing", f"the CRM key {cred.reveal()} did not work")

    agent = Agent("front", model=ScriptedModel([call("transfer", {}), "done"]),
                  tools=[transfer], middleware=[Credentials(vault)])
    with pytest.raises(RunError, match="nothing receives a handoff") as info:
        await agent.run("go", store=MemoryStore())  # a lone agent: no one takes it
    [secret] = vault.issued
    assert secret not in str(info.value) and "the CRM key [REDACTED]" in str(info.value)
