"""Test-wide guards: no test may reach beyond this machine."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
import typer.testing

_real_get_command = typer.testing._get_command
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _allowed(address: Any) -> bool:
    if isinstance(address, str | bytes):  # unix socket
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if not _allowed(address):
        raise ConnectionRefusedError(f"tests may not reach {address!r}: loopback only")
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if not _allowed(address):
        raise ConnectionRefusedError(f"tests may not reach {address!r}: loopback only")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)


@pytest.fixture(autouse=True)
def _no_stray_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Runs that rely on the default store write under the test's tmp dir, never the repo."""
    monkeypatch.setenv("KEEL_STORE", f"sqlite:///{tmp_path}/default-runs.db")
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(key, raising=False)


_commands: dict[int, tuple[Any, tuple[int, int, Any], Any]] = {}


def _command_built_once(app: Any) -> Any:
    """``typer.main.get_command(app)``, built once per app: typer's CliRunner rebuilds the
    whole click command tree on every ``invoke`` (about 40 ms for keel's, over 100 ms on a
    loaded machine), though nothing in it changes between calls. The command is built
    again if the app gains a command, a group or a callback."""
    shape = (len(app.registered_commands), len(app.registered_groups),
             app.registered_callback)
    found = _commands.get(id(app))
    if found is None or found[0] is not app or found[1] != shape:
        found = (app, shape, _real_get_command(app))
        _commands[id(app)] = found
    return found[2]


@pytest.fixture(autouse=True)
def _cli_commands_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(typer.testing, "_get_command", _command_built_once)
