"""What the CLI lets out of the store: exports, ``--json`` views and step logs pass through the
personal-data policy (:class:`keel.guard.DataPolicy`): the default one, or the one named by
``$KEEL_DATA_POLICY`` (``module:attr`` or ``path.py:attr``, a ``DataPolicy``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from keel.cli._errors import CliError
from keel.cli._load import is_path, load_file, load_module, split_target
from keel.core import UserError
from keel.guard import DataPolicy, SensitiveDataBlocked
from keel.store import RunRecord

POLICY_ENV = "KEEL_DATA_POLICY"


def data_policy() -> DataPolicy:
    """The policy named by ``$KEEL_DATA_POLICY``, else the default one."""
    target = os.environ.get(POLICY_ENV, "").strip()
    if not target:
        return DataPolicy()
    try:
        module_ref, attr = split_target(target)
        module = load_file(Path(module_ref).expanduser().resolve()) if is_path(
            module_ref) else load_module(module_ref)
    except UserError as exc:
        raise CliError(f"${POLICY_ENV}={target!r}: {exc}") from None
    policy = getattr(module, attr, None)
    if not isinstance(policy, DataPolicy):
        raise CliError(f"${POLICY_ENV}={target!r} is not a keel.guard.DataPolicy "
                       f"({type(policy).__name__}); name one, e.g. myapp.policies:DATA")
    return policy


def scrubbed_export(data: dict[str, Any], record: RunRecord,
                    policy: DataPolicy | None = None) -> dict[str, Any]:
    """``data`` (an export or a ``--json`` view of ``record``) as it may leave: scrubbed for
    the ``exports`` destination. A kind the policy blocks refuses the command, naming it."""
    try:
        return (policy or data_policy()).scrub_export(data, record)
    except SensitiveDataBlocked as exc:
        raise CliError(f"not exported: {exc}") from None
