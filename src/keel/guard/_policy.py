"""Least privilege for tool calls: which tools an agent (and a tenant) may call, with which
scopes, and within which argument bounds.

:class:`ToolPolicy` is a middleware on the tool seam. Before a call runs it checks, for the
default rules, the calling agent's rules and the tenant's rules (each set that applies must
allow the call: they only ever narrow):

- the tool is allowed (``allow``, ``None`` = any) and not denied (``deny``);
- the scopes the policy requires for it are granted (the agent's ``scopes=``, and the
  caller's from ``scopes_of(ctx)`` when given);
- every argument constraint holds (``Limit``, ``OneOf``, ``Matches``, ``EmailDomains``, any
  :class:`~keel.guard.ArgumentCheck` such as :class:`~keel.guard.ReadOnlySQL` or
  :class:`~keel.guard.AllowedURLs`, or a plain function).

A refused call never runs: the model gets the normalized ``permission_denied`` observation
(not retryable, with a hint), which the journal records as the call's result and
``keel audit`` lists. Anything that cannot be decided (a constraint that raises, a
``tenant_of`` that raises) refuses the call.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from keel.core import ConfigError, ToolContext
from keel.guard._validators import ArgumentCheck, _ascii_host, _show
from keel.runtime import (
    AgentInput,
    GuardDecision,
    GuardInput,
    Middleware,
    ToolCallInput,
    ToolNext,
)
from keel.tools import Tool, ToolResult

#: A check on one argument value: an ArgumentCheck, or ``fn(value)`` returning None/True
#: (allowed), False or a reason (refused).
ValueCheck = ArgumentCheck | Callable[[Any], Any]
#: A tool's constraints: ``{argument: check or [checks]}``, or ``fn(arguments_dict)`` with
#: the same return convention.
ToolConstraint = Mapping[str, ValueCheck | Sequence[ValueCheck]] | Callable[[dict[str, Any]], Any]

_DENY_HINT = ("Do not retry this call: it is not permitted. Use another tool or tell the user "
              "what you cannot do.")


# ------------------------------------------------------------------------- value checks


class Limit(ArgumentCheck):
    """A number within ``[min, max]`` (either may be None). Numeric text (``"12.50"``) is read
    as the tool's validation would; booleans, NaN and anything else are refused."""

    kind = "number"

    def __init__(self, *, max: float | None = None, min: float | None = None) -> None:
        for part, bound in (("max", max), ("min", min)):
            if bound is not None and (isinstance(bound, bool) or not isinstance(
                    bound, int | float | Decimal) or not math.isfinite(bound)):
                raise ConfigError(f"Limit.{part}", f"must be a finite number, not {bound!r}")
        if max is None and min is None:
            raise ConfigError("Limit", "give max= and/or min= (a limit without bounds allows "
                              "everything)")
        if max is not None and min is not None and min > max:
            raise ConfigError("Limit", f"min {min} is above max {max}")
        self.max = None if max is None else Decimal(str(max))
        self.min = None if min is None else Decimal(str(min))

    def check(self, value: Any) -> str | None:
        number = _number(value)
        if number is None:
            return f"must be a number, not {_show(str(value), 40)}"
        if self.max is not None and number > self.max:
            return f"{number} is above the limit of {self.max}"
        if self.min is not None and number < self.min:
            return f"{number} is below the minimum of {self.min}"
        return None

    def _refusal(self, value: str) -> str | None:  # pragma: no cover - check() overrides
        return self.check(value)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal | str):
        if isinstance(value, str) and len(value) > 100:
            return None
        try:
            number = Decimal(str(value).strip())
        except (InvalidOperation, ValueError):
            return None
        return number if number.is_finite() else None
    return None


class OneOf(ArgumentCheck):
    """A value from a fixed set (compared exactly: ``"EUR"`` is not ``"eur"``)."""

    kind = "value"

    def __init__(self, values: Iterable[Any]) -> None:
        if isinstance(values, str):
            raise ConfigError("OneOf", "pass a list of values, not one str")
        self.values = frozenset(values)
        if not self.values:
            raise ConfigError("OneOf", "the set of values is empty, so every call would be "
                              "refused; list the allowed values")

    def check(self, value: Any) -> str | None:
        try:
            if value in self.values:
                return None
        except TypeError:  # unhashable (a dict, a list)
            pass
        shown = ", ".join(sorted(map(str, self.values)))[:200]
        return f"{_show(str(value), 40)} is not one of: {shown}"

    def _refusal(self, value: str) -> str | None:  # pragma: no cover - check() overrides
        return self.check(value)


class Matches(ArgumentCheck):
    """Text that matches ``pattern`` whole (``re.fullmatch``)."""

    kind = "text"
    max_chars = 10_000

    def __init__(self, pattern: str, *, flags: int = 0) -> None:
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError("Matches.pattern", f"must be a non-empty regex, not {pattern!r}")
        try:
            self.pattern = re.compile(pattern, flags)
        except re.error as exc:
            raise ConfigError("Matches.pattern", f"{pattern!r} does not compile: {exc}") from None

    def _refusal(self, value: str) -> str | None:
        if self.pattern.fullmatch(value):
            return None
        return f"{_show(value, 40)} does not match {self.pattern.pattern!r}"


class EmailDomains(ArgumentCheck):
    """An e-mail address whose domain is allowed: ``"example.com"`` that domain exactly,
    ``"*.example.com"`` its subdomains. Domains compare IDNA-normalised; display names,
    comments, several addresses and quoted local parts are refused."""

    kind = "e-mail address"
    max_chars = 320

    def __init__(self, domains: Iterable[str]) -> None:
        if isinstance(domains, str):
            raise ConfigError("EmailDomains", "pass a list of domains, not one str")
        self.exact: set[str] = set()
        self.suffixes: set[str] = set()
        for pattern in domains:
            wildcard = isinstance(pattern, str) and pattern.startswith("*.")
            host = _ascii_host(pattern[2:] if wildcard else pattern) \
                if isinstance(pattern, str) else None
            if host is None:
                raise ConfigError("EmailDomains", f"{pattern!r} is not a domain (write "
                                  "'example.com' or '*.example.com')")
            (self.suffixes if wildcard else self.exact).add(host)
        if not (self.exact or self.suffixes):
            raise ConfigError("EmailDomains", "the list of domains is empty, so every "
                              "address would be refused; name the allowed domains")

    def _refusal(self, value: str) -> str | None:
        local, at, domain = value.strip().rpartition("@")
        if not at or not local or any(c in value for c in ' <>,;"()[]\\') or "@" in local:
            return f"{_show(value, 60)} is not a single plain e-mail address"
        host = _ascii_host(domain)
        if host is None:
            return f"{_show(domain, 60)} is not a valid domain"
        if host in self.exact or any(host.endswith("." + s) for s in self.suffixes):
            return None
        return f"domain {_show(host, 60)} is not an allowed recipient domain"


# -------------------------------------------------------------------------------- rules


class ToolRules:
    """One set of rules (the default, an agent's or a tenant's). ``where`` names it in
    errors (``ToolPolicy.tenants['acme']``)."""

    __slots__ = ("allow", "constraints", "deny", "scopes", "where")

    def __init__(self, *, allow: Iterable[str] | None = None, deny: Iterable[str] = (),
                 scopes: Mapping[str, Iterable[str]] | None = None,
                 constraints: Mapping[str, ToolConstraint] | None = None,
                 deny_all: bool = False, where: str = "ToolRules") -> None:
        self.where = where
        self.allow = None if allow is None else _names(allow, f"{where}.allow")
        self.deny = _names(deny, f"{where}.deny")
        if self.allow is not None and not self.allow and not deny_all:
            raise ConfigError(f"{where}.allow", "the allow-list is empty, so every tool call "
                              "would be refused; list the tools, or pass allow=() with "
                              "deny_all=True if that is what you mean")
        if deny_all and self.allow:
            raise ConfigError(f"{where}.deny_all", "deny_all=True goes with allow=() only")
        if deny_all and self.allow is None:
            self.allow = frozenset()
        both = sorted(self.deny & (self.allow or frozenset()))
        if both:
            raise ConfigError(f"{where}", f"{', '.join(both)} both allowed and denied; "
                              "remove it from one of the lists")
        self.scopes = _scopes(scopes or {}, f"{where}.scopes")
        self.constraints = {name: _constraints(name, c, f"{where}.constraints[{name!r}]")
                            for name, c in _checked_map(constraints or {},
                                                        f"{where}.constraints").items()}

    def tool_names(self) -> dict[str, set[str]]:
        """Every tool name these rules mention, with the parts that mention it."""
        out: dict[str, set[str]] = {}
        for part, names in (("allow", self.allow or ()), ("deny", self.deny),
                            ("scopes", self.scopes), ("constraints", self.constraints)):
            for name in names:
                if name != "*":
                    out.setdefault(name, set()).add(f"{self.where}.{part}")
        return out

    def refusal(self, tool: Tool, args: dict[str, Any] | None,
                granted: Callable[[], frozenset[str]]) -> str | None:
        """Why these rules refuse calling ``tool`` with ``args`` (None: allowed)."""
        name = tool.name
        if name in self.deny:
            return f"{name} is denied by {self.where}"
        if self.allow is not None and name not in self.allow:
            return f"{name} is not in the allow-list of {self.where}"
        needed = self.scopes.get(name, frozenset()) | self.scopes.get("*", frozenset())
        if needed:
            missing = sorted(needed - granted())
            if missing:
                return f"{name} needs scope(s) {', '.join(missing)} ({self.where})"
        checks = self.constraints.get(name)
        if checks is None or args is None:
            return None
        return _run_checks(name, checks, args, self.where)


_Checks = Callable[[dict[str, Any]], Any] | dict[str, tuple[ValueCheck, ...]]


def _names(names: Iterable[str] | None, where: str) -> frozenset[str]:
    if isinstance(names, str):
        raise ConfigError(where, f"pass a list of tool names, not one str ({names!r})")
    try:
        out = frozenset(names or ())
    except TypeError:
        raise ConfigError(where, f"expected a list of tool names, got {names!r}") from None
    for n in out:
        if not isinstance(n, str) or not n:
            raise ConfigError(where, f"{n!r} is not a tool name")
    return out


def _checked_map(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(where, f"expected a mapping of tool name to rule, got "
                          f"{type(value).__name__}")
    for key in value:
        if not isinstance(key, str) or not key:
            raise ConfigError(where, f"{key!r} is not a tool name")
    return value


def _scopes(value: Mapping[str, Iterable[str]], where: str) -> dict[str, frozenset[str]]:
    out = {}
    for name, scopes in _checked_map(value, where).items():
        if isinstance(scopes, str):
            raise ConfigError(f"{where}[{name!r}]", "pass a list of scopes, not one str")
        out[name] = frozenset(scopes)
        if not out[name] or not all(isinstance(s, str) and s for s in out[name]):
            raise ConfigError(f"{where}[{name!r}]", "must list one or more scope names")
    return out


def _constraints(name: str, value: Any, where: str) -> _Checks:
    if name == "*":
        raise ConfigError(where, "constraints are per tool; name the tool")
    if isinstance(value, Mapping):
        checks: dict[str, tuple[ValueCheck, ...]] = {}
        for arg, given in value.items():
            if not isinstance(arg, str) or not all(p.isidentifier() for p in arg.split(".")):
                raise ConfigError(where, f"{arg!r} is not an argument name (a dotted path "
                                  "such as 'payment.amount' reaches into objects)")
            items = tuple(given) if isinstance(given, list | tuple) else (given,)
            for item in items:
                if not isinstance(item, ArgumentCheck) and not callable(item):
                    raise ConfigError(f"{where}[{arg!r}]", f"{item!r} is not a check: pass an "
                                      "ArgumentCheck (Limit, OneOf, ReadOnlySQL ...) or a "
                                      "function of the value")
            if not items:
                raise ConfigError(f"{where}[{arg!r}]", "no checks given")
            checks[arg] = items
        if not checks:
            raise ConfigError(where, "no argument constraints given")
        return checks
    if callable(value):
        return value  # type: ignore[no-any-return]
    raise ConfigError(where, f"{value!r} is not a constraint: pass {{argument: check}} or a "
                      "function of the arguments")


def _verdict(out: Any, what: str) -> str | None:
    if out is None or out is True:
        return None
    if out is False:
        return f"{what} is not allowed"
    if isinstance(out, str):
        return out or f"{what} is not allowed"
    return f"{what}: the check returned {type(out).__name__}, not None/bool/str (refused)"


def _run_checks(tool: str, checks: _Checks, args: dict[str, Any], where: str) -> str | None:
    if not isinstance(checks, dict):
        try:
            return _verdict(checks(dict(args)), f"this call of {tool}")
        except Exception as exc:  # fail closed
            return f"a constraint of {where} on {tool} failed ({type(exc).__name__})"
    for arg, items in checks.items():
        value = _lookup(args, arg)
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if v is None:
                continue  # absent or left out: the tool's own default applies
            for check in items:
                try:
                    if isinstance(check, ArgumentCheck):
                        reason = check.check(v)
                    else:
                        reason = _verdict(check(v), f"this value of {arg}")
                except Exception as exc:  # fail closed
                    return (f"{arg}: a constraint of {where} failed ({type(exc).__name__}); "
                            "refused")
                if reason is not None:
                    return f"{arg}: {reason}"
    return None


def _lookup(args: Mapping[str, Any], path: str) -> Any:
    value: Any = args
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


# ------------------------------------------------------------------------------- policy


class ToolPolicy(Middleware):
    """Per-agent and per-tenant tool policies, checked before each call (see the module).

    ``allow``/``deny``/``scopes``/``constraints``/``deny_all`` are the default rules (for
    every agent and tenant); ``agents={"support": {...}}`` and ``tenants={"acme": {...}}``
    add rules (same keywords, as a dict or a :class:`ToolRules`) for one agent or tenant.
    A call must pass every set that applies. A call is for its run's tenant
    (``run(..., tenant=)``, seen as ``ctx.tenant``); ``tenant_of(ctx)``, when given, says
    which tenant instead (an override, e.g. ``lambda ctx: ctx.deps.tenant``); with
    ``require_tenant=True`` a call without a tenant, or of a tenant not in ``tenants``, is
    refused. ``scopes_of(ctx)`` gives the caller's granted scopes (e.g. the end user's),
    checked besides the agent's own ``scopes=``.

    Tool and argument names are checked when an agent is built with the policy: an agent's
    rules against that agent's tools; the default and tenant rules, at the first call,
    against the tools of all the agents built with it (a typo in ``deny`` would otherwise
    leave the tool allowed), and then the names in ``agents`` against those agents."""

    def __init__(self, *, allow: Iterable[str] | None = None, deny: Iterable[str] = (),
                 scopes: Mapping[str, Iterable[str]] | None = None,
                 constraints: Mapping[str, ToolConstraint] | None = None,
                 deny_all: bool = False,
                 agents: Mapping[str, Mapping[str, Any] | ToolRules] | None = None,
                 tenants: Mapping[str, Mapping[str, Any] | ToolRules] | None = None,
                 tenant_of: Callable[[ToolContext], str | None] | None = None,
                 require_tenant: bool = False,
                 scopes_of: Callable[[ToolContext], Iterable[str]] | None = None) -> None:
        self.default = ToolRules(allow=allow, deny=deny, scopes=scopes,
                                 constraints=constraints, deny_all=deny_all,
                                 where="ToolPolicy")
        self.agents = _rule_sets(agents, "ToolPolicy.agents")
        self.tenants = _rule_sets(tenants, "ToolPolicy.tenants")
        for part, fn in (("tenant_of", tenant_of), ("scopes_of", scopes_of)):
            if fn is not None and not callable(fn):
                raise ConfigError(f"ToolPolicy.{part}", f"must be a function of the tool "
                                  f"context, not {fn!r}")
        self.tenant_of: Callable[[ToolContext], str | None] = tenant_of or _run_tenant
        self.require_tenant = require_tenant
        self.scopes_of = scopes_of
        self._tools: dict[str, Tool] = {}  # every tool of the agents built with this policy
        self._agent_names: set[str] = set()
        self._checked = False

    # ------------------------------------------------------------------- construction

    def on_agent(self, inp: AgentInput) -> None:
        tools = {t.name: t for t in inp.tools}
        rules = self.agents.get(inp.agent)
        if rules is not None:
            _check_names(rules, tools, f"agent {inp.agent!r}")
        self._tools.update(tools)
        self._agent_names.add(inp.agent)
        self._checked = False

    def _check_shared(self) -> None:
        if self._agent_names:
            for rules in (self.default, *self.tenants.values()):
                _check_names(rules, self._tools, "the agents built with this policy")
            unknown = sorted(set(self.agents) - self._agent_names)
            if unknown:
                raise ConfigError(f"ToolPolicy.agents[{unknown[0]!r}]", "no agent of that name "
                                  "was built with this policy (agents built with it: "
                                  f"{', '.join(sorted(self._agent_names))}); its rules would "
                                  "never apply")
        self._checked = True

    # ------------------------------------------------------------------------- calls

    guard_places = frozenset({"tool_args"})
    guard_timeout = None  # computation only

    async def check(self, inp: GuardInput) -> GuardDecision | None:
        """Before the approval gate: a call the policy refuses is never put to a person (the
        model gets ``permission_denied`` at once). ``wrap_tool_call`` checks again what
        actually runs (arguments a reviewer edited)."""
        if inp.tool is None:
            return None
        ctx = ToolContext(run_id=inp.run_id, step_key=inp.step_key, agent=inp.agent,
                          idempotency_key=f"{inp.run_id}/{inp.step_key}", scopes=inp.scopes,
                          deps=inp.deps, tenant=inp.tenant, user=inp.user)
        reason = self.refusal(ToolCallInput(run_id=inp.run_id, step_key=inp.step_key,
                                            agent=inp.agent, tool=inp.tool,
                                            arguments=inp.text, ctx=ctx))
        return None if reason is None else GuardDecision.deny(reason)

    async def wrap_tool_call(self, inp: ToolCallInput, next: ToolNext) -> ToolResult:
        reason = self.refusal(inp)
        if reason is not None:
            return ToolResult.fail("permission_denied", reason, retryable=False,
                                   hint=_DENY_HINT)
        return await next(inp)

    def refusal(self, inp: ToolCallInput) -> str | None:
        """Why the policy refuses this call, or None."""
        if not self._checked:
            self._check_shared()
        sets = [self.default]
        agent_rules = self.agents.get(inp.agent)
        if agent_rules is not None:
            sets.append(agent_rules)
        try:
            tenant = self.tenant_of(inp.ctx)
        except Exception as exc:  # fail closed
            return f"the tenant of this call cannot be told (tenant_of raised " \
                   f"{type(exc).__name__})"
        tenant_rules = self.tenants.get(tenant) if isinstance(tenant, str) else None
        if tenant_rules is not None:
            sets.append(tenant_rules)
        elif self.require_tenant:
            return (f"{inp.tool.name} is refused: this call has no known tenant "
                    f"({'none given' if tenant is None else 'tenant not configured'})")
        args = _arguments(inp.arguments)
        granted = _Granted(self, inp.ctx)
        for rules in sets:
            reason = rules.refusal(inp.tool, args, granted)
            if reason is not None:
                return reason
        return None


def _run_tenant(ctx: ToolContext) -> str | None:
    """The default ``tenant_of``: the run's tenant."""
    return ctx.tenant


class _Granted:
    """The scopes granted to a call, read once when first needed."""

    __slots__ = ("_ctx", "_policy", "_value")

    def __init__(self, policy: ToolPolicy, ctx: ToolContext) -> None:
        self._policy = policy
        self._ctx = ctx
        self._value: frozenset[str] | None = None

    def __call__(self) -> frozenset[str]:
        if self._value is None:
            granted = frozenset(self._ctx.scopes)
            if self._policy.scopes_of is not None:
                try:
                    caller = frozenset(self._policy.scopes_of(self._ctx))
                except Exception:  # fail closed: nothing granted
                    caller = frozenset()
                granted &= caller
            self._value = granted
        return self._value


def _rule_sets(given: Mapping[str, Mapping[str, Any] | ToolRules] | None,
               where: str) -> dict[str, ToolRules]:
    out: dict[str, ToolRules] = {}
    for key, value in _checked_map(given or {}, where).items():
        part = f"{where}[{key!r}]"
        if isinstance(value, ToolRules):
            out[key] = copy.copy(value)
            out[key].where = part
        elif isinstance(value, Mapping):
            try:
                out[key] = ToolRules(**value, where=part)
            except TypeError as exc:
                raise ConfigError(part, f"{exc}; the keys are allow, deny, scopes, "
                                  "constraints and deny_all") from None
        else:
            raise ConfigError(part, f"expected a dict of rules or a ToolRules, got "
                              f"{type(value).__name__}")
    return out


def _check_names(rules: ToolRules, tools: Mapping[str, Tool], whose: str) -> None:
    for name, parts in sorted(rules.tool_names().items()):
        if name not in tools:
            known = ", ".join(sorted(tools)) or "(none)"
            raise ConfigError(sorted(parts)[0], f"unknown tool {name!r}: the tools of "
                              f"{whose} are {known}")
    for name, checks in rules.constraints.items():
        if not isinstance(checks, dict):
            continue
        props = tools[name].parameters.get("properties")
        if not isinstance(props, dict):
            continue
        for arg in checks:
            if arg.split(".")[0] not in props:
                raise ConfigError(f"{rules.where}.constraints[{name!r}]", f"{name} has no "
                                  f"argument {arg.split('.')[0]!r} (its arguments: "
                                  f"{', '.join(props) or '(none)'})")


def _arguments(text: str) -> dict[str, Any] | None:
    """The call's arguments, or None when they do not parse (the tool then refuses them
    itself and nothing runs)."""
    try:
        args = json.loads(text or "{}")
    except (ValueError, RecursionError):
        return None
    return args if isinstance(args, dict) else None
