"""Correcting token counts from the usage providers report.

keel's count of a request is exact for the OpenAI families with a shipped encoding and an
estimate elsewhere; even an exact count misses what the provider adds around it (the chat
template, how tool specs are rendered, Anthropic's tool-use system prompt). After each model
response the provider says how many input tokens the request really took; a
:class:`TokenCalibration` keeps, per model, a smoothed ratio of reported to counted tokens and
scales later counts by it.

The ratio is deliberately simple and bounded: each observation's ratio is clipped to
``bounds`` (default 0.5 to 2.0) before it enters an exponential moving average, so one absurd
report (a cached prompt billed at zero, a provider bug) moves the ratio by at most
``smoothing`` of the clipped distance. A fixed per-request overhead ends up in the ratio too:
learned on small requests it over-counts larger ones a little, which errs on the side of
staying inside the context window.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

from keel.core import ConfigError, UserError
from keel.models import Model


@dataclass(frozen=True, slots=True, kw_only=True)
class CalibrationState:
    """What a :class:`TokenCalibration` has learned about one model."""

    #: Reported input tokens per counted token (1.0 before any observation).
    ratio: float
    #: How many observations formed it.
    observations: int


#: Model ids longer than this are keyed by their digest (hostile ids cannot pin memory).
_MAX_KEY_CHARS = 256


def _model_key(model: str | Model) -> str:
    name = model.name if isinstance(model, Model) else model
    if not isinstance(name, str):
        raise UserError(f"calibration is per model: pass a model id str or a Model, "
                        f"got {type(model).__name__}")
    if len(name) > _MAX_KEY_CHARS:
        return "sha256:" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    return name


def _tokens(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{what} must be an int token count, got {type(value).__name__}")
    return value


class TokenCalibration:
    """Per-model correction of token counts from the provider's reported usage.

    Feed it with :meth:`observe` after each model response (the count keel made of the
    request, and ``usage.input_tokens`` as reported); read corrected counts with
    :meth:`adjust`. Thread-safe; remembers at most ``max_models`` models (least recently
    observed forgotten first), so hostile or endless model ids cannot grow it without bound.
    """

    def __init__(self, *, smoothing: float = 0.2, bounds: tuple[float, float] = (0.5, 2.0),
                 max_models: int = 1024) -> None:
        if not isinstance(smoothing, int | float) or not 0 < smoothing <= 1:
            raise ConfigError("smoothing", f"must be in (0, 1], got {smoothing!r}")
        low, high = bounds
        if not (isinstance(low, int | float) and isinstance(high, int | float)
                and math.isfinite(low) and math.isfinite(high) and 0 < low <= 1 <= high):
            raise ConfigError("bounds", f"must be (low, high) with 0 < low <= 1 <= high, "
                                        f"got {bounds!r}")
        if not isinstance(max_models, int) or max_models < 1:
            raise ConfigError("max_models", f"must be a positive int, got {max_models!r}")
        self.smoothing = float(smoothing)
        self.bounds = (float(low), float(high))
        self.max_models = max_models
        self._states: OrderedDict[str, CalibrationState] = OrderedDict()
        self._lock = threading.Lock()

    def observe(self, model: str | Model, estimated: int, reported: int) -> float:
        """Record that a request keel counted at ``estimated`` tokens was reported at
        ``reported`` input tokens; returns the model's ratio afterwards.

        Observations that teach nothing (a count or report of zero or less, as scripted
        models and some servers report) leave the ratio as it was."""
        key = _model_key(model)
        estimated = _tokens(estimated, "estimated")
        reported = _tokens(reported, "reported")
        low, high = self.bounds
        with self._lock:
            state = self._states.get(key)
            if estimated <= 0 or reported <= 0:
                return state.ratio if state is not None else 1.0
            sample = min(high, max(low, reported / estimated))
            if state is None:
                ratio, seen = sample, 1
            else:
                ratio = state.ratio + self.smoothing * (sample - state.ratio)
                seen = state.observations + 1
            self._states[key] = CalibrationState(ratio=ratio, observations=seen)
            self._states.move_to_end(key)
            while len(self._states) > self.max_models:
                self._states.popitem(last=False)
            return ratio

    def ratio(self, model: str | Model) -> float:
        """The model's current ratio of reported to counted tokens (1.0 when unobserved)."""
        state = self._states.get(_model_key(model))
        return state.ratio if state is not None else 1.0

    def state(self, model: str | Model) -> CalibrationState | None:
        """What was learned about ``model`` (None before its first useful observation)."""
        return self._states.get(_model_key(model))

    def adjust(self, model: str | Model, estimate: int) -> int:
        """``estimate`` corrected for ``model``: scaled by its ratio, rounded up."""
        estimate = _tokens(estimate, "estimate")
        if estimate <= 0:
            return estimate
        return math.ceil(estimate * self.ratio(model))

    def reset(self, model: str | Model | None = None) -> None:
        """Forget one model (or, with no argument, all of them)."""
        with self._lock:
            if model is None:
                self._states.clear()
            else:
                self._states.pop(_model_key(model), None)


_DEFAULT = TokenCalibration()


def default_calibration() -> TokenCalibration:
    """The process-wide calibration the default history policy feeds and reads."""
    return _DEFAULT


def observe_usage(model: str | Model, estimated: int, reported: int, *,
                  calibration: TokenCalibration | None = None) -> float:
    """Feed one (counted, reported) pair to ``calibration`` (the process-wide default when
    None); returns the model's ratio afterwards."""
    return (calibration or _DEFAULT).observe(model, estimated, reported)
