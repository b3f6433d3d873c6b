"""A small trained classifier of prompt-injection and jailbreak text, with its weights inside keel.

The model is a logistic regression over hashed word unigrams and bigrams of the lower-cased
text: each feature is ``zlib.crc32`` of the token (or of ``"first second"``) modulo
``2**bits``, a window's features are its distinct feature ids, and its score is
``bias + scale * sum(q[f]) / sqrt(n)`` with ``q`` the int8-quantised weights. A text longer
than one window (``WINDOW`` tokens) is read in windows that overlap by half, and its
probability is that of its most suspicious window, so an instruction buried in a long tool
output is not diluted by the document around it.

Inference is pure Python (no numpy, no model download): a few microseconds for a short
message. The weights were trained by ``scripts/train_injection_classifier.py`` on public
corpora whose names, versions and licences are in ``keel/guard/data/README.md``.
"""

from __future__ import annotations

import itertools
import math
import re
import struct
import zlib
from array import array
from dataclasses import dataclass
from importlib import resources

from keel.core import ConfigError, UserError

__all__ = ["WINDOW", "ClassifierHit", "InjectionClassifier", "features", "load_classifier"]

WINDOW = 48  #: tokens per window; windows overlap by half
MAGIC = b"KEELINJ1"
WEIGHTS_FILE = "injection_classifier.bin"
_HEADER = struct.Struct("<8sIff")  # magic, bits, bias, scale
_TOKEN = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True, slots=True)
class ClassifierHit:
    """The most suspicious window: its probability and its character span in the text."""

    probability: float
    start: int
    end: int


def _token_ids(tokens: list[str], mask: int) -> list[int]:
    crc = zlib.crc32
    return [crc(t.encode()) & mask for t in tokens]


def features(tokens: list[str], mask: int) -> list[int]:
    """The hashed feature ids of one window of tokens: unigrams, then bigrams (may repeat)."""
    crc = zlib.crc32
    ids = [crc(t.encode()) & mask for t in tokens]
    ids.extend(crc(f"{a} {b}".encode()) & mask for a, b in itertools.pairwise(tokens))
    return ids


def windows(n_tokens: int) -> list[tuple[int, int]]:
    """Token index ranges ``[lo, hi)`` of the windows read for a text of ``n_tokens``."""
    if n_tokens <= WINDOW:
        return [(0, n_tokens)]
    step = WINDOW // 2
    spans = [(lo, lo + WINDOW) for lo in range(0, n_tokens - WINDOW + 1, step)]
    if spans[-1][1] < n_tokens:
        spans.append((n_tokens - WINDOW, n_tokens))
    return spans


class InjectionClassifier:
    """Linear model over hashed n-grams; ``probability(text)`` is in [0, 1]."""

    def __init__(self, *, bits: int, bias: float, scale: float, weights: array[int]) -> None:
        if not 8 <= bits <= 24 or len(weights) != 1 << bits:
            raise ConfigError("InjectionClassifier.weights", f"expected 2**{bits} weights")
        self.bits = bits
        self.mask = (1 << bits) - 1
        self.bias = bias
        self.scale = scale
        self._w = weights

    @classmethod
    def from_bytes(cls, data: bytes) -> InjectionClassifier:
        if len(data) < _HEADER.size or data[:8] != MAGIC:
            raise ConfigError("InjectionClassifier", "not a keel injection-classifier file")
        _, bits, bias, scale = _HEADER.unpack_from(data)
        weights = array("b")
        weights.frombytes(data[_HEADER.size :])
        return cls(bits=bits, bias=bias, scale=scale, weights=weights)

    def to_bytes(self) -> bytes:
        return _HEADER.pack(MAGIC, self.bits, self.bias, self.scale) + self._w.tobytes()

    def _window_score(self, ids: set[int]) -> float:
        if not ids:
            return self.bias
        w = self._w
        return self.bias + self.scale * sum(w[i] for i in ids) / math.sqrt(len(ids))

    def best_window(self, text: str) -> ClassifierHit:
        """The probability of the most suspicious window of ``text`` and where it is."""
        if not isinstance(text, str):
            raise UserError(f"InjectionClassifier takes a str, got {type(text).__name__}")
        low = text.lower()
        tokens = _TOKEN.findall(low)
        if len(tokens) <= WINDOW:  # one window: the span is the whole text
            ids = set(features(tokens, self.mask))
            return ClassifierHit(_sigmoid(self._window_score(ids)), 0, len(text))
        matches = list(_TOKEN.finditer(low))
        mask = self.mask
        uni = _token_ids(tokens, mask)
        crc = zlib.crc32
        bi = [crc(f"{a} {b}".encode()) & mask for a, b in itertools.pairwise(tokens)]
        best, span = -math.inf, (0, 0)
        for lo, hi in windows(len(tokens)):
            ids = {*uni[lo:hi], *bi[lo : max(lo, hi - 1)]}
            score = self._window_score(ids)
            if score > best:
                best, span = score, (lo, hi)
        start = matches[span[0]].start()
        end = matches[span[1] - 1].end()
        return ClassifierHit(probability=_sigmoid(best), start=start, end=end)

    def probability(self, text: str) -> float:
        return self.best_window(text).probability


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


_LOADED: list[InjectionClassifier] = []


def load_classifier() -> InjectionClassifier:
    """The classifier shipped with keel (``keel/guard/data/injection_classifier.bin``), cached."""
    if not _LOADED:
        data = resources.files("keel.guard").joinpath("data", WEIGHTS_FILE).read_bytes()
        _LOADED.append(InjectionClassifier.from_bytes(data))
    return _LOADED[0]
