"""``keel.Conversation``: list the runs, read the messages, send the next turn, fork into an
independent conversation, delete; tenants and users; bad arguments. Every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keel import Conversation, MemoryStore, RunStore, UserError
from keel.store import RunFilter
from keel.testing import FunctionModel
from tests._stores import BACKENDS, fresh_store
from tests.runtime._conv_child import answer, support


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    """A fresh, empty store of each backend."""
    async with fresh_store(request.param, tmp_path, "keel_conv") as opened:
        yield opened


async def test_send_runs_list_and_messages(store: RunStore) -> None:
    chat = Conversation("c-1", store=store, tenant="acme", user="alice")
    assert await chat.runs() == [] and await chat.messages() == []
    first = await chat.send(support(), "where is order 7?")
    second = await chat.send(support(), "what did I ask?")
    assert [r.run_id for r in await chat.runs()] == [first.run_id, second.run_id]
    record = await store.get_run(second.run_id)
    assert (record.tenant, record.user, record.conversation) == ("acme", "alice", "c-1")
    texts = [m.text for m in await chat.messages() if m.role in ("user", "assistant")]
    assert texts[0] == "where is order 7?" and texts[-1] == second.output
    # what send gives the model is what messages() says (after the instructions; tool
    # output is marked untrusted on its way to the model, in history as in a live turn)
    expected = await Conversation("c-1", store=store).messages()
    model = FunctionModel(answer)
    await chat.send(support(model), "third")
    sent = model.requests[0][1:-1]
    assert [m.role for m in sent] == [m.role for m in expected]
    for got, want in zip(sent, expected, strict=True):
        if want.role == "tool":
            assert "<untrusted" in got.parts[0].content  # type: ignore[union-attr]
            assert want.parts[0].content in got.parts[0].content  # type: ignore[union-attr]
        else:
            assert got == want
    # other owners see nothing of it
    assert await Conversation("c-1", store=store, tenant="globex").runs() == []
    assert await Conversation("c-1", store=store, tenant="acme", user="bob").runs() == []
    assert len(await Conversation("c-1", store=store).runs()) == 3  # an operator sees all
    with pytest.raises(UserError, match="store="):
        await chat.send(support(), "x", store=store)  # type: ignore[call-arg]


async def test_a_fork_is_independent_of_its_source(store: RunStore) -> None:
    chat = Conversation("c-1", store=store, tenant="acme")
    runs = [await chat.send(support(), text) for text in ("one", "two", "three")]
    fork = await chat.fork("c-2", at=runs[1].run_id)
    assert fork.id == "c-2" and fork.tenant == "acme"
    copies = await fork.runs()
    assert [r.input for r in copies] == ["one", "two"]
    assert {r.run_id for r in copies}.isdisjoint(r.run_id for r in runs)
    assert all(r.metadata["copied_from"] in {runs[0].run_id, runs[1].run_id} for r in copies)
    assert await fork.messages() == (await chat.messages())[:4]
    # each goes on alone
    forked = await fork.send(support(), "four in the fork")
    assert forked.output == "I have seen 3 user messages: one | two | four in the fork"
    original = await chat.send(support(), "four in the source")
    assert original.output == ("I have seen 4 user messages: one | two | three | "
                               "four in the source")
    # deleting the fork leaves the source whole, and the other way round
    assert await fork.delete() == 3
    assert len(await chat.runs()) == 4 and await fork.runs() == []
    by_turn = await chat.fork(at=0)
    assert by_turn.id.startswith("c-") and [r.input for r in await by_turn.runs()] == ["one"]


async def test_fork_refuses_what_it_cannot_do(store: RunStore) -> None:
    chat = Conversation("c-1", store=store)
    with pytest.raises(UserError, match="no runs"):
        await chat.fork("c-2")
    await chat.send(support(), "one")
    await Conversation("c-3", store=store).send(support(), "taken")
    for at, message in ((5, "not a turn"), (-1, "not a turn"), ("nope", "not a run of"),
                        (True, "run id or a turn number"), (1.5, "run id or a turn number")):
        with pytest.raises(UserError, match=message):
            await chat.fork("c-2", at=at)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="already exists"):
        await chat.fork("c-3")
    with pytest.raises(UserError, match="new conversation id"):
        await chat.fork("c-1")
    with pytest.raises(UserError, match="conversation"):
        await chat.fork("bad\x00id")
    assert len(await store.list_runs(RunFilter(conversation="c-2"))) == 0


async def test_delete_keeps_to_its_owner(store: RunStore) -> None:
    """Runs cannot join another owner's conversation, but a store may hold one id under
    several tenants (imported runs, runs written before keel checked): delete keeps to
    the tenant it is given, and an operator's (no tenant) removes them all."""
    from keel.testing._store_conformance import sample_run

    await Conversation("c-1", store=store, tenant="acme", user="alice").send(support(), "a")
    await store.create_run(sample_run("g", tenant="globex", user="carol", conversation="c-1",
                                      input="g"))
    await store.create_run(sample_run("u", conversation="c-1", input="untenanted"))
    with pytest.raises(UserError, match="another user"):
        await Conversation("c-1", store=store, tenant="acme", user="bob").delete()
    assert await Conversation("c-1", store=store, tenant="acme").delete() == 1
    left = {(r.tenant, r.input) for r in await store.list_runs()}
    assert left == {("globex", "g"), (None, "untenanted")}
    assert await Conversation("c-1", store=store).delete() == 2  # the operator: every tenant
    assert await store.list_runs() == []
    assert await Conversation("never", store=store).delete() == 0


async def test_delete_refuses_a_user_whose_conversation_holds_anothers_runs() -> None:
    store = MemoryStore()
    from keel.testing._store_conformance import sample_run

    await store.create_run(sample_run("a", tenant="acme", user="alice", conversation="c-1"))
    await store.create_run(sample_run("b", tenant="acme", user="bob", conversation="c-1"))
    with pytest.raises(UserError, match="another user"):
        await Conversation("c-1", store=store, tenant="acme", user="alice").delete()
    assert len(await store.list_runs()) == 2


def test_bad_arguments_are_refused() -> None:
    for kwargs in ({"tenant": ""}, {"user": "a\nb"}, {"tenant": "x" * 300}):
        with pytest.raises(UserError):
            Conversation("c-1", **kwargs)  # type: ignore[arg-type]
    assert repr(Conversation("c-1")) == "Conversation('c-1')"
