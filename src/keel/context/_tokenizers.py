"""Tokenizers by name: exact BPE counts from the encodings keel ships, and estimates.

Exact counts use ``tiktoken``'s BPE with OpenAI's ``cl100k_base`` and ``o200k_base`` rank files,
which keel ships gzipped in ``keel/context/data`` (hash-checked at load, see its README). The
encodings are built directly from those files with :class:`tiktoken.Encoding`; keel never
calls ``tiktoken.get_encoding``, so no count can trigger a download, whatever the cache or
network state.

Known names (``providers.json`` names one per model; :func:`get_tokenizer` resolves them):

================== =========================================================================
``o200k_base``      exact: gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3, o4 families
``cl100k_base``     exact: gpt-4, gpt-4-turbo, gpt-3.5-turbo
``claude_estimate`` the o200k count x 1.2 (Anthropic's tokenizer is not published; public
                    comparisons of Claude 3.5 with gpt-4o put Claude's counts 16% (prose)
                    to 30% (code) higher; newer Claude tokenizers may differ, which the
                    calibration from reported usage absorbs)
``estimate``        the generic estimate for any other model (local servers, unknown ids):
                    the cl100k count x 1.1 (Llama 3 and Qwen vocabularies count close to
                    cl100k, 32k-vocabulary models somewhat higher); unlike characters / 4 it
                    does not under-count CJK text or code
``chars``           characters / 4: the cheapest count, for callers that need no accuracy
================== =========================================================================

Estimates are corrected at run time from the usage providers report (:mod:`._calibration`).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import math
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

import tiktoken

from keel.core import ConfigError, UserError

#: Texts shorter than this are counted directly: caching them costs more than counting.
_CACHE_MIN_CHARS = 48
#: Texts (and messages) longer than this are never cached: one would crowd out thousands
#: of small ones, and a text that long is rarely counted twice.
CACHE_MAX_CHARS = 256_000


class Tokenizer(Protocol):
    """Counts the tokens of a text for one model family."""

    name: str

    def count(self, text: str) -> int: ...


@dataclass(frozen=True, slots=True)
class _EncodingSpec:
    file: str
    sha256: str
    pat_str: str
    special_tokens: dict[str, int]


# The split patterns and special tokens are tiktoken's own (tiktoken_ext/openai_public.py);
# a test checks that they still are.
_O200K_PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
_CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++"""
    r"""[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")

ENCODINGS: dict[str, _EncodingSpec] = {
    "cl100k_base": _EncodingSpec(
        file="cl100k_base.tiktoken.gz",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=_CL100K_PAT,
        special_tokens={"<|endoftext|>": 100257, "<|fim_prefix|>": 100258,
                        "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260,
                        "<|endofprompt|>": 100276}),
    "o200k_base": _EncodingSpec(
        file="o200k_base.tiktoken.gz",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str=_O200K_PAT,
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018}),
}

_LOAD_LOCK = threading.Lock()
_LOADED: dict[str, tiktoken.Encoding] = {}


def load_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding ``name`` built from the file keel ships (loaded once, ~0.3 s).

    Raises :class:`ConfigError` for a name keel does not ship, and when the shipped file does
    not hash to OpenAI's published digest (a damaged install: reinstall keel-agents)."""
    encoding = _LOADED.get(name)
    if encoding is not None:
        return encoding
    spec = ENCODINGS.get(name)
    if spec is None:
        raise ConfigError("tokenizer", f"no shipped BPE encoding {name!r}; keel ships "
                                       f"{', '.join(sorted(ENCODINGS))}")
    with _LOAD_LOCK:
        encoding = _LOADED.get(name)
        if encoding is None:
            encoding = _build(name, spec)
            _LOADED[name] = encoding
    return encoding


def _build(name: str, spec: _EncodingSpec) -> tiktoken.Encoding:
    packed = resources.files("keel.context").joinpath("data").joinpath(spec.file).read_bytes()
    raw = gzip.decompress(packed)
    if hashlib.sha256(raw).hexdigest() != spec.sha256:
        raise ConfigError("tokenizer", f"the shipped {name} file is damaged (its SHA-256 is "
                                       f"not OpenAI's); reinstall keel-agents")
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(name, pat_str=spec.pat_str, mergeable_ranks=ranks,
                             special_tokens=spec.special_tokens)


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise UserError(f"token counting takes a str, got {type(text).__name__}; render the "
                        f"value to text first (e.g. json.dumps)")
    return text


class CountCache:
    """A bounded, thread-safe LRU of token counts, limited by entries and by the characters
    the keys hold (so a few huge texts cannot pin memory)."""

    def __init__(self, *, max_entries: int = 8192, max_chars: int = 4_000_000) -> None:
        self._data: OrderedDict[Hashable, tuple[int, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._chars = 0
        self.max_entries = max_entries
        self.max_chars = max_chars

    def get(self, key: Hashable) -> int | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            self._data.move_to_end(key)
            return hit[0]

    def put(self, key: Hashable, count: int, chars: int) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._chars -= old[1]
            self._data[key] = (count, chars)
            self._chars += chars
            while self._data and (len(self._data) > self.max_entries
                                  or self._chars > self.max_chars):
                _, (_, dropped) = self._data.popitem(last=False)
                self._chars -= dropped

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._chars = 0

    def __len__(self) -> int:
        return len(self._data)


class CachingTokenizer(ABC):
    """Base of keel's tokenizers whose counts are worth caching: repeated texts (and, in
    :func:`keel.context.message_tokens`, repeated immutable messages) are counted once.

    Subclasses implement :meth:`_count` and must not change what it returns after
    construction (the caches would go stale)."""

    name: str
    exact: bool = False

    def __init__(self) -> None:
        #: Counts of texts (keyed by the text; at most 16k texts, ~4M characters held).
        self.text_cache = CountCache(max_entries=16_384, max_chars=4_000_000)
        #: Counts of whole messages (keyed by the frozen, hashable Message value). Sized so a
        #: conversation filling a 1M-token window (~4M characters) stays in it with room to
        #: spare: a cache smaller than the conversation recounted on every request would
        #: miss on every message (LRU under a cyclic scan). The texts it holds are mostly the
        #: same str objects the conversation and the text cache hold.
        self.message_cache = CountCache(max_entries=32_768, max_chars=16_000_000)

    def count(self, text: str) -> int:
        """Tokens ``text`` takes (a :class:`UserError` when it is not a str)."""
        _check_text(text)
        size = len(text)
        if size < _CACHE_MIN_CHARS or size > CACHE_MAX_CHARS:
            return self._count(text)
        hit = self.text_cache.get(text)
        if hit is not None:
            return hit
        count = self._count(text)
        self.text_cache.put(text, count, size)
        return count

    @abstractmethod
    def _count(self, text: str) -> int:
        """Count ``text`` (already checked to be a str)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class BPETokenizer(CachingTokenizer):
    """Exact counts with one of the shipped BPE encodings (``cl100k_base``, ``o200k_base``).

    Special-token text (``<|endoftext|>``) in the input counts as the ordinary text it is,
    as it does in a chat request; nothing raises on it."""

    exact = True

    def __init__(self, encoding: str) -> None:
        if encoding not in ENCODINGS:
            raise ConfigError("tokenizer", f"no shipped BPE encoding {encoding!r}; keel ships "
                                           f"{', '.join(sorted(ENCODINGS))}")
        super().__init__()
        self.name = encoding

    @property
    def encoding(self) -> tiktoken.Encoding:
        """The tiktoken encoding (for callers that need token ids, e.g. to cut a text at a
        token boundary)."""
        return load_encoding(self.name)

    def _count(self, text: str) -> int:
        return len(load_encoding(self.name).encode_ordinary(text))


class ScaledTokenizer(CachingTokenizer):
    """An estimate: another tokenizer's count times ``factor``, rounded up (for model families
    whose tokenizer is not published but counts in proportion to a known one)."""

    def __init__(self, base: CachingTokenizer, factor: float, *, name: str) -> None:
        if not isinstance(factor, int | float) or not math.isfinite(factor) or factor <= 0:
            raise ConfigError("factor", f"must be a positive number, got {factor!r}")
        super().__init__()
        self.base = base
        self.factor = float(factor)
        self.name = name

    def count(self, text: str) -> int:
        # The base caches the text; scaling is cheaper than a second cache lookup.
        return self._count(text)

    def _count(self, text: str) -> int:
        return math.ceil(self.base.count(text) * self.factor)


class EstimateTokenizer:
    """Characters per token: the cheapest estimate (no encoding to load). It under-counts
    text that tokenizes densely (CJK, code, long numbers): prefer the ``estimate`` tokenizer
    (:func:`get_tokenizer`) where accuracy matters."""

    exact = False

    def __init__(self, chars_per_token: float = 4.0, *, name: str = "chars") -> None:
        if (not isinstance(chars_per_token, int | float) or not math.isfinite(chars_per_token)
                or chars_per_token <= 0):
            raise ConfigError("chars_per_token",
                              f"must be a positive number, got {chars_per_token!r}")
        self.name = name
        self.chars_per_token = float(chars_per_token)

    def count(self, text: str) -> int:
        """Tokens ``text`` takes, at ``chars_per_token`` (at least 1 for a non-empty text)."""
        _check_text(text)
        return max(1, round(len(text) / self.chars_per_token)) if text else 0

    def __repr__(self) -> str:
        return f"EstimateTokenizer({self.chars_per_token!r}, name={self.name!r})"


#: Anthropic's tokenizer over o200k (public comparisons: +16% prose, +21% maths, +30% code).
CLAUDE_FACTOR = 1.2
#: Unknown models over cl100k.
GENERIC_FACTOR = 1.1

_O200K = BPETokenizer("o200k_base")
_CL100K = BPETokenizer("cl100k_base")
_BUILTIN: dict[str, CachingTokenizer | EstimateTokenizer] = {
    "o200k_base": _O200K,
    "cl100k_base": _CL100K,
    "claude_estimate": ScaledTokenizer(_O200K, CLAUDE_FACTOR, name="claude_estimate"),
    "estimate": ScaledTokenizer(_CL100K, GENERIC_FACTOR, name="estimate"),
    "chars": EstimateTokenizer(),
}
_REGISTERED: dict[str, Tokenizer] = {}


def known_tokenizers() -> tuple[str, ...]:
    """The names :func:`get_tokenizer` resolves: keel's own, then registered ones."""
    return (*_BUILTIN, *sorted(_REGISTERED))


def get_tokenizer(name: str) -> Tokenizer:
    """The tokenizer called ``name``; a :class:`ConfigError` naming the known ones otherwise."""
    found: Tokenizer | None = None
    if isinstance(name, str):
        found = _BUILTIN.get(name) or _REGISTERED.get(name)
    if found is None:
        raise ConfigError("tokenizer", f"unknown tokenizer {name!r}; known tokenizers: "
                                       f"{', '.join(known_tokenizers())}")
    return found


def register_tokenizer(tokenizer: Tokenizer) -> None:
    """Make ``tokenizer`` (anything with a ``name`` and a ``count(text) -> int``) known by its
    name, so ``providers.json`` rows and :func:`keel.models.register_model_info` can name it
    (e.g. a Hugging Face tokenizer for a local model). keel's own names cannot be replaced."""
    name = getattr(tokenizer, "name", None)
    if not isinstance(name, str) or not name or not callable(getattr(tokenizer, "count", None)):
        raise ConfigError("tokenizer", "a tokenizer needs a non-empty str `name` and a "
                                       "`count(text) -> int` method")
    if name in _BUILTIN:
        raise ConfigError("tokenizer", f"{name!r} is one of keel's own tokenizers; register "
                                       f"yours under another name")
    _REGISTERED[name] = tokenizer
