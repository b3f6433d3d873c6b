"""Chunks: a document cut into passages of about ``chunk_tokens`` tokens on section,
paragraph and sentence boundaries, consecutive passages of a section sharing about
``overlap_tokens`` tokens.

Chunk ids are content-addressed: ``f"{doc_id}#{hash}"``, the hash (12 hex digits of
SHA-256) taken over the document title, the section path and the chunk's text. Re-adding an
unchanged document keeps every id; editing one paragraph changes the ids of the chunks whose
text changed (the one holding the paragraph and, where its length moved the boundaries, the
following chunks of the same section) and of no chunk in another section, because chunking
starts afresh at every heading. A cited id therefore always names the text that was cited."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from keel.patterns._rag_ingest import Document, plain_text

__all__ = ["Chunk", "chunk_document", "index_text"]

_ATX: Final = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_SETEXT: Final = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE: Final = re.compile(r"^ {0,3}(```|~~~)")
_PARAGRAPHS: Final = re.compile(r"\n[ \t]*\n\s*")
_SENTENCES: Final = re.compile(r"(?<=[.!?])\s+")
_LINK: Final = re.compile(r"!?\[([^\]\n]*)\]\([^)\n]*\)")


@dataclass(frozen=True, kw_only=True)
class Chunk:
    """A passage of a document: the unit that is indexed, retrieved and cited. ``id`` is
    ``f"{doc_id}#{hash}"`` (stable while the passage is unchanged); ``position`` its place
    in the document from 0; ``metadata`` the document's, plus ``section`` (the heading path,
    ``"Refunds > Card payments"``), ``kind`` and ``source`` where known."""

    id: str
    doc_id: str
    text: str
    title: str
    position: int
    metadata: Mapping[str, str]


def index_text(chunk: Chunk) -> str:
    """What is indexed for ``chunk``: its title, section and text, so a heading's words find
    the passages under it."""
    section = chunk.metadata.get("section", "")
    return "\n".join(part for part in (chunk.title, section, chunk.text) if part)


def _sections(text: str, headings: bool) -> list[tuple[str, str]]:
    """``(heading path, body)`` pairs; without headings, one pair with an empty path."""
    if not headings:
        return [("", text)]
    out: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []
    fenced = False

    def flush() -> None:
        if "".join(body).strip():
            out.append((" > ".join(title for _, title in path), "\n".join(body)))
        body.clear()

    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        atx = None if fenced else _ATX.match(line)
        setext = (None if fenced or not body or not body[-1].strip()
                  else _SETEXT.match(line))
        if atx is None and setext is None:
            body.append(line)
            continue
        if atx is not None:
            level, title = len(atx.group(1)), atx.group(2)
        else:
            level, title = (1 if line.strip().startswith("=") else 2), body.pop().strip()
        flush()
        path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, _LINK.sub(r"\1", title))]
    flush()
    return out


#: A text longer than ``limit * CHARS_PER_TOKEN`` characters is cut without being counted whole
#: (BPE on one enormous word takes quadratic time).
CHARS_PER_TOKEN: Final = 8


def _pieces(text: str, limit: int, count: Callable[[str], int]) -> list[tuple[str, int, str]]:
    """``text`` (one sentence) cut into ``(piece, tokens, glue)`` of at most ``limit`` tokens:
    whole if it fits, else by words, else (one enormous word) by characters; ``glue`` is what
    joined the piece to the one before (a space, or nothing inside a word)."""
    if len(text) <= limit * CHARS_PER_TOKEN:
        size = count(text)
        if size <= limit:
            return [(text, size, " ")]
    words = text.split()
    if len(words) > 1:
        return _by_words(words, limit, count)
    return _by_characters(text, limit, count)


def _by_words(words: list[str], limit: int, count: Callable[[str], int],
              ) -> list[tuple[str, int, str]]:
    """Words packed into pieces of at most ``limit`` tokens, each word counted once."""
    out: list[tuple[str, int, str]] = []
    sizes: dict[str, int] = {}
    current: list[str] = []
    total = 0

    def flush() -> None:
        piece = " ".join(current)
        size = count(piece)
        if size <= limit or len(current) == 1:  # one word was counted alone already
            out.append((piece, size, " "))
        else:  # the words' counts added up to less than the whole: halve
            half = len(current) // 2
            out.extend(_by_words(current[:half], limit, count))
            out.extend(_by_words(current[half:], limit, count))

    for word in words:
        size = sizes.get(word)
        if size is None:
            size = sizes[word] = (count(word) if len(word) <= limit * CHARS_PER_TOKEN
                                  else limit + 1)
        if current and (size > limit or total + size > limit):
            flush()
            current, total = [], 0
        if size > limit:
            out.extend(_by_characters(word, limit, count))
            continue
        current.append(word)
        total += size
    if current:
        flush()
    return out


def _by_characters(text: str, limit: int, count: Callable[[str], int],
                   ) -> list[tuple[str, int, str]]:
    """One enormous word cut into windows of ``3 * limit`` characters, or of ``limit`` (a
    token covers at least one character, so those always fit) where a wider one does not."""
    out: list[tuple[str, int, str]] = []
    for start in range(0, len(text), 3 * limit):
        window = text[start:start + 3 * limit]
        size = count(window)
        parts = ([(window, size)] if size <= limit else
                 [(window[i:i + limit], count(window[i:i + limit]))
                  for i in range(0, len(window), limit)])
        out.extend((part, n, "") for part, n in parts)
    first, size, _ = out[0]
    out[0] = (first, size, " ")  # the word's start joins what came before with a space
    return out


@dataclass(frozen=True)
class _Unit:
    """A sentence (or a piece of one) with the separator that comes before it."""

    text: str
    tokens: int
    sep: str  # "\n\n" starts a paragraph, "\n" a line, " " a sentence


def _sentences(paragraph: str) -> list[tuple[str, str]]:
    """A paragraph's sentences, each with the separator before it (``"\\n\\n"`` for the
    first, ``"\\n"`` at a line start, else a space)."""
    out: list[tuple[str, str]] = []
    for line in paragraph.split("\n"):
        first = True
        for sentence in _SENTENCES.split(line.strip()):
            if sentence:
                out.append((sentence, "\n\n" if not out else "\n" if first else " "))
                first = False
    return out


def _units(sentences: list[tuple[str, str]], limit: int,
           count: Callable[[str], int]) -> list[_Unit]:
    """Sentences counted (and cut into pieces where one is over ``limit`` tokens)."""
    out: list[_Unit] = []
    for sentence, sep in sentences:
        for n, (text, tokens, glue) in enumerate(_pieces(sentence, limit, count)):
            out.append(_Unit(text, tokens, sep if n == 0 else glue))
    return out


def _join(units: Sequence[_Unit]) -> str:
    return "".join((u.sep if n else "") + u.text for n, u in enumerate(units))


def _carry(current: list[_Unit], overlap: int) -> list[_Unit]:
    """The last units of ``current`` within ``overlap`` tokens, never all of them."""
    carried: list[_Unit] = []
    total = 0
    for unit in reversed(current[1:]):
        if total + unit.tokens > overlap:
            break
        carried.insert(0, unit)
        total += unit.tokens
    return carried


def _windows(paragraphs: list[list[_Unit]], size: int, overlap: int) -> list[str]:
    """Paragraphs' units packed greedily into passages of at most ``size`` tokens, a
    paragraph that does not fit starting a new passage once the current one is half full;
    each passage after the first starts with the last units of the one before, up to
    ``overlap`` tokens."""
    out: list[str] = []
    current: list[_Unit] = []

    def flush(before: int) -> None:
        nonlocal current
        out.append(_join(current))
        current = _carry(current, overlap)
        while current and sum(u.tokens for u in current) + before > size:
            current.pop(0)

    for units in paragraphs:
        total = sum(u.tokens for u in current)
        whole = sum(u.tokens for u in units)
        if current and total + whole > size and total >= size // 2:
            flush(units[0].tokens)
        for unit in units:
            if current and sum(u.tokens for u in current) + unit.tokens > size:
                flush(unit.tokens)
            current.append(unit)
    if current:
        out.append(_join(current))
    return out


def _chunk_id(doc: Document, section: str, text: str, seen: dict[str, int]) -> str:
    digest = hashlib.sha256("\x1f".join((doc.title, section, text)).encode()).hexdigest()[:12]
    seen[digest] = seen.get(digest, 0) + 1
    return f"{doc.id}#{digest}" if seen[digest] == 1 else f"{doc.id}#{digest}.{seen[digest]}"


def chunk_document(doc: Document, *, chunk_tokens: int, overlap_tokens: int,
                   count: Callable[[str], int]) -> list[Chunk]:
    """``doc`` cut into chunks (see the module docstring); ``count`` counts a text's tokens."""
    text, headings = plain_text(doc)
    base = dict(doc.metadata)
    base["kind"] = doc.kind
    if doc.source:
        base["source"] = doc.source
    chunks: list[Chunk] = []
    seen: dict[str, int] = {}
    for section, body in _sections(text, headings):
        paragraphs = [p.strip() for p in _PARAGRAPHS.split(body) if p.strip()]
        if doc.kind == "markdown" or headings:
            paragraphs = [_LINK.sub(r"\1", p) for p in paragraphs]
        split = [sentences for p in paragraphs if (sentences := _sentences(p))]
        whole = "".join(sep + text for sentences in split for text, sep in sentences)[2:]
        if (len(whole) <= chunk_tokens * CHARS_PER_TOKEN
                and count(whole) <= chunk_tokens):  # the common case: one chunk a section
            passages = [whole] if whole else []
        else:
            passages = _windows([_units(s, chunk_tokens, count) for s in split],
                                chunk_tokens, overlap_tokens)
        for passage in passages:
            meta = {**base, "section": section} if section else dict(base)
            chunks.append(Chunk(id=_chunk_id(doc, section, passage, seen), doc_id=doc.id,
                                text=passage, title=doc.title, position=len(chunks),
                                metadata=meta))
    return chunks
