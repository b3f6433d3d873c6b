"""The deprecated registry of default middleware (kept for one release).

keel's default middleware is no longer registered here when keel is imported: it is listed,
in order, by :func:`keel.defaults` (``keel/_defaults.py``, the composition root that can see
every layer), and ``keel.Agent`` composes it. This module keeps
``register_default_middleware`` working for one release, with a ``DeprecationWarning``;
nothing in keel registers anything, so the registry is empty unless a user fills it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

from keel.runtime._middleware import Middleware

DefaultFactory = Callable[[], Sequence[Middleware]]
_LEGACY: dict[str, DefaultFactory] = {}


def register_default_middleware(name: str, factory: DefaultFactory) -> None:
    """Deprecated: subclass ``keel.Agent`` and override ``make_defaults`` (or pass the
    middleware to each agent) instead."""
    warnings.warn("register_default_middleware() is deprecated and will be removed: keel's "
                  "defaults are listed by keel.defaults(); subclass keel.Agent and override "
                  "make_defaults() to change them (see docs/middleware.md)",
                  DeprecationWarning, stacklevel=2)
    _LEGACY[name] = factory


def legacy_defaults() -> list[Middleware]:
    """What deprecated ``register_default_middleware`` calls registered (usually nothing)."""
    if not _LEGACY:
        return []
    return [m for factory in _LEGACY.values() for m in factory()]
