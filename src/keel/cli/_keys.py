"""``keel keys create|list|rotate|revoke|audit``: the API keys of ``keel serve``, kept in the
run store's database (``--store``), and the audit log of who changed them.

A key's plaintext is printed once, by ``create`` and ``rotate``; keel keeps only a digest.
Every change is audited under ``--by`` (default ``$USER``). The reading commands never create
a store."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer
from rich import box
from rich.table import Table

from keel.cli._errors import CliError, reported
from keel.cli._options import ByOption, JsonOption, StoreOption, store_url
from keel.cli._text import SHORT, Screen, safe, to_json
from keel.server import ApiKey, AuditEntry, KeyNotFound, KeyStore, check_role
from keel.store import check_id

T = TypeVar("T")

keys_app = typer.Typer(
    help="Create, list, rotate and revoke the API keys of `keel serve`, and read their audit "
         "log.", no_args_is_help=True)

KeyArgument = Annotated[str, typer.Argument(metavar="KEY_ID",
                                            help="The key's id (`keel keys list`).")]
TenantOption = Annotated[str | None, typer.Option(
    "--tenant", metavar="TENANT", help="Only this tenant's keys (default: every tenant's).")]
_SHOWN_ONCE = ("This is the only time the key is shown: store it now (e.g. in a secret "
               "manager). keel keeps only a digest of it.")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _who(by: str | None) -> str:
    return check_id("by", by if by is not None else (os.environ.get("USER") or "cli"))


def _opened(url: str, *, create: bool) -> KeyStore | None:
    """The key store at ``url``; None if its SQLite file does not exist and ``create`` is
    false (nothing is created then)."""
    if url in ("memory", "memory:", ":memory:"):
        raise CliError(f"the {url!r} store keeps nothing once this command ends, so a key "
                       "made here could never be used; use the run store `keel serve` uses: "
                       "--store sqlite:///path/runs.db or postgresql://...")
    keys = KeyStore(url, create=create)
    if not create and keys.path is not None and not keys.path.exists():
        return None
    return keys


async def _with(keys: KeyStore, work: Callable[[KeyStore], Awaitable[T]]) -> T:
    async with keys:
        return await work(keys)


def _when(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _shown_key(screen: Screen, key: ApiKey, plaintext: str, verb: str, as_json: bool) -> None:
    if as_json:
        typer.echo(to_json({"key": plaintext, "record": key.to_dict()}))
    else:
        screen.line(safe(f"{verb} API key {key.key_id} (tenant {key.tenant}, role {key.role}, "
                         f"name {key.name!r}):", limit=SHORT))
        typer.echo(plaintext)
    screen.note(_SHOWN_ONCE)


@keys_app.command("create")
def create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option("--tenant", metavar="TENANT",
                                        help="The tenant the key acts for.")],
    role: Annotated[str, typer.Option(
        "--role", metavar="ROLE", help="viewer (read), operator (read, run), reviewer (read, "
                                       "decide) or admin (all, keys and the audit log).")],
    name: Annotated[str, typer.Option("--name", metavar="NAME",
                                      help="What the key is for (1-100 characters).")],
    by: ByOption = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Create an API key for a tenant with a role; its plaintext is printed once."""
    screen = Screen()
    with reported(screen):
        who, checked = _who(by), check_role(role)
        keys = _opened(store_url(ctx, store), create=True)
        assert keys is not None
        key, plaintext = asyncio.run(_with(keys, lambda k: k.create_key(
            tenant, checked, name=name, by=who)))
        _shown_key(screen, key, plaintext, "created", as_json)


@keys_app.command("list")
def list_keys(ctx: typer.Context, tenant: TenantOption = None, as_json: JsonOption = False,
              store: StoreOption = None) -> None:
    """List the API keys (revoked ones too), oldest first; never their secrets."""
    screen = Screen()
    url = store_url(ctx, store)
    with reported(screen):
        if tenant is not None:
            check_id("tenant", tenant)
        keys = _opened(url, create=False)
        found = [] if keys is None else asyncio.run(_with(keys, lambda k: k.list_keys(tenant)))
        if as_json:
            typer.echo(to_json([k.to_dict() for k in found]))
            return
        if not found:
            screen.note(f"No API keys{f' of tenant {tenant!r}' if tenant else ''} in {url}; "
                        "`keel keys create` makes one.")
            return
        screen.out.print(_keys_table(found))


def _keys_table(found: list[ApiKey]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="API keys")
    for column in ("key id", "tenant", "role", "name", "status", "created", "by",
                   "last used"):
        table.add_column(column, no_wrap=column == "key id")
    for k in found:
        status = ("[green]active[/green]" if k.active
                  else f"[red]revoked[/red] {_when(k.revoked_at)}")
        table.add_row(k.key_id, safe(k.tenant, limit=SHORT), k.role, safe(k.name, limit=SHORT),
                      status, _when(k.created_at), safe(k.created_by, limit=SHORT),
                      _when(k.last_used_at))
    return table


@keys_app.command("rotate")
def rotate(ctx: typer.Context, key_id: KeyArgument, tenant: TenantOption = None,
           by: ByOption = None, as_json: JsonOption = False,
           store: StoreOption = None) -> None:
    """Give a key a new secret (printed once): the old one, and its tokens, stop working at
    once."""
    screen = Screen()
    with reported(screen):
        who = _who(by)
        keys = _existing(store_url(ctx, store), key_id)
        key, plaintext = asyncio.run(_with(keys, lambda k: k.rotate_key(
            key_id, by=who, tenant=tenant)))
        _shown_key(screen, key, plaintext, "rotated", as_json)


@keys_app.command("revoke")
def revoke(ctx: typer.Context, key_id: KeyArgument, tenant: TenantOption = None,
           by: ByOption = None, as_json: JsonOption = False,
           store: StoreOption = None) -> None:
    """Revoke a key at once: it, and every token issued for it, is refused from now on."""
    screen = Screen()
    with reported(screen):
        who = _who(by)
        keys = _existing(store_url(ctx, store), key_id)
        key = asyncio.run(_with(keys, lambda k: k.revoke_key(key_id, by=who, tenant=tenant)))
        if as_json:
            typer.echo(to_json(key.to_dict()))
            return
        screen.line(safe(f"revoked API key {key.key_id} (tenant {key.tenant}, role "
                         f"{key.role}, name {key.name!r}).", limit=SHORT))


def _existing(url: str, key_id: str) -> KeyStore:
    keys = _opened(url, create=False)
    if keys is None:
        raise KeyNotFound(f"no API key {key_id[:40]!r}: there is no run store at {url} yet. "
                          "Pass --store (or set KEEL_STORE) to the store `keel serve` uses.")
    return keys


@keys_app.command("audit")
def audit(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(
        "--tenant", metavar="TENANT", help="Only this tenant's entries.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000,
                                       help="At most this many.")] = 50,
    before: Annotated[int | None, typer.Option(
        "--before", metavar="ID", min=1, help="Only entries older than this entry id (the "
                                              "next page).")] = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Show the audit log of `keel serve`, newest first: key changes and what the server
    records."""
    screen = Screen()
    url = store_url(ctx, store)
    with reported(screen):
        if tenant is not None:
            check_id("tenant", tenant)
        keys = _opened(url, create=False)
        entries = [] if keys is None else asyncio.run(_with(keys, lambda k: k.read_audit(
            tenant=tenant, limit=limit, before=before)))
        if as_json:
            typer.echo(to_json([e.to_dict() for e in entries]))
            return
        if not entries:
            screen.note(f"No audit entries{f' of tenant {tenant!r}' if tenant else ''} in "
                        f"{url}.")
            return
        screen.out.print(_audit_table(entries))


def _audit_table(entries: list[AuditEntry]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="Audit log")
    for column in ("id", "at (UTC)", "who", "tenant", "action", "target", "details"):
        table.add_column(column, justify="right" if column == "id" else "left",
                         no_wrap=column in ("id", "target"))
    for e in entries:
        details = "" if e.details is None else to_json(e.details)
        table.add_row(str(e.id), _when(e.at), safe(e.who, limit=SHORT),
                      safe(e.tenant or "-", limit=SHORT), safe(e.action, limit=SHORT),
                      safe(e.target, limit=SHORT), safe(" ".join(details.split()), limit=SHORT))
    return table
