"""The help centre: Northwind Outfitters' articles, loaded, checked and made searchable.

``load_articles()`` reads the ``*.md`` files of this folder (front matter ``id``, ``title``,
``section``, ``tags``; a Markdown body) into :class:`Article` records, refusing a malformed
file with a ``keel.UserError`` that names it. ``build_corpus()`` indexes them in a keel
:class:`~keel.patterns.Corpus` (BM25 plus WordLlama embeddings, offline) for the desk's
agentic RAG; ``sections=`` limits a corpus to what one specialist may cite.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from keel import UserError

if TYPE_CHECKING:
    from keel.patterns import Corpus, Document, Embedder

FOLDER: Final = Path(__file__).parent
SECTIONS: Final = ("shipping", "returns", "billing", "accounts", "troubleshooting", "policies")
MAX_ARTICLE_BYTES: Final = 64 * 1024
_FRONT: Final = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)
_ID: Final = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


@dataclass(frozen=True, kw_only=True)
class Article:
    """One help-centre article."""

    id: str
    title: str
    section: str
    tags: tuple[str, ...]
    body: str


def parse_article(text: str, source: str) -> Article:
    """An article from its file text; ``source`` names it in errors."""
    match = _FRONT.match(text)
    if match is None:
        raise UserError(f"{source}: an article starts with a front matter block between "
                        "'---' lines (id, title, section, tags)")
    meta: dict[str, str] = {}
    for line in match.group(1).splitlines():
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise UserError(f"{source}: front matter line {line[:60]!r} is not 'key: value'")
        meta[key.strip()] = value.strip()
    missing = [k for k in ("id", "title", "section", "tags") if not meta.get(k)]
    if missing:
        raise UserError(f"{source}: front matter lacks {', '.join(missing)}")
    if not _ID.fullmatch(meta["id"]):
        raise UserError(f"{source}: id {meta['id'][:60]!r} must be lowercase words joined by "
                        "'-'")
    if meta["section"] not in SECTIONS:
        raise UserError(f"{source}: section {meta['section'][:40]!r} is not one of "
                        f"{', '.join(SECTIONS)}")
    body = text[match.end():].strip()
    if not body:
        raise UserError(f"{source}: the article has no body")
    tags = tuple(t.strip() for t in meta["tags"].split(",") if t.strip())
    return Article(id=meta["id"], title=meta["title"], section=meta["section"], tags=tags,
                   body=body)


def _read(file: Path) -> Article:
    size = file.stat().st_size
    if size > MAX_ARTICLE_BYTES:
        raise UserError(f"{file}: {size} bytes is more than an article may have "
                        f"({MAX_ARTICLE_BYTES}); split it")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{file}: not UTF-8 text ({exc.reason})") from None
    article = parse_article(text, str(file))
    if article.id != file.stem:
        raise UserError(f"{file}: its id {article.id!r} must match the file name")
    return article


def load_articles(folder: str | os.PathLike[str] | None = None, *,
                  sections: Iterable[str] | None = None) -> list[Article]:
    """Every article in ``folder`` (the shipped help centre by default), in id order,
    optionally only those of ``sections``."""
    root = FOLDER if folder is None else Path(folder)
    if not root.is_dir():
        raise UserError(f"no help-centre folder at {root}")
    wanted = _sections(sections)
    out = [_read(f) for f in sorted(root.glob("*.md"))]
    return [a for a in out if a.section in wanted]


def _sections(sections: Iterable[str] | None) -> frozenset[str]:
    if sections is None:
        return frozenset(SECTIONS)
    if isinstance(sections, str):
        sections = (sections,)
    wanted = frozenset(sections)
    unknown = sorted(wanted - set(SECTIONS))
    if unknown or not wanted:
        raise UserError(f"unknown help-centre section(s) {unknown or '(none given)'}; choose "
                        f"from {', '.join(SECTIONS)}")
    return wanted


def documents(articles: Iterable[Article]) -> list[Document]:
    """The articles as keel RAG documents (``help_section`` and ``tags`` kept as chunk metadata)."""
    from keel.patterns import Document

    return [Document(id=a.id, title=a.title, text=f"# {a.title}\n\n{a.body}", kind="markdown",
                     metadata={"help_section": a.section, "tags": ", ".join(a.tags)},
                     source=f"help_centre/{a.id}.md") for a in articles]


def build_corpus(path: str | os.PathLike[str] | None = None, *,
                 sections: Iterable[str] | None = None,
                 embedder: Embedder | None = None) -> Corpus:
    """A keel :class:`~keel.patterns.Corpus` of the help centre (``path``: its SQLite index
    file, kept between runs and updated incrementally; None keeps it in memory). Needs the
    ``rag`` extra (BM25 and WordLlama, both offline)."""
    from keel.patterns import Corpus

    corpus = Corpus(path, embedder=embedder)
    try:
        corpus.add(documents(load_articles(sections=sections)))
    except BaseException:
        corpus.close()
        raise
    return corpus
