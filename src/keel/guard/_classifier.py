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


_CACHE_LIMIT = 200_000  # cached feature ids (words and word pairs); the cache is then reset
_IDS: dict[int, dict[str | tuple[str, str], int]] = {}  # by mask


def _unigram_ids(tokens: list[str], mask: int) -> list[int]:
    ids = _IDS.setdefault(mask, {})
    out = []
    for token in tokens:
        value = ids.get(token)
        if value is None:
            value = ids[token] = zlib.crc32(token.encode()) & mask
        out.append(value)
    return out


def _bigram_ids(tokens: list[str], mask: int) -> list[int]:
    ids = _IDS.setdefault(mask, {})
    out = []
    for pair in itertools.pairwise(tokens):
        value = ids.get(pair)
        if value is None:
            value = ids[pair] = zlib.crc32(f"{pair[0]} {pair[1]}".encode()) & mask
        out.append(value)
    if len(ids) > _CACHE_LIMIT:
        ids.clear()
    return out


def features(tokens: list[str], mask: int) -> list[int]:
    """The hashed feature ids of one window of tokens: unigrams, then bigrams (may repeat).

    A feature's id is ``zlib.crc32`` of the word (or of ``"first second"``) ``& mask``; ids
    are cached per process, which changes nothing but the time.
    """
    return _unigram_ids(tokens, mask) + _bigram_ids(tokens, mask)


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
        return self.bias + self.scale * sum(map(self._w.__getitem__, ids)) / math.sqrt(len(ids))

    def best_window(self, text: str) -> ClassifierHit:
        """The probability of the most suspicious window of ``text`` and where it is."""
        if not isinstance(text, str):
            raise UserError(f"InjectionClassifier takes a str, got {type(text).__name__}")
        low = text.lower()
        tokens = _TOKEN.findall(low)
        if len(tokens) <= WINDOW:  # one window: the span is the whole text
            ids = set(features(tokens, self.mask))
            return ClassifierHit(_sigmoid(self._window_score(ids)), 0, len(text))
        uni = _unigram_ids(tokens, self.mask)
        bi = _bigram_ids(tokens, self.mask)
        best, span = -math.inf, (0, 0)
        for lo, hi in windows(len(tokens)):
            ids = {*uni[lo:hi], *bi[lo : max(lo, hi - 1)]}
            score = self._window_score(ids)
            if score > best:
                best, span = score, (lo, hi)
        matches = list(itertools.islice(_TOKEN.finditer(low), span[1]))
        start = matches[span[0]].start()
        end = matches[-1].end()
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
