"""Documents for a retrieval corpus, and loading them from files (docs/patterns/rag.md).

A :class:`Document` holds its content in its own kind: Markdown and text as written, HTML as
markup (tags are stripped when it is chunked, so the title and headings survive), PDF as the
text extracted from its pages. :func:`load_document` picks the kind by suffix."""

from __future__ import annotations

import io
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Final, Literal

from keel.core import UserError

__all__ = [
    "DEFAULT_MAX_DOCUMENT_BYTES",
    "Document",
    "DocumentError",
    "DocumentKind",
    "check_id",
    "html_to_markdown",
    "load_document",
    "load_documents",
    "plain_text",
]

DocumentKind = Literal["markdown", "text", "html", "pdf"]
KINDS: Final = ("markdown", "text", "html", "pdf")
SUFFIXES: Final[Mapping[str, DocumentKind]] = {
    ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text",
    ".html": "html", ".htm": "html", ".pdf": "pdf",
}
#: The largest document (file size, or UTF-8 size of a Document's text) accepted by default.
DEFAULT_MAX_DOCUMENT_BYTES: Final = 10 * 1024 * 1024
MAX_ID_CHARS: Final = 256


class DocumentError(UserError):
    """A document cannot be read or indexed: an unsupported suffix, a corrupt or encrypted
    PDF, a binary file, no text at all, or more bytes than the configured maximum.
    ``source`` names the file or document id, so a caller loading many can skip the bad one."""

    def __init__(self, message: str, *, source: str) -> None:
        super().__init__(message)
        self.source = source


def check_id(value: object, what: str = "document id") -> str:
    """``value`` if it is a usable id: a non-empty string of at most 256 characters without
    control characters, surrounding whitespace or ``#`` (which separates a chunk's number)."""
    if not isinstance(value, str):
        raise UserError(f"a {what} must be a string, not {type(value).__name__}")
    if not value or value != value.strip():
        raise UserError(f"the {what} {value!r} is empty or has surrounding whitespace")
    if len(value) > MAX_ID_CHARS:
        raise UserError(f"the {what} {value[:40]!r}... has {len(value)} characters; "
                        f"at most {MAX_ID_CHARS}")
    if "#" in value:
        raise UserError(f"the {what} {value!r} contains '#', which keel uses between a "
                        "document id and a chunk's hash; use another character")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in value):
        raise UserError(f"the {what} {value!r} contains control characters")
    return value


@dataclass(frozen=True, kw_only=True)
class Document:
    """One document of a corpus. ``id`` is yours and stable (a path, a slug, a database key);
    ``text`` is the content in its ``kind``: ``markdown`` (headings become the section titles
    of its chunks), ``text``, ``html`` (markup; scripts and styles dropped) or ``pdf`` (the
    extracted text). ``metadata`` is copied onto every chunk; ``source`` says where it came
    from (a file path or a URL)."""

    id: str
    text: str
    title: str = ""
    kind: DocumentKind = "text"
    metadata: Mapping[str, str] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        check_id(self.id)
        if not isinstance(self.text, str):
            raise UserError(f"document {self.id!r}: text must be a str, not "
                            f"{type(self.text).__name__} (load files with load_document)")
        if self.kind not in KINDS:
            raise UserError(f"document {self.id!r}: kind {self.kind!r} is not one of "
                            f"{', '.join(KINDS)}")
        if not isinstance(self.title, str) or not isinstance(self.source, str):
            raise UserError(f"document {self.id!r}: title and source must be strings")
        if not isinstance(self.metadata, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()):
            raise UserError(f"document {self.id!r}: metadata must map strings to strings")
        object.__setattr__(self, "metadata", dict(self.metadata))


# -- HTML -------------------------------------------------------------------------------------

_SKIPPED: Final = frozenset({"script", "style", "noscript", "template", "svg", "head",
                             "iframe", "object", "canvas"})
_BLOCKS: Final = frozenset({"p", "div", "section", "article", "main", "aside", "header",
                            "footer", "nav", "ul", "ol", "table", "tr", "blockquote", "pre",
                            "form", "fieldset", "dl", "dd", "dt", "figure", "figcaption",
                            "hr", "body", "html"})
_HEADINGS: Final = {f"h{n}": n for n in range(1, 7)}


class _HTMLText(HTMLParser):
    """Collects an HTML page's text as Markdown-like paragraphs: headings as ``#`` lines, block
    elements as blank lines, list items as ``-`` lines; skipped elements contribute nothing."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.title: list[str] = []
        self.skip = 0
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        elif tag == "body":  # ends an unclosed <head>
            self.skip = 0
            self.out.append("\n\n")
        elif tag in _SKIPPED:
            self.skip += 1
        elif tag in _HEADINGS:
            self.out.append("\n\n" + "#" * _HEADINGS[tag] + " ")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in ("br", "td", "th"):
            self.out.append("\n" if tag == "br" else " ")
        elif tag in _BLOCKS:
            self.out.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in _SKIPPED:
            self.skip = max(0, self.skip - 1)
        elif tag in _HEADINGS or tag in _BLOCKS:
            self.out.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif not self.skip:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_markdown(markup: str) -> tuple[str, str]:
    """``(title, text)`` of an HTML page: the ``<title>`` and the visible text, headings as
    Markdown ``#`` lines and paragraphs separated by blank lines."""
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    lines = (line.strip() for line in "".join(parser.out).split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    text = re.sub(r"^(#+) *$\n*", "", text, flags=re.MULTILINE)  # empty headings
    return re.sub(r"\s+", " ", "".join(parser.title)).strip(), text


# -- files ------------------------------------------------------------------------------------

def _pdf_text(data: bytes, source: str) -> tuple[str, str]:
    try:
        import pypdf
        from pypdf.errors import PyPdfError
    except ImportError as exc:
        raise UserError("reading PDF needs the 'rag' extra: pip install "
                        "'keel-agents[rag]'") from exc
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(f"{source}: the PDF is encrypted; decrypt it first",
                                source=source)
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata
        title = str(info.title or "") if info is not None else ""
    except DocumentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError,
            IndexError, AssertionError, RecursionError, ZeroDivisionError) as exc:
        raise DocumentError(f"{source}: not a readable PDF ({type(exc).__name__}: {exc})",
                            source=source) from exc
    return title.strip(), "\n\n".join(page.strip() for page in pages if page.strip())


def _decode(data: bytes, source: str) -> str:
    """UTF-8 text (a BOM is dropped; undecodable bytes become U+FFFD, the documented
    fallback); a file with NUL bytes is binary and refused."""
    if b"\x00" in data[:65536]:
        raise DocumentError(f"{source}: looks binary (NUL bytes); keel reads Markdown, "
                            "text, HTML and PDF", source=source)
    return data.decode("utf-8-sig", errors="replace")


_H1: Final = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)
_FRONT_MATTER: Final = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.DOTALL)


def _front_matter(text: str) -> tuple[dict[str, str], str]:
    """Simple ``key: value`` lines of a Markdown front-matter block, and the text after it."""
    match = _FRONT_MATTER.match(text)
    if match is None:
        return {}, text
    meta: dict[str, str] = {}
    for line in match.group(1).splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and not key.startswith((" ", "\t", "#")):
            meta[key.strip()] = value.strip().strip("\"'")
    return meta, text[match.end():]


def _read(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise DocumentError(f"{path}: {size} bytes is more than the maximum of "
                                f"{max_bytes} (raise max_bytes, or split the document)",
                                source=str(path))
        return path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{path}: cannot be read ({exc.strerror or exc})",
                            source=str(path)) from exc


def _parse(kind: DocumentKind, data: bytes, path: Path) -> tuple[str, str, dict[str, str]]:
    """``(title, text, metadata)`` of a file's bytes."""
    source = str(path)
    if kind == "pdf":
        title, text = _pdf_text(data, source)
        return title, text, {}
    text = _decode(data, source)
    if kind == "html":
        return html_to_markdown(text)[0], text, {}
    if kind == "markdown":
        meta, body = _front_matter(text)
        title = meta.pop("title", "")
        if not title and (h1 := _H1.search(body)):
            title = h1.group(1)
        return title, body, meta
    return "", text, {}


def load_document(path: str | os.PathLike[str], *, id: str | None = None,
                  max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES) -> Document:
    """The :class:`Document` in the file at ``path``, its kind chosen by suffix (``.md``,
    ``.txt``, ``.html``/``.htm``, ``.pdf``). ``id`` defaults to the file's name without its
    suffix; the title comes from Markdown front matter or its first ``#`` heading, the HTML
    ``<title>``, the PDF's metadata, else the file name. Markdown front-matter ``key: value``
    lines become metadata. Raises :class:`DocumentError` for an unsupported suffix, a file
    larger than ``max_bytes``, a corrupt PDF, a binary file or a document with no text."""
    file = Path(path)
    kind = SUFFIXES.get(file.suffix.lower())
    if kind is None:
        raise DocumentError(f"{file}: unsupported suffix {file.suffix!r}; keel reads "
                            f"{', '.join(sorted(SUFFIXES))}", source=str(file))
    title, text, metadata = _parse(kind, _read(file, max_bytes), file)
    if not (html_to_markdown(text)[1] if kind == "html" else text).strip():
        raise DocumentError(f"{file}: the document has no text", source=str(file))
    return Document(id=check_id(file.stem if id is None else id), text=text, kind=kind,
                    title=title or file.stem.replace("_", " ").replace("-", " "),
                    metadata=metadata, source=str(file))


def _files(folder_or_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
           ) -> list[tuple[Path, str | None]]:
    if isinstance(folder_or_paths, str | os.PathLike):
        root = Path(folder_or_paths)
        if not root.is_dir():
            return [(root, None)]
        found = sorted(p for p in root.rglob("*")
                       if p.is_file() and p.suffix.lower() in SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        return [(p, p.relative_to(root).with_suffix("").as_posix()) for p in found]
    return [(Path(p), None) for p in folder_or_paths]


def load_documents(folder_or_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                   *, max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
                   errors: Literal["raise", "skip"] = "raise") -> list[Document]:
    """Documents from a folder (every supported file below it, hidden ones excepted, in path
    order, each with its path relative to the folder, without suffix, as id) or from a list
    of files (ids as :func:`load_document` gives them). With ``errors="skip"`` a file that
    :func:`load_document` refuses is left out instead of raising."""
    if errors not in ("raise", "skip"):
        raise UserError(f"errors must be 'raise' or 'skip', not {errors!r}")
    out: list[Document] = []
    seen: dict[str, Path] = {}
    for file, doc_id in _files(folder_or_paths):
        try:
            doc = load_document(file, id=doc_id, max_bytes=max_bytes)
        except DocumentError:
            if errors == "raise":
                raise
            continue
        if doc.id in seen:
            raise UserError(f"{file} and {seen[doc.id]} both have the document id "
                            f"{doc.id!r}; load them from one folder or pass ids")
        seen[doc.id] = file
        out.append(doc)
    return out


def plain_text(document: Document) -> tuple[str, bool]:
    """``(text, has_headings)``: the document's text ready for chunking (HTML stripped)."""
    if document.kind == "html":
        return html_to_markdown(document.text)[1], True
    if document.kind == "markdown":
        return _front_matter(document.text)[1], True
    return document.text, False
