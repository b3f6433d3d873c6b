"""Default middleware: what every Agent gets unless it says otherwise.

The runtime (L2) cannot import the layers above it (reliability, guardrails, observability);
the package root (``keel/__init__``) registers their defaults here when keel is imported. An
Agent puts them outside its own middleware. A user middleware of the same type replaces the
default of that type (``Retry(RetryPolicy(max_attempts=5))`` replaces the default retry);
``Agent(default_middleware=False)`` drops them all, explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from keel.runtime._middleware import Middleware

DefaultFactory = Callable[[], Sequence[Middleware]]
_FACTORIES: dict[str, DefaultFactory] = {}


def register_default_middleware(name: str, factory: DefaultFactory) -> None:
    """Register (or replace) a named factory of default middleware, outermost first."""
    _FACTORIES[name] = factory


def default_middleware(user: Sequence[Middleware]) -> list[Middleware]:
    """The defaults for an agent whose own middleware is ``user``: one fresh instance per
    agent, minus any type the user already provides."""
    taken = {type(m) for m in user}
    return [m for factory in _FACTORIES.values() for m in factory() if type(m) not in taken]
