"""``keel conversations show|delete``: a conversation's runs and messages, and deleting it (a
data-protection request). ``keel run --conversation`` and ``keel runs list --conversation``
are wired in ``_app``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.table import Table

from keel.cli._commands import open_existing
from keel.cli._errors import CliError, reported
from keel.cli._options import JsonOption, StoreOption, store_url
from keel.cli._text import Screen, safe, to_json
from keel.cli._timeline import record_json, runs_table
from keel.core import Message, TextPart, ToolCallPart, ToolResultPart, to_jsonable
from keel.runtime import Conversation
from keel.store import RunRecord, check_id

conversations_app = typer.Typer(
    help="Show a conversation's runs and messages, or delete it (data-protection requests).",
    no_args_is_help=True)

IdArgument = Annotated[str, typer.Argument(metavar="CONVERSATION",
                                           help="The conversation id (run --conversation).")]
TenantOption = Annotated[str | None, typer.Option(
    "--tenant", metavar="TENANT",
    help="Only this tenant's runs of the conversation (default: every tenant's).")]


def register(app: typer.Typer) -> None:
    app.add_typer(conversations_app, name="conversations")


def _conversation(url: str, conversation: str, tenant: str | None) -> Conversation | None:
    """The conversation in the store at ``url`` (never created); None if there is no store."""
    ident = check_id("conversation", conversation)
    owner = None if tenant is None else check_id("tenant", tenant)
    store = open_existing(url)
    return None if store is None else Conversation(ident, store=store, tenant=owner)


async def _read(chat: Conversation) -> tuple[list[RunRecord], list[Message]]:
    async with chat.store:  # type: ignore[union-attr]  # open_existing gave a store object
        return await chat.runs(), await chat.messages()


@conversations_app.command("show")
def show(ctx: typer.Context, conversation: IdArgument, tenant: TenantOption = None,
         as_json: JsonOption = False, store: StoreOption = None) -> None:
    """Show a conversation: its runs (oldest first) and the messages the next turn starts
    from."""
    screen = Screen()
    url = store_url(ctx, store)
    with reported(screen):
        chat = _conversation(url, conversation, tenant)
        runs, messages = asyncio.run(_read(chat)) if chat is not None else ([], [])
        if as_json:
            typer.echo(to_json({"conversation": conversation,
                                "runs": [record_json(r) for r in runs],
                                "messages": [_message_json(m) for m in messages]}))
            return
        if not runs:
            raise CliError(f"no conversation {conversation!r} in {url}"
                           + (f" for tenant {tenant!r}" if tenant else "")
                           + "; `keel runs list` shows the runs there are.")
        screen.out.print(runs_table(list(reversed(runs)), screen.out.width))
        screen.out.print(_messages_table(messages))


def _message_json(message: Message) -> dict[str, Any]:
    return {"role": message.role, "parts": [to_jsonable(p) for p in message.parts]}


def _messages_table(messages: list[Message]) -> Table:
    table = Table(title="messages (what the next turn starts from)", title_justify="left",
                  show_lines=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("role")
    table.add_column("content", overflow="fold")
    for i, m in enumerate(messages):
        parts = []
        for part in m.parts:
            if isinstance(part, ToolCallPart):
                parts.append(f"call {part.tool_name}({part.arguments})")
            elif isinstance(part, ToolResultPart):
                parts.append(f"{'error' if part.is_error else 'result'}: {part.content}")
            elif isinstance(part, TextPart):
                parts.append(part.text)
        table.add_row(str(i), m.role, safe("\n".join(parts), limit=2000))
    return table


@conversations_app.command("delete")
def delete(ctx: typer.Context, conversation: IdArgument, tenant: TenantOption = None,
           yes: Annotated[bool, typer.Option(
               "--yes", help="Really delete (required: nothing can bring it back).")] = False,
           as_json: JsonOption = False, store: StoreOption = None) -> None:
    """Delete a conversation's runs, their journals and their approvals and escalations, for
    a data-protection request. Refuses without --yes. What is not removed: docs/context.md."""
    screen = Screen()
    url = store_url(ctx, store)
    with reported(screen):
        chat = _conversation(url, conversation, tenant)  # ids checked before --yes
        if not yes:
            raise CliError(f"this deletes every run of conversation {conversation!r}"
                           + (f" of tenant {tenant!r}" if tenant else " (every tenant's)")
                           + " with its journal and tasks, for good; add --yes to do it.")
        deleted = asyncio.run(_delete(chat)) if chat is not None else 0
        if as_json:
            typer.echo(to_json({"conversation": conversation, "deleted_runs": deleted}))
            return
        screen.out.print(safe(f"deleted {deleted} run(s) of conversation {conversation!r}."))


async def _delete(chat: Conversation) -> int:
    async with chat.store:  # type: ignore[union-attr]
        return await chat.delete()
