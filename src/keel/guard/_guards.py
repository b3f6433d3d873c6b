"""keel's default guards, each a middleware with ``check`` (see ``keel.runtime._guarding``),
and :func:`default_guards`, the list ``keel.defaults()`` composes, in order.

* :class:`LimitsGuard`: the user's input and each tool output within size limits, without
  binary content or broken encoding (``input``: refused; ``tool_output``: repaired).
* :class:`InjectionGuard`: prompt-injection and jailbreak detection on the user's input and on
  tool output (blocked: the user gets the reason; the model gets the reason instead of the
  tool's text).
* :class:`SecretsGuard`: credentials and keys masked in tool output (before the model reads
  them) and in the final answer (before it leaves).
* :class:`~keel.guard.TaintGuard` and :class:`~keel.guard.UntrustedContent`: the structural
  defence (see ``_taint``).

Each has ``.off()``; passing it in ``middleware=`` replaces the default of its type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from keel.core import ConfigError, redact_text
from keel.guard._injection import DEFAULT_THRESHOLD, InjectionDetector, InjectionResult
from keel.guard._limits import TextLimits
from keel.guard._screen import screen_text
from keel.guard._taint import TaintGuard, UntrustedContent
from keel.runtime import GuardDecision, GuardInput, Middleware, Place


def _enabled(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, "must be True or False")
    return value


class LimitsGuard(Middleware):
    """The user's input is refused past ``max_input_chars``; a tool output past
    ``max_output_chars`` is cut (the tool's own ``output_limit`` usually cuts it first). In
    both, broken encoding (lone surrogates) is replaced with U+FFFD. Control characters pass:
    the model reads them harmlessly, and everything keel shows a person (the CLI, logs)
    escapes them itself."""

    guard_places = frozenset({"input", "tool_output"})
    guard_timeout = None
    name = "limits"

    def __init__(self, *, max_input_chars: int = 1_000_000, max_output_chars: int = 1_000_000,
                 enabled: bool = True) -> None:
        self.enabled = _enabled(enabled, "LimitsGuard.enabled")
        self._input = TextLimits(max_chars=max_input_chars)
        self._repair = TextLimits(max_chars=None, on_excess="truncate", allow_control=True)
        self._output = TextLimits(max_chars=max_output_chars, on_excess="truncate",
                                  allow_control=True)

    @classmethod
    def off(cls) -> LimitsGuard:
        return cls(enabled=False)

    async def check(self, inp: GuardInput) -> GuardDecision | None:
        if not self.enabled:
            return None
        text = inp.text
        if len(text) <= 10_000 and text.isascii():
            return None  # the common case: nothing to check further
        if inp.place == "input":
            limit = self._input.max_chars
            if limit is not None and len(text) > limit:
                return GuardDecision.block(
                    f"the message is {len(text):,} characters, over the limit of {limit:,}; "
                    "send less", evidence={"chars": len(text), "limit": limit})
            cleaned = self._repair.clean(text)
        else:
            cleaned = self._output.clean(text)
        if cleaned == text:
            return None
        return GuardDecision.redact(cleaned, "cut, or binary and broken characters replaced",
                                    evidence={"chars": len(text), "kept": len(cleaned)})


Scanner = Callable[[str], InjectionResult]


class InjectionGuard(Middleware):
    """Blocks the user's input and tool outputs that look like prompt injection or a
    jailbreak: a cheap pre-check clears ordinary text, the rest goes to
    ``keel.guard.detect_injection`` (normalisation, weighted rules and a small classifier).
    ``places`` chooses where (default both); ``threshold`` moves the verdict line and
    ``detector`` replaces the detector (both skip the pre-check)."""

    guard_places = frozenset({"input", "tool_output"})
    guard_timeout = None
    name = "injection"

    def __init__(self, *, places: Iterable[Place] | Place = ("input", "tool_output"),
                 threshold: float = DEFAULT_THRESHOLD, enabled: bool = True,
                 detector: InjectionDetector | None = None) -> None:
        self.enabled = _enabled(enabled, "InjectionGuard.enabled")
        given: Iterable[Place] = (places,) if isinstance(places, str) else places
        chosen = frozenset(given)
        odd = chosen - {"input", "tool_output", "output"}
        if odd or not chosen:
            raise ConfigError("InjectionGuard.places", "choose among 'input', 'tool_output' "
                              "and 'output' (the text that reaches the model or leaves it)"
                              + (f"; not {sorted(odd)[0]!r}" if odd else ""))
        self.guard_places = chosen
        #: None: keel's default detector behind the cheap pre-check (``screen_text``).
        self._detector = detector if detector is not None or threshold == DEFAULT_THRESHOLD \
            else InjectionDetector(threshold=threshold)

    @classmethod
    def off(cls) -> InjectionGuard:
        return cls(enabled=False)

    async def check(self, inp: GuardInput) -> GuardDecision | None:
        if not self.enabled:
            return None
        if self._detector is None:
            found = screen_text(inp.text, source="user" if inp.place == "input" else "tool")
            if found is None:
                return None
            result = found
        else:
            result = self._detector.scan(inp.text)
        if not result.flagged:
            return None
        families = sorted(result.families)
        evidence = {"score": round(result.score, 3), "families": families,
                    "rules": sorted({e.rule for e in result.evidence})}
        what = "the message" if inp.place == "input" else "this content"
        return GuardDecision.block(
            f"{what} looks like a prompt-injection or jailbreak attempt "
            f"({', '.join(families)})", evidence=evidence)


class SecretsGuard(Middleware):
    """Masks credentials and keys (provider API keys, bearer tokens, cloud and chat tokens)
    in tool output, before the model reads them, and in the final answer, before it
    leaves."""

    guard_places = frozenset({"tool_output", "output"})
    guard_timeout = None
    name = "secrets"

    def __init__(self, *, enabled: bool = True,
                 mask: Callable[[str], str] = redact_text) -> None:
        self.enabled = _enabled(enabled, "SecretsGuard.enabled")
        if not callable(mask):
            raise ConfigError("SecretsGuard.mask", "must be a function of a string")
        self._mask = mask

    @classmethod
    def off(cls) -> SecretsGuard:
        return cls(enabled=False)

    async def check(self, inp: GuardInput) -> GuardDecision | None:
        if not self.enabled:
            return None
        masked = self._mask(inp.text)
        if masked == inp.text:
            return None
        return GuardDecision.redact(masked, "a credential was masked",
                                    evidence={"masked": True})


def default_guards() -> list[Middleware]:
    """Fresh instances of keel's default guards, in order: size limits, injection detection,
    the personal-data and secrets policy (:class:`~keel.guard.DataGuard` with the default
    :class:`~keel.guard.DataPolicy`), taint gating, and untrusted content delimited."""
    from keel.guard._data_guard import DataGuard

    return [LimitsGuard(), InjectionGuard(), DataGuard(), TaintGuard(), UntrustedContent()]
