"""Spend caps: per-tenant and per-agent ceilings on money and tokens over calendar windows.

:class:`SpendCaps` is middleware on the model seam. Before each model call it estimates the
call's cost (the prompt's tokens, about four characters each, at the model's input price,
plus the request's ``max_tokens``, or ``output_estimate``, at its output price: prices from
``keel.models.model_info``) and *reserves* it against every cap that applies (the run's
tenant, the agent) in a shared :class:`~keel.observe.CapStore`, all or nothing. After the
call it settles: the estimate is released and the provider's reported usage charged
(``Usage.cost_usd``, or the listed price of its tokens when the adapter left it 0). A failed
call releases its estimate. So the spend in a window never passes a cap by more than what
one call's actual cost exceeds its estimate.

Windows are calendar windows in UTC (``hourly``, ``daily``, ``monthly``): every worker sees
the same window whatever its start time, and a cap resets at the window's end.

At a threshold (fractions of the cap, by default 0.5, 0.8 and 1.0) a :class:`SpendAlert`
goes to the notifier (``keel.guard``'s ``LogNotifier``/``WebhookNotifier`` take it, or
anything with ``async notify(alert)``), in the background and retried, **once per threshold,
cap, subject and window** across workers: the store's ``claim`` decides which worker sends
it, and keeps the record of sent thresholds. Every alert and every cap decision is also a
warning on the ``keel.observe.caps`` logger (the fields under ``spend_cap``). A call
stopped at the cap counts as the cap reached: the thresholds not yet sent in that window
are sent then (the room left is less than one call's estimate).

At the cap, the cap's ``action``: ``"refuse"`` raises :class:`~keel.BudgetExceeded` naming
the cap, the window and when it resets; ``"queue"`` waits for the window to reset (at most
``max_wait`` seconds, and never past the run's deadline, which cancels the wait);
``"degrade"`` sends the request to the cap's ``fallback`` model (charged at its price; the
response's ``provider_details["spend_cap"]`` and ``model`` show which model answered, in the
journal).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from keel.core import BudgetExceeded, ConfigError, Message, ModelResponse
from keel.models import Model, model_info, resolve_model
from keel.observe._alerts import Notifier
from keel.observe._caps_stores import CapStore, MemoryCapStore, Slot
from keel.runtime import AgentInput, Middleware, ModelNext, ModelRequestInput

_log = logging.getLogger("keel.observe.caps")

Scope = Literal["tenant", "agent"]
Action = Literal["refuse", "queue", "degrade"]
WINDOWS = {"hourly": "hourly", "hour": "hourly", "daily": "daily", "day": "daily",
           "monthly": "monthly", "month": "monthly"}
ACTIONS = ("refuse", "queue", "degrade")
#: The subject of a tenant cap for runs started without a tenant.
NO_TENANT = "(no tenant)"


def window_of(window: str, now: float) -> tuple[str, float, float]:
    """(label, start, end) of the calendar window (UTC) holding ``now`` (epoch seconds)."""
    t = datetime.fromtimestamp(now, UTC)
    if window == "hourly":
        start = t.replace(minute=0, second=0, microsecond=0)
        end, label = start + timedelta(hours=1), start.strftime("%Y-%m-%dT%H")
    elif window == "daily":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end, label = start + timedelta(days=1), start.strftime("%Y-%m-%d")
    else:
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
        label = start.strftime("%Y-%m")
    return label, start.timestamp(), end.timestamp()


def _limit(part: str, value: object, *, whole: bool) -> Any:
    if value is None:
        return None
    kinds: Any = int if whole else int | float
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) \
            or value < 0:
        what = "a whole number of tokens >= 0" if whole else "dollars >= 0 (a finite number)"
        raise ConfigError(part, f"must be {what} or None, not {value!r}")
    return value if whole else float(value)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, kw_only=True)
class SpendCap:
    """A ceiling on spend per ``scope`` subject (each tenant, or each agent; only ``only``
    when given) per calendar ``window``, in dollars (``max_usd``) and/or tokens
    (``max_tokens``). ``thresholds`` are the fractions of the cap at which an alert goes
    out; ``action`` is what happens at the cap (``fallback``: the model to degrade to)."""

    scope: Scope
    window: str
    max_usd: float | None = None
    max_tokens: int | None = None
    only: str | None = None
    thresholds: Sequence[float] = (0.5, 0.8, 1.0)
    action: Action = "refuse"
    fallback: str | Model | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.scope not in ("tenant", "agent"):
            raise ConfigError("SpendCap.scope", f"must be 'tenant' or 'agent', not "
                                                f"{self.scope!r}")
        if not isinstance(self.window, str) or self.window not in WINDOWS:
            raise ConfigError("SpendCap.window", f"must be one of hourly, daily or monthly "
                                                 f"(calendar windows in UTC), not "
                                                 f"{self.window!r}")
        object.__setattr__(self, "window", WINDOWS[self.window])
        object.__setattr__(self, "max_usd", _limit("SpendCap.max_usd", self.max_usd,
                                                   whole=False))
        object.__setattr__(self, "max_tokens", _limit("SpendCap.max_tokens", self.max_tokens,
                                                      whole=True))
        if self.max_usd is None and self.max_tokens is None:
            raise ConfigError("SpendCap", "needs max_usd and/or max_tokens (a cap with no "
                                          "limit caps nothing)")
        if self.only is not None and (not isinstance(self.only, str) or not self.only):
            raise ConfigError("SpendCap.only", f"must be a non-empty {self.scope} id or None, "
                                               f"not {self.only!r}")
        object.__setattr__(self, "thresholds", _thresholds(self.thresholds))
        self._check_action()
        if not isinstance(self.name, str):
            raise ConfigError("SpendCap.name", f"must be a string, not {self.name!r}")
        if not self.name:
            who = self.only or "each"
            object.__setattr__(self, "name", f"{self.scope}:{who}:{self.window}")

    def _check_action(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigError("SpendCap.action", f"must be one of {', '.join(ACTIONS)}, not "
                                                 f"{self.action!r}")
        if self.action == "degrade":
            if not isinstance(self.fallback, str | Model) or not self.fallback:
                raise ConfigError("SpendCap.fallback", "action='degrade' needs the cheaper "
                                                       "model: a model id or a keel Model")
        elif self.fallback is not None:
            raise ConfigError("SpendCap.fallback", f"is only used with action='degrade', not "
                                                   f"{self.action!r}")

    @property
    def fallback_name(self) -> str | None:
        f = self.fallback
        return f if isinstance(f, str) or f is None else f.name

    def subject(self, inp: ModelRequestInput) -> str | None:
        """Whose spend a request is (None: this cap does not apply to it)."""
        who = inp.agent if self.scope == "agent" else (inp.tenant or NO_TENANT)
        return who if self.only is None or self.only == who else None

    def describe(self) -> str:
        parts = ([f"${self.max_usd:g}"] if self.max_usd is not None else []) + \
                ([f"{self.max_tokens} tokens"] if self.max_tokens is not None else [])
        return f"{' and '.join(parts)} {self.window}"


def _thresholds(value: object) -> tuple[float, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigError("SpendCap.thresholds", f"must be fractions of the cap in (0, 1], "
                                                 f"e.g. (0.5, 0.8, 1.0), not {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1:
            raise ConfigError("SpendCap.thresholds", f"each must be a fraction of the cap in "
                                                     f"(0, 1], not {v!r}")
        out.append(float(v))
    return tuple(sorted(set(out)))


@dataclass(frozen=True, slots=True, kw_only=True)
class SpendAlert:
    """A cap crossed a threshold in a window (has ``keel.guard.Alert``'s fields, so the
    guard's notifiers take it)."""

    cap: str
    scope: str
    subject: str
    window: str
    window_label: str
    threshold: float
    spent_usd: float
    spent_tokens: int
    max_usd: float | None
    max_tokens: int | None
    resets_at: float
    at: float
    run_id: str = "-"
    agent: str = "*"
    reason: str = ""
    step_key: str | None = None
    tool = None

    @property
    def tenant(self) -> str | None:
        return self.subject if self.scope == "tenant" else None

    @property
    def deviation(self) -> str:
        return f"spend_cap:{self.cap}"

    @property
    def actions(self) -> tuple[str, ...]:
        return ("alert",)

    def to_dict(self) -> dict[str, Any]:
        return {"cap": self.cap, "deviation": self.deviation, "actions": list(self.actions),
                "scope": self.scope, "subject": self.subject, "tenant": self.tenant,
                "window": self.window, "window_label": self.window_label,
                "threshold": self.threshold, "spent_usd": self.spent_usd,
                "spent_tokens": self.spent_tokens, "max_usd": self.max_usd,
                "max_tokens": self.max_tokens, "resets_at": self.resets_at, "at": self.at,
                "run_id": self.run_id, "agent": self.agent, "step_key": self.step_key,
                "reason": self.reason}


@dataclass(slots=True)
class _Hold:
    """What one call reserved: the caps and slots it is charged to, and the estimate."""

    caps: list[SpendCap]
    subjects: list[str]
    slots: list[Slot]
    labels: list[str]
    usd: float
    tokens: int


def _chars(m: Message) -> int:
    n = 0
    for p in m.parts:
        n += len(getattr(p, "text", "") or getattr(p, "content", "") or "") + \
            len(getattr(p, "arguments", "") or "")
    return n


def estimate_prompt_tokens(messages: Sequence[Message], *, _seen: dict[int, Any] | None = None,
                           ) -> int:
    """About four characters a token, plus four a message: no tokenizer needed. (With
    ``_seen``, a conversation that grows in place is only read from where it was left.)"""
    start, chars = 0, 0
    if _seen is not None and messages:
        got = _seen.get(id(messages))
        if got is not None and got[0] is messages[0] and got[1] <= len(messages):
            start, chars = got[1], got[2]
    for i in range(start, len(messages)):
        chars += _chars(messages[i])
    if _seen is not None and messages:
        if len(_seen) > 4096:
            _seen.clear()
        _seen[id(messages)] = (messages[0], len(messages), chars)
    return chars // 4 + 4 * len(messages) + 1


def _price(model_name: str) -> tuple[float, float, bool]:
    provider, _, model = model_name.partition(":")
    info = model_info(provider, model) if model else model_info("", provider)
    return info.input_per_mtok, info.output_per_mtok, info.priced


@dataclass
class _Pending:
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class SpendCaps(Middleware):
    """Enforce ``caps`` before each model call (see the module). ``store``: where the
    counters live (default: this process only; :class:`~keel.observe.RedisCapStore` or
    :class:`~keel.observe.SQLCapStore` to share them across workers). ``notifier`` gets the
    threshold alerts (also logged and kept in :attr:`sent`, the last 1000 this process
    sent). ``output_estimate``: the output tokens assumed for a request without
    ``max_tokens``. ``max_wait``: the longest a ``"queue"`` cap waits (None: until the window
    resets; the run's deadline always bounds it)."""

    def __init__(self, caps: Iterable[SpendCap] | SpendCap, *, store: CapStore | None = None,
                 notifier: Notifier | None = None, output_estimate: int = 1024,
                 max_wait: float | None = None, attempts: int = 4, backoff: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        listed = [caps] if isinstance(caps, SpendCap) else list(caps) \
            if isinstance(caps, Iterable) and not isinstance(caps, str | bytes) else None
        if not listed or not all(isinstance(c, SpendCap) for c in listed):
            raise ConfigError("SpendCaps.caps", f"must be one or more SpendCap, not {caps!r}")
        names = [c.name for c in listed]
        if len(set(names)) != len(names):
            twice = sorted(n for n in names if names.count(n) > 1)[0]
            raise ConfigError("SpendCaps.caps", f"two caps have the same name ({twice!r}); "
                                                "name them apart with SpendCap(name=...)")
        self.caps = tuple(listed)
        if store is not None and not all(hasattr(store, m) for m in
                                         ("reserve", "settle", "claim", "spent")):
            raise ConfigError("SpendCaps.store", f"must be a CapStore (MemoryCapStore, "
                                                 f"SQLCapStore, RedisCapStore), not {store!r}")
        self.store: CapStore = store if store is not None else MemoryCapStore()
        if notifier is not None and not callable(getattr(notifier, "notify", None)):
            raise ConfigError("SpendCaps.notifier", f"must have an async notify(alert), not "
                                                    f"{notifier!r}")
        self.notifier = notifier
        if isinstance(output_estimate, bool) or not isinstance(output_estimate, int) \
                or output_estimate < 1:
            raise ConfigError("SpendCaps.output_estimate", f"must be a whole number of tokens "
                                                           f">= 1, not {output_estimate!r}")
        self.output_estimate = output_estimate
        if max_wait is not None and (isinstance(max_wait, bool) or not isinstance(
                max_wait, int | float) or not 0 <= max_wait < math.inf):
            raise ConfigError("SpendCaps.max_wait", f"must be seconds >= 0 or None, not "
                                                    f"{max_wait!r}")
        self.max_wait = max_wait
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigError("SpendCaps.attempts", f"must be a whole number >= 1, not "
                                                    f"{attempts!r}")
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) \
                or not 0 <= backoff <= 60:
            raise ConfigError("SpendCaps.backoff", f"must be seconds in [0, 60], not "
                                                   f"{backoff!r}")
        self.attempts, self.backoff, self.clock = attempts, float(backoff), clock
        self.sent: list[SpendAlert] = []
        self._pending = _Pending()
        self._fallbacks: dict[str, Model] = {}
        self._unpriced_warned: set[str] = set()
        # caches: the current calendar window of each kind, model prices, conversations
        # already counted, and the thresholds known to be sent (no store trip for them)
        self._windows: dict[str, tuple[str, float, float]] = {}
        self._prices: dict[str, tuple[float, float, bool]] = {}
        self._seen: dict[int, Any] = {}
        self._sent_marks: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"SpendCaps({[c.name for c in self.caps]!r}, store={self.store!r})"

    def on_agent(self, inp: AgentInput) -> None:
        model = getattr(inp, "model", None)
        name = model if isinstance(model, str) or model is None else model.name
        for cap in self.caps:
            if cap.fallback_name is not None and cap.fallback_name == name:
                raise ConfigError("SpendCap.fallback", f"cap {cap.name!r} degrades to "
                                                       f"{name!r}, the agent's own model: give "
                                                       "a cheaper model")

    # ------------------------------------------------------------------------- the call

    async def wrap_model_request(self, inp: ModelRequestInput, next: ModelNext) -> ModelResponse:
        caps = [(c, s) for c in self.caps if (s := c.subject(inp)) is not None]
        if not caps:
            return await next(inp)
        asked = inp.model.name
        hold, inp = await self._admit(inp, caps)
        try:
            response = await next(inp)
        except BaseException:
            await self._settle(inp, hold, -hold.usd, -hold.tokens)
            raise
        usd, tokens = self._actual(inp.model.name, response)
        await self._settle(inp, hold, usd - hold.usd, tokens - hold.tokens)
        if inp.model.name != asked:  # degraded: say so in the journaled response
            details = dict(response.provider_details or {})
            details["spend_cap"] = {"degraded_from": asked, "answered_by": inp.model.name}
            response = replace(response, provider_details=details,
                               model=response.model or inp.model.name)
        return response

    def _estimate(self, model_name: str, inp: ModelRequestInput) -> tuple[float, int]:
        prompt = estimate_prompt_tokens(inp.messages, _seen=self._seen)
        out = inp.settings.max_tokens or self.output_estimate
        price = self._prices.get(model_name)
        if price is None:
            if len(self._prices) > 256:
                self._prices.clear()
            price = self._prices[model_name] = _price(model_name)
        price_in, price_out, priced = price
        if not priced and model_name not in self._unpriced_warned and any(
                c.max_usd is not None for c in self.caps):
            self._unpriced_warned.add(model_name)
            _log.warning("spend caps: %s has no listed price, so its calls count 0 dollars "
                         "against the money caps (tokens still count); give its price with "
                         "keel.models.register_model_info", model_name)
        return (prompt * price_in + out * price_out) / 1e6, prompt + out

    @staticmethod
    def _actual(model_name: str, response: ModelResponse) -> tuple[float, int]:
        u = response.usage
        usd = u.cost_usd
        if not usd and u.total_tokens:
            price_in, price_out, _ = _price(model_name)
            usd = (u.input_tokens * price_in + u.output_tokens * price_out) / 1e6
        return usd, u.total_tokens

    def _hold(self, caps: list[tuple[SpendCap, str]], model_name: str,
              inp: ModelRequestInput) -> _Hold:
        now = self.clock()
        usd, tokens = self._estimate(model_name, inp)
        slots, labels = [], []
        for cap, subject in caps:
            label, _, end = self._window(cap.window, now)
            labels.append(label)
            slots.append(Slot(f"{cap.name}|{subject}|{label}", cap.max_usd, cap.max_tokens,
                              end))
        return _Hold([c for c, _ in caps], [s for _, s in caps], slots, labels, usd, tokens)

    def _window(self, window: str, now: float) -> tuple[str, float, float]:
        got = self._windows.get(window)
        if got is None or not got[1] <= now < got[2]:
            got = self._windows[window] = window_of(window, now)
        return got

    async def _admit(self, inp: ModelRequestInput, caps: list[tuple[SpendCap, str]],
                     ) -> tuple[_Hold, ModelRequestInput]:
        waited = 0.0
        while True:
            hold = self._hold(caps, inp.model.name, inp)
            refusal = await self.store.reserve(hold.slots, hold.usd, hold.tokens)
            if refusal is None:
                return hold, inp
            i = refusal.index
            cap, slot = hold.caps[i], hold.slots[i]
            await self._at_cap(inp, hold, i, refusal.usd, refusal.tokens)
            wait = slot.expires_at - self.clock()
            alone = (cap.max_usd is not None and hold.usd > cap.max_usd) or (
                cap.max_tokens is not None and hold.tokens > cap.max_tokens)
            if cap.action == "degrade" and inp.model.name != cap.fallback_name:
                inp = replace(inp, model=self._fallback(cap))
                _log.warning("spend cap %s reached for %s; this call goes to %s",
                             cap.name, hold.subjects[i], inp.model.name,
                             extra={"spend_cap": {"cap": cap.name, "action": "degrade",
                                                  "run_id": inp.run_id,
                                                  "to": inp.model.name}})
                continue
            if cap.action == "queue" and not alone and (self.max_wait is None
                                                        or waited + wait <= self.max_wait):
                _log.warning("spend cap %s reached for %s; waiting %.0fs for the window to "
                             "reset", cap.name, hold.subjects[i], wait,
                             extra={"spend_cap": {"cap": cap.name, "action": "queue",
                                                  "run_id": inp.run_id, "wait_s": wait}})
                pause = max(0.0, wait) + random.uniform(0.0, 0.05)
                waited += pause
                await asyncio.sleep(pause)
                continue
            raise self._exceeded(inp, hold, i, refusal.usd, refusal.tokens)

    def _fallback(self, cap: SpendCap) -> Model:
        f = cap.fallback
        if isinstance(f, Model):
            return f
        assert isinstance(f, str)
        model = self._fallbacks.get(f)
        if model is None:
            model = self._fallbacks[f] = resolve_model(f)
        return model

    def _exceeded(self, inp: ModelRequestInput, hold: _Hold, i: int, usd: float,
                  tokens: int) -> BudgetExceeded:
        cap, slot, subject = hold.caps[i], hold.slots[i], hold.subjects[i]
        resets = datetime.fromtimestamp(slot.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        money = cap.max_usd is not None and usd + hold.usd > cap.max_usd
        used, allowed = (usd, cap.max_usd) if money else (float(tokens), cap.max_tokens)
        what = (f"${usd:.4f} of ${cap.max_usd:g} spent, this call needs about ${hold.usd:.4f}"
                if money else f"{tokens} of {cap.max_tokens} tokens used, this call needs "
                              f"about {hold.tokens}")
        via = f" (after degrading to {inp.model.name})" if cap.action == "degrade" else ""
        exc = BudgetExceeded(
            f"spend cap {cap.name!r} reached for {cap.scope} {subject!r} in the {cap.window} "
            f"window {hold.labels[i]}: {what}{via}. It resets at {resets}; raise "
            f"SpendCap(max_{'usd' if money else 'tokens'}=...) or set action='queue' or "
            "'degrade'", limit=f"spend_cap:{cap.name}", used=used, allowed=float(allowed or 0),
            run_id=inp.run_id, step_key=inp.step_key)
        exc.cap = cap.name  # type: ignore[attr-defined]
        exc.window = cap.window  # type: ignore[attr-defined]
        exc.window_label = hold.labels[i]  # type: ignore[attr-defined]
        exc.resets_at = slot.expires_at  # type: ignore[attr-defined]
        return exc

    # ---------------------------------------------------------------------- alerts

    async def _settle(self, inp: ModelRequestInput, hold: _Hold, usd: float,
                      tokens: int) -> None:
        totals = await self.store.settle(hold.slots, usd, tokens)
        for i, (spent_usd, spent_tokens) in enumerate(totals):
            cap = hold.caps[i]
            fraction = max(spent_usd / cap.max_usd if cap.max_usd else 0.0,
                           spent_tokens / cap.max_tokens if cap.max_tokens else 0.0)
            for threshold in cap.thresholds:
                if fraction + 1e-12 >= threshold:
                    await self._alert(inp, hold, i, threshold, spent_usd, spent_tokens)

    async def _at_cap(self, inp: ModelRequestInput, hold: _Hold, i: int, usd: float,
                      tokens: int) -> None:
        for threshold in hold.caps[i].thresholds:  # the cap is reached: all of them are
            await self._alert(inp, hold, i, threshold, usd, tokens, stopped=True)

    async def _alert(self, inp: ModelRequestInput, hold: _Hold, i: int, threshold: float,
                     usd: float, tokens: int, *, stopped: bool = False) -> None:
        cap, slot = hold.caps[i], hold.slots[i]
        mark = (slot.key, f"{threshold:g}")
        if mark in self._sent_marks:
            return
        if len(self._sent_marks) > 4096:
            self._sent_marks.clear()
        self._sent_marks.add(mark)  # sent by us or by another worker: not asked again
        if not await self.store.claim(slot, mark[1]):
            return
        why = "a call was stopped at the cap" if stopped else f"{threshold:.0%} reached"
        alert = SpendAlert(
            cap=cap.name, scope=cap.scope, subject=hold.subjects[i], window=cap.window,
            window_label=hold.labels[i], threshold=threshold, spent_usd=usd,
            spent_tokens=tokens, max_usd=cap.max_usd, max_tokens=cap.max_tokens,
            resets_at=slot.expires_at, at=self.clock(), run_id=inp.run_id, agent=inp.agent,
            step_key=inp.step_key,
            reason=f"spend cap {cap.name} ({cap.describe()}) for {cap.scope} "
                   f"{hold.subjects[i]!r}: {why} in window {hold.labels[i]} "
                   f"(${usd:.4f}, {tokens} tokens)")
        _log.warning("spend alert: %s", alert.reason, extra={"spend_cap": alert.to_dict()})
        self.sent.append(alert)
        del self.sent[:-1000]
        if self.notifier is not None:
            task = asyncio.get_running_loop().create_task(self._deliver(alert))
            self._pending.tasks.add(task)
            task.add_done_callback(self._pending.tasks.discard)

    async def _deliver(self, alert: SpendAlert) -> None:
        notifier = self.notifier
        assert notifier is not None
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            before = getattr(notifier, "failures", 0)
            try:
                await notifier.notify(alert)
                if getattr(notifier, "failures", 0) == before:
                    return
                error = "the notifier counted a failure"
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt < self.attempts:
                await asyncio.sleep(min(60.0, delay) * random.uniform(0.5, 1.0))
                delay *= 2
        _log.warning("spend alert %s not delivered after %d attempts (%s)", alert.deviation,
                     self.attempts, error)

    async def drain(self, wait: float | None = None) -> None:
        """Wait for the alerts still being delivered (at most ``wait`` seconds)."""
        pending = list(self._pending.tasks)
        if pending:
            await asyncio.wait(pending, timeout=wait)
