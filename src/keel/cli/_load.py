"""Import an agent from ``MODULE:ATTR``.

``MODULE`` is a dotted module name (``myapp.agents``) or a path to a ``.py`` file
(``examples/tool_use.py``); ``ATTR`` names a :class:`keel.Agent` in it (dots reach into
objects: ``app:agents.support``). The current directory is put on ``sys.path`` first, as
``python -m`` does, and a file's own directory too, as ``python file.py`` does.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from keel.core import KeelError, UserError
from keel.runtime import Agent, Flow

#: What a target names: an agent, or a flow (any pattern).
Runnable = Agent[Any] | Flow[Any]


def structured(agent: Runnable) -> bool:
    """Whether the live view reads the run's model turns as one agent with a typed output
    (a text answer then means the model is asked again). A flow's turns belong to several
    agents, each answering its own way: never."""
    return isinstance(agent, Agent) and agent.final_result_spec() is not None

_FORM = ("use MODULE:ATTR, e.g. examples/tool_use.py:agent (a file) or myapp.agents:support "
         "(a module importable from the current directory)")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def split_target(target: str) -> tuple[str, str]:
    """``(module, attr)`` from ``MODULE:ATTR``; the last ``:`` splits, so ``C:\\x.py:agent``
    works."""
    module, sep, attr = target.strip().rpartition(":")
    if not sep or not module or not attr:
        raise UserError(f"{target!r} does not name an agent: {_FORM}.")
    if not _IDENT.match(attr):
        raise UserError(f"{attr!r} in {target!r} is not a Python attribute name: {_FORM}.")
    return module, attr


def is_path(module: str) -> bool:
    """A file path rather than a dotted module name."""
    return (module.endswith(".py") or "/" in module or os.sep in module
            or Path(module).is_file())


def load_agent(target: str) -> tuple[Runnable, str]:
    """Import ``target`` and return the agent and the target to store with its runs (a file
    path made absolute, so ``keel resume`` works from any directory)."""
    module_ref, attr = split_target(target)
    if is_path(module_ref):
        path = Path(module_ref).expanduser().resolve()
        module = load_file(path)
        canonical = f"{path}:{attr}"
    else:
        if not _IDENT.match(module_ref):
            raise UserError(f"{module_ref!r} is neither a module name nor a .py file: {_FORM}.")
        module = load_module(module_ref)
        canonical = f"{module_ref}:{attr}"
    return find_agent(module, module_ref, attr), canonical


def _put_on_path(directory: Path) -> None:
    entry = str(directory)
    if entry not in sys.path:
        sys.path.insert(0, entry)


def load_module(name: str) -> ModuleType:
    """Import a dotted module, with the current directory on ``sys.path``."""
    _put_on_path(Path.cwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise UserError(
                f"no module named {name!r} (looked in {Path.cwd()} and the installed "
                "packages); run keel from the directory that contains it, or give the path "
                "to its .py file.") from None
        raise UserError(f"importing {name!r} failed: {exc}; install the missing package.") \
            from None
    except KeelError:
        raise
    except Exception as exc:
        raise _import_failed(name, exc) from None


def load_file(path: Path) -> ModuleType:
    """Execute a ``.py`` file as a module (registered in ``sys.modules`` under a private
    name, so pydantic models and dataclasses defined in it work)."""
    if not path.is_file():
        hint = "it is a directory" if path.is_dir() else "no such file"
        raise UserError(f"cannot load {path}: {hint}; give the path to a .py file.")
    if path.suffix != ".py":
        raise UserError(f"cannot load {path}: not a .py file; {_FORM}.")
    _put_on_path(Path.cwd())
    _put_on_path(path.parent)
    name = "_keel_target_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise UserError(f"cannot load {path} as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except KeelError:
        sys.modules.pop(name, None)
        raise
    except Exception as exc:
        sys.modules.pop(name, None)
        raise _import_failed(str(path), exc) from None
    return module


def _import_failed(what: str, exc: Exception) -> UserError:
    if isinstance(exc, SyntaxError):
        where = f" (line {exc.lineno})" if exc.lineno else ""
        return UserError(f"{what} has a syntax error{where}: {exc.msg}; fix it and try again.")
    return UserError(f"importing {what} failed: {type(exc).__name__}: {exc}; fix the module "
                     "so it imports cleanly (try `python -c 'import ...'`).")


def find_agent(module: ModuleType, module_ref: str, attr: str) -> Runnable:
    """The :class:`Agent` or :class:`Flow` at ``module.attr`` (dotted), or a UserError saying
    what is there."""
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            agents = agents_in(module)
            found = (f"agents in it: {', '.join(agents)}" if agents
                     else "it defines no keel Agent at module level")
            raise UserError(f"{module_ref} has no attribute {attr!r}; {found}.")
        obj = getattr(obj, part)
    if not isinstance(obj, Agent | Flow):
        raise UserError(
            f"{module_ref}:{attr} is a {type(obj).__name__}, not a keel Agent or Flow; point "
            "at an Agent instance (`agent = keel.Agent(...)`) or a pattern (a keel Flow).")
    return obj


def agents_in(module: ModuleType) -> list[str]:
    return sorted(name for name, value in vars(module).items()
                  if isinstance(value, Agent | Flow) and not name.startswith("_"))
