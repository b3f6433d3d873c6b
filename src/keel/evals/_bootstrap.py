"""The paired bootstrap: a confidence interval of a mean difference, seeded so that the same
inputs always give the same interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from keel.evals._errors import EvalError

#: The most resamples a comparison takes (each costs one pass over the cases).
MAX_RESAMPLES = 100_000
#: Resample in chunks of at most this many values (resamples x cases), to bound memory.
_CHUNK_VALUES = 2_000_000


def check_resampling(resamples: object, confidence: object, seed: object) -> None:
    """Refuse resampling settings that cannot give a meaningful interval, naming the fix."""
    if isinstance(resamples, bool) or not isinstance(resamples, int) \
            or not 100 <= resamples <= MAX_RESAMPLES:
        raise EvalError(f"resamples={resamples!r}: give a whole number from 100 to "
                        f"{MAX_RESAMPLES:,} (2000 is the usual choice)")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) \
            or not math.isfinite(confidence) or not 0.5 <= confidence < 1:
        raise EvalError(f"confidence={confidence!r}: give a level from 0.5 up to (not "
                        "including) 1, such as 0.95")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise EvalError(f"seed={seed!r}: give a whole number >= 0 (the same seed gives the "
                        "same interval)")


def bootstrap_ci(values: Sequence[float], *, resamples: int, confidence: float, seed: int,
                 weights: Sequence[float] | None = None) -> tuple[float, float]:
    """The ``confidence`` percentile interval of the (``weights``-weighted) mean of
    ``values`` (per-case paired differences, or per-case scores) over ``resamples``
    resamples of the cases with replacement, drawn from a generator seeded with ``seed``.
    Needs at least one value."""
    data = np.asarray(values, dtype=np.float64)
    n = len(data)
    if n == 0:
        raise EvalError("a bootstrap needs at least one case")
    if np.all(data == data[0]):
        return float(data[0]), float(data[0])  # every resample has the same mean
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_VALUES // n)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        if w is None:
            means[start:start + size] = data[idx].mean(axis=1)
        else:
            picked = w[idx]
            means[start:start + size] = (data[idx] * picked).sum(axis=1) / picked.sum(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)
