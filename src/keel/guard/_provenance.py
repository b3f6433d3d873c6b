"""Where a tool call's argument values came from: trusted input or untrusted tool output.

Three kinds of content reach the model (see ../shared/ARCHITECTURE.md, "Trust"): the
developer's instructions and the user's messages are *trusted*; everything a tool returns is
*untrusted*. :func:`provenance` looks each value of a call's arguments up in the conversation:

* ``trusted``: the value appears in the instructions or in a user's message (a person's note
  on an escalation counts: it is a user message);
* ``tool``: it does not, and it was first seen in the output of an earlier tool call (its
  name and call id are the evidence);
* ``model``: the model wrote it first (in its text or in an earlier call's arguments, which a
  tool may then have echoed), or nobody did (the model composed it).

What is looked up: every number and every identifier-like string (no spaces) in the
arguments, and inside free text the values an attacker plants (e-mail addresses, URLs and
host names, IBAN-like and card-like numbers, long digit runs, amounts). Free text as a whole
is not looked up: common phrases ("the report") occur everywhere. Matching is exact after
case folding (numbers at digit boundaries), so a value the model reformatted is ``model``,
not ``tool``: provenance is evidence, not proof. A tool output's encoded payloads (base64,
hex, percent-encoding ..., as :func:`keel.guard.normalize` decodes them) are searched too: a
value an injection hid that way, which the model decoded, is still the tool's. Tiny values
(strings under 3 characters, whole numbers under 100) are too common to attribute and are
not looked up.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from keel.core import Message, TextPart, ToolCallPart, ToolResultPart
from keel.guard._normalize import normalize

Origin: TypeAlias = Literal["trusted", "tool", "model"]
_MIN_CHARS = 3
_MIN_NUMBER = 100
_WHOLE_MAX = 200  # a longer string is looked up by the values inside it, not whole
_MAX_VALUES = 256  # arguments with more values than this are looked up up to it

_TOKEN = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"                      # e-mail
    r"|https?://[^\s<>\"')\]]+"                           # URL
    r"|\b(?:[a-z0-9-]+\.)+(?:com|net|org|io|co|ru|cn|xyz|info|biz|dev|app|[a-z]{2})\b"  # host
    r"|\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"  # IBAN-like
    r"|\b\d[\d ,.-]{4,}\d\b"                              # long digit runs, cards, phones
    r"|\b\d+(?:\.\d+)?\b",                                # numbers
    re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Source:
    """One tool output a value was seen in."""

    tool: str
    call_id: str

    def to_dict(self) -> dict[str, str]:
        return {"tool": self.tool, "call_id": self.call_id}


@dataclass(frozen=True, slots=True)
class ValueOrigin:
    """Where one value of an argument came from. ``path`` names the argument (``to``,
    ``items[0].iban``); ``value`` is the value looked up (the whole argument, or a value
    found inside it)."""

    path: str
    value: str
    origin: Origin
    sources: tuple[Source, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"argument": self.path, "value": self.value,
                                "origin": self.origin}
        if self.sources:
            data["sources"] = [s.to_dict() for s in self.sources]
        return data


class Conversation:
    """The texts of a conversation, case-folded once: the trusted ones (instructions, the
    user's messages) and, in order, what the model wrote (its text and its calls'
    arguments) and what tools returned.

    While what was said is short (``scan_limit`` characters), a look-up is one C-level search
    of it, kept joined. Past that, a look-up does not read every text said: an index, built
    as look-ups come, files each text under its words (the runs of ``\\w``). A value's
    occurrences lie inside words of the texts that hold it: a word it has inside (between
    other characters) is a whole word there, and a word at its edge is part of one. So the
    texts filed under such a word are the only ones that can hold the value, and only they
    are searched (the vocabulary, not the history, is searched for the words a piece is part
    of)."""

    __slots__ = ("_files", "_indexed", "_joined", "_last", "_seen", "_size", "_vocabulary",
                 "said", "trusted")
    #: Up to this many characters said, look-ups search them all (cheaper than an index).
    scan_limit = 16_384

    def __init__(self, history: Sequence[Message] = ()) -> None:
        self.trusted = ""
        #: (source or None for the model's own words, folded text), in conversation order
        self.said: list[tuple[Source | None, str]] = []
        self._seen = 0
        self._last: Message | None = None
        #: word -> the indexes in ``said`` of the texts with that word, ascending
        self._files: dict[str, list[int]] = {}
        self._vocabulary = _Joined()  # every word of _files, once
        self._indexed = 0  # the texts of ``said`` filed so far (filed when a look-up comes)
        self._size = 0  # characters said
        self._joined: _Joined | None = _Joined()  # every text said, while _size <= limit
        self.extend(history)

    def follows(self, history: Sequence[Message]) -> bool:
        """Whether ``history`` continues what this conversation has read (the history of a
        run only grows), so :meth:`extend` may read just the new messages."""
        n = self._seen
        return len(history) >= n and (n == 0 or history[n - 1] is self._last)

    def extend(self, history: Sequence[Message]) -> Conversation:
        """Read the messages of ``history`` not read yet (see :meth:`follows`)."""
        trusted: list[str] = []
        said = self.said
        start = len(said)
        for message in history[self._seen:]:
            if message.role in ("system", "user"):
                trusted.extend(p.text.casefold() for p in message.parts
                               if isinstance(p, TextPart))
            elif message.role == "tool":
                said.extend((Source(p.tool_name, p.call_id), _readable(p.content).casefold())
                            for p in message.parts if isinstance(p, ToolResultPart)
                            and not p.is_error)
            else:
                said.extend((None, _words(p).casefold()) for p in message.parts)
        joined = self._joined
        for i in range(start, len(said)):
            text = said[i][1]
            self._size += len(text) + 1
            if joined is not None:
                if self._size > self.scan_limit:
                    self._joined = joined = None  # the index takes over
                else:
                    joined.add(text)
        if trusted:
            self.trusted = "\n".join([self.trusted, *trusted]) if self.trusted \
                else "\n".join(trusted)
        self._seen = len(history)
        self._last = history[-1] if history else None
        return self

    def read_tools(self) -> bool:
        """Whether any tool output has been read (an error observation does not count)."""
        return any(src is not None for src, _ in self.said)

    def origin(self, path: str, value: str) -> ValueOrigin:
        """``trusted`` if the instructions or a user's message hold ``value``; else where it
        was first seen: a tool's output (``tool``, with every output that holds it) or the
        model's own words, such as an earlier call's arguments that a tool then echoed
        (``model``)."""
        folded = value.casefold()
        if _found(folded, self.trusted):
            return ValueOrigin(path, value, "trusted")
        said = self.said
        hits: Iterator[int]
        if "\x00" in folded:  # could span two joined texts: read them one by one
            hits = (i for i, (_, text) in enumerate(said) if _found(folded, text))
        elif self._joined is not None:
            hits = self._joined.holding(folded, _found_at)
        else:
            hits = (i for i in self._candidates(folded) if _found(folded, said[i][1]))
        first = next(hits, None)
        if first is None or said[first][0] is None:
            return ValueOrigin(path, value, "model")
        sources = tuple(src for src in (said[i][0] for i in (first, *hits))
                        if src is not None)
        return ValueOrigin(path, value, "tool", sources)

    def _index(self) -> None:
        """File the texts said since the last look-up under their words."""
        files, said, vocabulary = self._files, self.said, self._vocabulary
        for i in range(self._indexed, len(said)):
            for word in set(_WORD.findall(said[i][1])):
                filed = files.get(word)
                if filed is None:
                    files[word] = [i]
                    vocabulary.add(word)
                else:
                    filed.append(i)
        self._indexed = len(said)

    def _candidates(self, value: str) -> Sequence[int]:
        """The indexes, ascending, of every text that may hold ``value`` (each text that
        does is among them)."""
        if self._indexed < len(self.said):
            self._index()
        pieces = list(_WORD.finditer(value))
        if not pieces:
            return range(len(self.said))  # no word to look up: every text
        inner = [m.group() for m in pieces if m.start() > 0 and m.end() < len(value)]
        files = self._files
        if inner:  # a whole word wherever the value occurs
            return min((files.get(word, ()) for word in inner), key=len)
        piece = max((m.group() for m in pieces), key=len)  # part of a word there
        words = self._vocabulary.items
        filed = [files[words[i]] for i in self._vocabulary.holding(piece)]
        if len(filed) == 1:
            return filed[0]
        return sorted({i for indexes in filed for i in indexes})


class _Joined:
    """Strings kept joined by NUL in a few blocks, merged as a binary counter merges (each
    string is copied O(log n) times in all), for C-level searches over all of them."""

    __slots__ = ("_blocks", "items")

    def __init__(self) -> None:
        self.items: list[str] = []
        #: (joined, index of its first string, offset of each string in the join)
        self._blocks: list[tuple[str, int, list[int]]] = []

    def add(self, item: str) -> None:
        blocks = self._blocks
        blocks.append((item, len(self.items), [0]))
        self.items.append(item)
        while len(blocks) > 1 and len(blocks[-2][2]) <= len(blocks[-1][2]):
            (last, _, last_at), (before, first, at) = blocks.pop(), blocks.pop()
            shift = len(before) + 1
            blocks.append((before + "\x00" + last, first, at + [o + shift for o in last_at]))

    def holding(self, part: str,
                counts: Callable[[str, str, int], bool] | None = None) -> Iterator[int]:
        """The index of each string that holds ``part`` (which has no NUL), ascending; with
        ``counts(part, joined, start)``, only occurrences it accepts count (it reads a NUL
        as the edge of a string)."""
        for block, first, at in self._blocks:
            start = block.find(part)
            while start != -1:
                if counts is not None and not counts(part, block, start):
                    start = block.find(part, start + 1)
                    continue
                j = bisect.bisect_right(at, start) - 1
                yield first + j
                if j + 1 == len(at):
                    break
                start = block.find(part, at[j + 1])  # on to the next string


_WORD = re.compile(r"\w+")


#: Runs that may be encoded payloads (base64, hex, percent-encoding): only a tool output
#: with one is decoded, so plain outputs cost one quick scan (about 0.15 ms for 10 KB).
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{24}")
_PERCENT_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2}){4}")
_HEX_RUN = re.compile(r"(?:\\x[0-9A-Fa-f]{2}){4}")


_RUN_TABLE = bytes(ord("x") if chr(c).isascii() and (chr(c).isalnum() or chr(c) in "+/_-")
                   else ord(" ") for c in range(256))


def _base64_run(content: str) -> bool:
    """``_BASE64_RUN.search(content)``; plain ASCII by a byte table and a substring search
    (the regex would try a run at every position)."""
    if content.isascii():
        return b"x" * 24 in content.encode("ascii").translate(_RUN_TABLE)
    return _BASE64_RUN.search(content) is not None


def _readable(content: str) -> str:
    """A tool output as a model can read it: the text, and the payloads encoded in it
    decoded (a model decodes base64 it is told to; a value hidden that way is still the
    tool's). Plain text is returned as it is."""
    if not (_base64_run(content)
            or ("%" in content and _PERCENT_RUN.search(content))
            or ("\\x" in content and _HEX_RUN.search(content))):
        return content
    decoded = normalize(content).decoded
    return "\n".join([content, *(d.text for d in decoded)])


_ENTITY = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"                    # e-mail
    r"|(?:https?|ftp)://\S+"                            # URL
    r"|(?:[a-z0-9-]+\.)+(?:com|net|org|io|co|info|biz|xyz|ru|cn|app|dev|example|online"
    r"|site|top|link|click)(?:/\S*)?"                    # host name (common endings)
    r"|[A-Z]{2}\d{2}[A-Z0-9]{11,30}"                     # IBAN (without spaces)
    r"|[A-Z]{2}\d{2}(?: [A-Z0-9]{4}){3,7}(?: [A-Z0-9]{1,4})?"  # IBAN in groups
    r"|\+?\d[\d -]{6,}\d",                               # a long number: account, card, phone
    re.IGNORECASE)


def is_entity(value: str) -> bool:
    """Whether ``value`` is, as a whole, something an attacker plants: an e-mail address, a
    URL or host name, an IBAN or a long number (8 or more digits)."""
    text = value.strip()
    if not text or _ENTITY.fullmatch(text) is None:
        return False
    digits = sum(c.isdigit() for c in text)
    return not text.replace(" ", "").replace("-", "").lstrip("+").isdigit() or digits >= 8


def _words(part: object) -> str:
    """What the model wrote in one part: its text, or a call's arguments as plain text (JSON
    escapes such as ``\\u00e9`` decoded, so values compare as written)."""
    if isinstance(part, TextPart):
        return part.text
    if isinstance(part, ToolCallPart):
        try:
            return json.dumps(json.loads(part.arguments or "{}"), ensure_ascii=False)
        except (ValueError, RecursionError):
            return part.arguments
    return ""


def provenance(arguments: Mapping[str, Any], history: Sequence[Message]) -> list[ValueOrigin]:
    """The origin of every value worth attributing in ``arguments`` (see the module doc)."""
    conversation = Conversation(history)
    return [conversation.origin(path, value) for path, value in values_of(arguments)]


def values_of(arguments: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``(path, value)`` for each value to look up, at most ``_MAX_VALUES``."""
    seen: set[tuple[str, str]] = set()
    for path, leaf in _leaves(arguments, ""):
        for value in _candidates(leaf):
            if (path, value) not in seen:
                seen.add((path, value))
                yield path, value
                if len(seen) >= _MAX_VALUES:
                    return


def _leaves(value: Any, path: str, depth: int = 0) -> Iterator[tuple[str, Any]]:
    if depth > 32:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key), depth + 1)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        yield path, value


def _candidates(leaf: str | float) -> Iterator[str]:
    if isinstance(leaf, int | float):
        if isinstance(leaf, float) and not math.isfinite(leaf):
            return
        if isinstance(leaf, float) and not leaf.is_integer():
            yield repr(leaf)
        elif abs(leaf) >= _MIN_NUMBER:
            yield str(int(leaf))
        return
    text = leaf.strip()
    if len(text) < _MIN_CHARS:
        return
    if len(text) <= _WHOLE_MAX and not any(c.isspace() for c in text):
        yield text  # an identifier-like value; free text is looked up by what is inside
    for match in _TOKEN.finditer(text[:20_000]):
        token = match.group(0).strip(" ,.-")
        if _worth(token):
            yield token


def _worth(token: str) -> bool:
    if len(token) < _MIN_CHARS:
        return False
    digits = token.replace(".", "", 1)
    if digits.isdigit():
        return "." in token or int(digits) >= _MIN_NUMBER
    return True


def _found(value: str, text: str) -> bool:
    """``value`` occurs in ``text``; a number only between non-digits."""
    if value[0].isdigit() or value[-1].isdigit():
        start = text.find(value)
        while start != -1:
            if _found_at(value, text, start):
                return True
            start = text.find(value, start + 1)
        return False
    return value in text


def _found_at(value: str, text: str, start: int) -> bool:
    """Whether the occurrence of ``value`` at ``start`` in ``text`` counts: a number only
    between non-digits (the start and the end of ``text``, and a NUL, are non-digits)."""
    if not (value[0].isdigit() or value[-1].isdigit()):
        return True
    end = start + len(value)
    before = text[start - 1] if start else " "
    after = text[end] if end < len(text) else " "
    return not (before.isdigit() or (value[0].isdigit() and before == ".")) \
        and not (after.isdigit() or (after == "." and end + 1 < len(text)
                                     and text[end + 1].isdigit()))
