"""The error tree drawn in ``keel.core._errors`` is whole and honest: every exception class
keel defines is in the drawing, under its real parent; the public ones print as ``keel.X``;
what keel raises to users is a :class:`keel.KeelError`; a store outage is not a usage error."""

from __future__ import annotations

import ast
import builtins
import importlib
import pkgutil
import re
import traceback
from pathlib import Path

import keel
from keel.core import _errors

SRC = Path(keel.__file__).parent


def _all_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages([str(SRC)], prefix="keel."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
        names.append(info.name)
    return names


def _subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    stack = [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found and sub.__module__.startswith("keel"):
                found.add(sub)
                stack.append(sub)
    return found


def _drawn_tree() -> dict[str, str | None]:
    """name -> parent name, read off the drawing in the module docstring."""
    assert _errors.__doc__
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in _errors.__doc__.splitlines():
        match = re.match(r"^[\s│├└─]*([A-Z][A-Za-z]+)\s", line + " ")
        if match is None or not ("──" in line or match.group(1) == "KeelError"):
            continue
        depth = match.start(1)  # the name's column: deeper classes are drawn further right
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[match.group(1)] = stack[-1][1] if stack else None
        stack.append((depth, match.group(1)))
    return parents


def test_every_keel_error_is_drawn_under_its_real_parent() -> None:
    _all_modules()
    drawn = _drawn_tree()
    assert drawn["KeelError"] is None and drawn["UserError"] == "KeelError"
    classes = _subclasses(keel.KeelError)
    assert {"PlanStepFailed", "WorkflowError", "GateFailed", "HandoffLoop", "MarketplaceFailed",
            "StoreUnavailable", "CliError", "LeaseLost"} <= {c.__name__ for c in classes}
    for cls in classes:
        assert cls.__name__ in drawn, f"{cls.__name__} is missing from the tree in _errors.py"
        assert drawn[cls.__name__] == cls.__bases__[0].__name__, cls
    assert set(drawn) == {c.__name__ for c in classes} | {"KeelError"}, "a drawn class is gone"


def test_public_errors_print_where_users_import_them_from() -> None:
    _all_modules()
    for cls in _subclasses(keel.KeelError) | {keel.KeelError}:
        if cls.__name__ == "CliError":  # the CLI's own, never seen as a class by users
            continue
        assert "._" not in cls.__module__, f"{cls.__qualname__} prints as {cls.__module__}"
        assert getattr(importlib.import_module(cls.__module__), cls.__name__) is cls
    assert repr(keel.RunError) == "<class 'keel.RunError'>"
    assert str(keel.patterns.GateFailed) == "<class 'keel.patterns.GateFailed'>"
    try:
        raise keel.StoreUnavailable("the server went away")
    except keel.StoreUnavailable as exc:
        text = "".join(traceback.format_exception(exc))
    assert text.rstrip().endswith("keel.StoreUnavailable: the server went away")
    assert "keel.core._errors" not in text


def test_a_store_outage_is_a_retryable_run_error_not_a_usage_error() -> None:
    assert issubclass(keel.StoreUnavailable, keel.RunError)
    assert not issubclass(keel.StoreUnavailable, keel.UserError)
    exc = keel.StoreUnavailable("lost the connection")
    assert exc.retryable
    assert not keel.StoreUnavailable("x", retryable=False).retryable


# What keel may raise that is not a KeelError: Python's own protocols (a module __getattr__,
# a mapping-style get, an abstract method), parse errors caught inside keel, a missing
# optional dependency, unreachable branches, and the test kit's assertions.
_ALLOWED = {
    # A module __getattr__ (lazy imports, deprecated aliases) answers unknown names so.
    ("__init__.py", "AttributeError"),
    ("cli/__init__.py", "AttributeError"),
    ("runtime/__init__.py", "AttributeError"),
    ("server/__init__.py", "AttributeError"),
    ("store/__init__.py", "AttributeError"),
    ("tools/__init__.py", "AttributeError"),
    ("cli/__init__.py", "ImportError"),  # the cli extra is missing: main() says which
    ("cli/__init__.py", "SystemExit"),  # the `keel` command's exit status
    ("core/_codec.py", "ValueError"),  # a value that contains itself, as json.dumps says
    ("patterns/_plan.py", "KeyError"),
    ("patterns/_plan.py", "ValueError"),  # a pydantic validator: becomes a ValidationError
    ("patterns/_quarantine.py", "ValueError"),  # a pydantic validator, as in _plan.py
    ("patterns/_routers.py", "ValueError"),  # caught by the router, which asks again
    ("runtime/_flow.py", "NotImplementedError"),
    ("store/_postgres.py", "ImportError"),  # open_store turns it into a UserError
    ("core/_messages.py", "ValueError"),  # part_from_dict on data that is not a part
    ("patterns/_groupchat.py", "AssertionError"),
    ("reliability/_fallback.py", "AssertionError"),
    ("models/_scripted.py", "AssertionError"),  # a script ran out: a failing test
    ("server/__init__.py", "ImportError"),  # the mcp extra is missing: it names the extra
    ("temporal/__init__.py", "ImportError"),  # the temporal extra is missing: names it
    # an MCP server's transport failed: raised inside the tool call, where keel's retry
    # layer treats it as transient (as a native tool's network error) and the model sees
    # it as a normalized failure
    ("tools/_mcp.py", "ConnectionError"),
    ("tools/_mcp.py", "TimeoutError"),
}


def test_keel_raises_keel_errors() -> None:
    builtin = {n for n in dir(builtins) if isinstance(getattr(builtins, n), type)
               and issubclass(getattr(builtins, n), BaseException)}
    raised: set[tuple[str, str]] = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("testing/"):  # the test kit fails tests with AssertionError
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and \
                    isinstance(node.exc.func, ast.Name) and node.exc.func.id in builtin:
                raised.add((rel, node.exc.func.id))
    assert raised - _ALLOWED == set(), "raise a keel error (UserError/RunError) instead"
