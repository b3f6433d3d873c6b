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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from keel.patterns._rag_ingest import Document, plain_text

__all__ = ["Chunk", "chunk_document", "index_text"]

_ATX: Final = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_SETEXT: Final = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE: Final = re.compile(r"^ {0,3}(```|~~~)")
_PARAGRAPHS: Final = re.compile(r"\n[ \t]*\n\s*")
_SENTENCES: Final = re.compile(r"(?<=[.!?;:])\s+|\n+")
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


def _pieces(text: str, limit: int, count: Callable[[str], int]) -> list[tuple[str, int]]:
    """``text`` cut into pieces of at most ``limit`` tokens: whole if it fits, else by
    sentences, else by words, else (one enormous word) by characters."""
    size = count(text)
    if size <= limit:
        return [(text, size)]
    for pattern in (_SENTENCES, re.compile(r"\s+")):
        parts = [p for p in pattern.split(text) if p.strip()]
        if len(parts) > 1:
            return _pack([(p, count(p)) for p in parts], limit, " ", count)
    step = max(1, len(text) * limit // max(size, 1))
    return [(text[i:i + step], count(text[i:i + step])) for i in range(0, len(text), step)]


def _pack(parts: list[tuple[str, int]], limit: int, sep: str,
          count: Callable[[str], int]) -> list[tuple[str, int]]:
    """Consecutive ``parts`` joined by ``sep`` into pieces of at most ``limit`` tokens (a part
    still too large is cut further)."""
    out: list[tuple[str, int]] = []
    current: list[str] = []
    total = 0
    for text, size in parts:
        if size > limit:
            if current:
                out.append((sep.join(current), total))
                current, total = [], 0
            out.extend(_pieces(text, limit, count))
            continue
        if current and total + size > limit:
            out.append((sep.join(current), total))
            current, total = [], 0
        current.append(text)
        total += size
    if current:
        out.append((sep.join(current), total))
    return out


def _windows(units: list[tuple[str, int]], size: int, overlap: int) -> list[str]:
    """Units (paragraphs or pieces of one, each at most ``size`` tokens) packed greedily into
    passages of at most ``size`` tokens; each passage after the first starts with the last
    units of the one before, up to ``overlap`` tokens (never all of them)."""
    out: list[str] = []
    current: list[tuple[str, int]] = []
    for unit in units:
        if current and sum(n for _, n in current) + unit[1] > size:
            out.append("\n\n".join(text for text, _ in current))
            carried: list[tuple[str, int]] = []
            for prev in reversed(current[1:]):
                if sum(n for _, n in carried) + prev[1] > overlap:
                    break
                carried.insert(0, prev)
            while carried and sum(n for _, n in carried) + unit[1] > size:
                carried.pop(0)
            current = carried
        current.append(unit)
    if current:
        out.append("\n\n".join(text for text, _ in current))
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
        units = [piece for p in paragraphs for piece in _pieces(p, chunk_tokens, count)]
        for passage in _windows(units, chunk_tokens, overlap_tokens):
            meta = {**base, "section": section} if section else dict(base)
            chunks.append(Chunk(id=_chunk_id(doc, section, passage, seen), doc_id=doc.id,
                                text=passage, title=doc.title, position=len(chunks),
                                metadata=meta))
    return chunks
