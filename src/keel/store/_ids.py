"""The ids a run carries (tenant, user): what makes one valid."""

from __future__ import annotations

from keel.core import UserError

#: The longest tenant or user id a run may carry (characters).
MAX_ID_CHARS = 200


def check_id(name: str, value: object) -> str:
    """A run's ``tenant`` or ``user`` id (``name``): a non-empty string of at most
    :data:`MAX_ID_CHARS` characters, without control characters; a :class:`~keel.UserError`
    saying which rule it breaks otherwise."""
    if not isinstance(value, str):
        raise UserError(f"{name}= must be a string (an id such as 'acme'), not "
                        f"{type(value).__name__}.")
    if not value.strip():
        raise UserError(f"{name}= is empty; give the {name} id (or leave {name}= out).")
    if len(value) > MAX_ID_CHARS:
        raise UserError(f"{name}= is {len(value):,} characters long; a {name} id has at most "
                        f"{MAX_ID_CHARS}.")
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise UserError(f"{name}= holds a control or unprintable character ({bad!r}); a "
                        f"{name} id is printable text.")
    return value
